/**
 * Medians, spreads and the number formats shared by the case reports. Kept free of any
 * implementation import, so the orchestrator can load it without loading a library under test.
 */

/** The median of finite numbers; `NaN` when there are none (a cell whose every run failed). */
export function median(values) {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The median of `key` over a cell's successful runs. */
export function medianOf(cell, key) {
  return median(cell.runs.map((run) => run[key]));
}

/**
 * (max - min) / median of `key` over a cell's runs: how far apart the fresh processes landed.
 * 0 with a single run, which says nothing about noise; the report says how many runs there were.
 */
export function spreadOf(cell, key) {
  const values = cell.runs.map((run) => run[key]).filter((value) => Number.isFinite(value));
  if (values.length < 2) return 0;
  return (Math.max(...values) - Math.min(...values)) / median(values);
}

/**
 * A line naming the widest spread of the reps among `cells`, so a reader knows how much of a
 * ratio could be noise before trusting its second digit.
 */
export function spreadNote(cells, key, label) {
  let worst;
  const spreads = [];
  for (const cell of cells) {
    if (cell.runs.length < 2) continue;
    const spread = spreadOf(cell, key);
    spreads.push(spread);
    if (worst === undefined || spread > worst.spread) worst = { spread, cell };
  }
  if (worst === undefined) return 'One process per cell: no spread to report.';
  return (
    `Spread of the fresh processes per cell, (max − min) / median: median ` +
    `${percent(median(spreads))}, widest ${percent(worst.spread)} (${label(worst.cell)}).`
  );
}

export function percent(fraction) {
  return `${(fraction * 100).toFixed(fraction < 0.1 ? 1 : 0)}%`;
}

/** `1.23 M`, `612 k`, `950`: rates at a glance, three significant digits. */
export function rate(value) {
  if (!Number.isFinite(value)) return 'n/a';
  if (value >= 1e6) return `${(value / 1e6).toPrecision(3)} M`;
  if (value >= 1e3) return `${(value / 1e3).toPrecision(3)} k`;
  return value.toPrecision(3);
}

export function ratio(value) {
  return Number.isFinite(value) ? `${value.toFixed(2)}×` : 'n/a';
}

/** `1 000 000`: digits grouped by spaces, as in the issue text. */
export function int(value) {
  if (!Number.isFinite(value)) return 'n/a';
  return String(Math.round(value)).replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
}

export function fixed(value, digits) {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

/** A markdown table; `align` holds 'l' or 'r' per column (numbers read best right-aligned). */
export function table(headers, rows, align = headers.map((_, i) => (i === 0 ? 'l' : 'r'))) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [
    line(headers),
    line(align.map((a) => (a === 'r' ? '---:' : '---'))),
    ...rows.map((row) => line(row)),
  ].join('\n');
}

/** A target line: `✓`/`✗`, and the text carrying the measured ratio and the threshold. */
export function target(pass, text) {
  return { pass, text: `${pass ? '✓' : '✗'} ${text}` };
}
