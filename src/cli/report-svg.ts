/**
 * The report's charts, drawn here as SVG markup: axes, ticks, labels, bars and lines, with an SVG
 * `<title>` on each bar or bucket as its tooltip (native, no script). Colours come from the page's
 * CSS through class names, so one drawing serves the light and the dark scheme and print.
 *
 * Every chart is an `<svg class="chart">` with a fixed viewBox that the page scales to its width.
 * Text that is not ours (none should reach a chart, but labels are built from numbers and config)
 * still goes through `escapeHtml`.
 */
import { formatCount, formatMs } from './report-format.ts';
import { escapeHtml } from './report-safe.ts';
import { EMPTY_SPAN, linearTicks, timeTicks, type Tick } from './report-ticks.ts';

const WIDTH = 920;
const HEIGHT = 260;
const PAD = { left: 58, right: 28, top: 30, bottom: 46 };
const X0 = PAD.left;
const X1 = WIDTH - PAD.right;
const Y0 = HEIGHT - PAD.bottom;
const Y1 = PAD.top;

/** One decimal place is finer than a pixel and keeps the page small. */
const r = (n: number) => Math.round(n * 10) / 10;

function open(id: string, label: string, height = HEIGHT): string {
  return (
    `<svg class="chart" id="${escapeHtml(id)}" viewBox="0 0 ${WIDTH} ${height}" ` +
    `role="img" aria-label="${escapeHtml(label)}" xmlns="http://www.w3.org/2000/svg">`
  );
}

/** Grid lines and labels for a y axis running from 0 (at Y0) to `top` (at Y1). */
function yAxis(ticks: Tick[], top: number, title: string): string {
  const y = (v: number) => r(Y0 - (v / top) * (Y0 - Y1));
  const lines = ticks.map(
    (tick) =>
      `<line class="grid" x1="${X0}" x2="${X1}" y1="${y(tick.at)}" y2="${y(tick.at)}"/>` +
      `<text class="tick" x="${X0 - 6}" y="${y(tick.at) + 4}" text-anchor="end">${escapeHtml(tick.label)}</text>`,
  );
  return `${lines.join('')}<text class="axis-title" x="${X0}" y="${Y1 - 12}">${escapeHtml(title)}</text>`;
}

/** Tick marks and labels for an x axis; `x` maps a tick's value to its position. */
function xAxis(ticks: Tick[], x: (v: number) => number, title: string): string {
  const marks = ticks.map(
    (tick) =>
      `<line class="axis" x1="${r(x(tick.at))}" x2="${r(x(tick.at))}" y1="${Y0}" y2="${Y0 + 5}"/>` +
      `<text class="tick" x="${r(x(tick.at))}" y="${Y0 + 18}" text-anchor="middle">${escapeHtml(tick.label)}</text>`,
  );
  return (
    `<line class="axis" x1="${X0}" x2="${X1}" y1="${Y0}" y2="${Y0}"/>${marks.join('')}` +
    `<text class="axis-title" x="${(X0 + X1) / 2}" y="${HEIGHT - 8}" text-anchor="middle">${escapeHtml(title)}</text>`
  );
}

function empty(message: string): string {
  return `<text class="empty" x="${(X0 + X1) / 2}" y="${(Y0 + Y1) / 2}" text-anchor="middle">${escapeHtml(message)}</text>`;
}

/** A dashed horizontal reference line at value `v`, labelled at its right end. */
function limitLine(y: number, label: string): string {
  return (
    `<line class="limit" x1="${X0}" x2="${X1}" y1="${r(y)}" y2="${r(y)}"/>` +
    `<text class="limit-label" x="${X1 - 4}" y="${r(y) - 5}" text-anchor="end">${escapeHtml(label)}</text>`
  );
}

/** The data of a time chart: one value per bucket of `width` ms, from 0. */
export interface TimeSeries {
  width: number;
  /** Over the time axis: [0, spanMs]. */
  spanMs: number;
}

/** A bucket's time range in seconds, with as many decimals as its width needs. */
function timeRange(start: number, end: number, width: number): string {
  const digits = Math.max(0, Math.ceil(-Math.log10(width / 1000) - 1e-9));
  const fixed = (ms: number) =>
    (ms / 1000).toLocaleString('en-US', {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    });
  return `${fixed(start)}–${fixed(end)} s`;
}

/**
 * In flight over time: a step area of the mean number in flight per bucket, and the concurrency
 * limit as a dashed line; or, for a limit that adapts, its mean per bucket as a step line
 * (`limits`). `means[i]` and `limits[i]` are the means over bucket i.
 */
export function inFlightChart(
  series: TimeSeries & { means: ArrayLike<number>; limits?: ArrayLike<number> | undefined },
  limit: number | undefined,
): string {
  const { width, spanMs, means, limits } = series;
  let peak = 0;
  for (let i = 0; i < means.length; i++) peak = Math.max(peak, means[i]!);
  if (limits !== undefined)
    for (let i = 0; i < limits.length; i++) peak = Math.max(peak, limits[i]!);
  const { top, ticks } = linearTicks(Math.max(peak, limit ?? 0) * 1.08);
  const time = timeTicks(spanMs);
  const span = spanMs > 0 ? spanMs : EMPTY_SPAN;
  const x = (ms: number) => X0 + (Math.min(ms, span) / span) * (X1 - X0);
  const y = (v: number) => Y0 - (v / top) * (Y0 - Y1);
  let body: string;
  if (means.length === 0) body = empty('no request ran');
  else {
    let path = `M${X0} ${Y0}`;
    let line = '';
    let hover = '';
    for (let i = 0; i < means.length; i++) {
      const value = means[i]!;
      path += `V${r(y(value))}H${r(x((i + 1) * width))}`;
      const left = x(i * width);
      const bound = limits?.[i];
      if (bound !== undefined)
        line += `${line === '' ? `M${r(left)} ` : 'V'}${r(y(bound))}H${r(x((i + 1) * width))}`;
      const limitText = bound === undefined ? '' : `, limit ${formatCount(bound, 1)}`;
      hover +=
        `<rect class="hover" x="${r(left)}" y="${Y1}" width="${r(Math.max(0.5, x((i + 1) * width) - left))}" height="${Y0 - Y1}">` +
        `<title>${timeRange(i * width, Math.min(span, (i + 1) * width), width)}: ${formatCount(value, 1)} in flight (mean)${limitText}</title></rect>`;
    }
    path += `V${Y0}Z`;
    body =
      `<path class="area" d="${path}"/>` +
      (line === '' ? '' : `<path class="limit-line" d="${line}"/>`) +
      hover;
  }
  const limitMark = limit === undefined ? '' : limitLine(y(limit), `concurrency limit ${limit}`);
  return (
    open('chart-in-flight', 'Requests in flight over time') +
    yAxis(ticks, top, 'in flight (mean per bucket)') +
    xAxis(time.ticks, x, time.title) +
    body +
    limitMark +
    '</svg>'
  );
}

/** A configured rate, in starts per second, with the label it is drawn with. */
export interface RateLine {
  perSecond: number;
  label: string;
}

/**
 * Starts per second: stacked bars (first attempts, then retries) per bucket, and each configured
 * rate as a dashed line. `first[i]` and `retries[i]` are counts in bucket i.
 */
export function startsChart(
  series: TimeSeries & { first: ArrayLike<number>; retries: ArrayLike<number> },
  rates: RateLine[],
): string {
  const { width, spanMs, first, retries } = series;
  const seconds = width / 1000;
  let peak = 0;
  for (let i = 0; i < first.length; i++) peak = Math.max(peak, (first[i]! + retries[i]!) / seconds);
  const { top, ticks } = linearTicks(Math.max(peak, ...rates.map((rate) => rate.perSecond)) * 1.08);
  const time = timeTicks(spanMs);
  const span = spanMs > 0 ? spanMs : EMPTY_SPAN;
  const x = (ms: number) => X0 + (Math.min(ms, span) / span) * (X1 - X0);
  const y = (v: number) => Y0 - (v / top) * (Y0 - Y1);
  let body = '';
  if (first.length === 0) body = empty('nothing started');
  else {
    for (let i = 0; i < first.length; i++) {
      const left = x(i * width);
      const full = x((i + 1) * width) - left;
      const gap = full >= 4 ? Math.min(2, full / 6) : 0;
      const barWidth = r(Math.max(0.5, full - gap));
      const firstRate = first[i]! / seconds;
      const retryRate = retries[i]! / seconds;
      const partial = (i + 1) * width > span ? ' (partial: the run ended in this bucket)' : '';
      const tip =
        `<title>${timeRange(i * width, (i + 1) * width, width)}: ${formatCount(firstRate + retryRate, 2)} starts/s` +
        `${retryRate > 0 ? ` (${formatCount(retryRate, 2)}/s retries)` : ''}${partial}</title>`;
      const yFirst = y(firstRate);
      const yAll = y(firstRate + retryRate);
      body +=
        `<g>${tip}<rect class="bar" x="${r(left + gap / 2)}" y="${r(yFirst)}" width="${barWidth}" height="${r(Y0 - yFirst)}"/>` +
        (retryRate > 0
          ? `<rect class="bar-retry" x="${r(left + gap / 2)}" y="${r(yAll)}" width="${barWidth}" height="${r(yFirst - yAll)}"/>`
          : '') +
        '</g>';
    }
  }
  const lines = rates.map((rate) => limitLine(y(rate.perSecond), rate.label)).join('');
  return (
    open('chart-starts', 'Starts per second against the configured rate') +
    yAxis(ticks, top, 'starts per second') +
    xAxis(time.ticks, x, time.title) +
    body +
    lines +
    '</svg>'
  );
}

/** A marked latency (p50, p90, p99) on the histogram. */
export interface Marker {
  label: string;
  us: number;
}

/**
 * The latency histogram on a log scale: bars per log bin (`binsPerDecade` per factor of ten, bin b
 * covering [10^(b/k), 10^((b+1)/k)) µs), ok at the bottom and failed on top, and markers as vertical
 * lines.
 */
export function latencyChart(
  bins: { ok: ArrayLike<number>; failed: ArrayLike<number>; binsPerDecade: number },
  markers: Marker[],
  noun = 'requests',
): string {
  const { ok, failed, binsPerDecade: k } = bins;
  let lo = -1;
  let hi = -1;
  let peak = 0;
  for (let b = 0; b < ok.length; b++) {
    const count = ok[b]! + failed[b]!;
    if (count > 0) {
      if (lo < 0) lo = b;
      hi = b;
      peak = Math.max(peak, count);
    }
  }
  const { top, ticks } = linearTicks(peak * 1.08, { integer: true });
  const label = 'Latency histogram (log scale) with p50, p90 and p99';
  if (lo < 0) {
    return `${open('chart-latency', label)}${yAxis(ticks, top, noun)}${empty('nothing ran to an end')}</svg>`;
  }
  // The domain, in log10(µs): one bin of room on each side, and at least one decade wide.
  let from = (lo - 1) / k;
  let to = (hi + 2) / k;
  if (to - from < 1) {
    const middle = (from + to) / 2;
    from = middle - 0.5;
    to = middle + 0.5;
  }
  from = Math.max(0, from);
  const x = (log: number) => X0 + ((log - from) / (to - from)) * (X1 - X0);
  const y = (v: number) => Y0 - (v / top) * (Y0 - Y1);
  const decades = Math.floor(to) - Math.ceil(from) + 1;
  const xTicks: Tick[] = [];
  for (let d = Math.floor(from); d <= Math.ceil(to); d++) {
    for (const m of decades >= 3 ? [1] : [1, 2, 5]) {
      const log = d + Math.log10(m);
      if (log >= from - 1e-9 && log <= to + 1e-9)
        xTicks.push({ at: log, label: formatMs(10 ** log / 1000) });
    }
  }
  let bars = '';
  for (let b = lo; b <= hi; b++) {
    const okCount = ok[b]!;
    const failedCount = failed[b]!;
    if (okCount + failedCount === 0) continue;
    const left = x(b / k);
    const barWidth = r(Math.max(0.5, x((b + 1) / k) - left - 1));
    const yOk = y(okCount);
    const yAll = y(okCount + failedCount);
    const tip =
      `<title>${formatMs(10 ** (b / k) / 1000)}–${formatMs(10 ** ((b + 1) / k) / 1000)}: ` +
      `${formatCount(okCount + failedCount)} ${noun}${failedCount > 0 ? ` (${formatCount(failedCount)} failed)` : ''}</title>`;
    bars +=
      `<g>${tip}` +
      (okCount > 0
        ? `<rect class="bar" x="${r(left + 0.5)}" y="${r(yOk)}" width="${barWidth}" height="${r(Y0 - yOk)}"/>`
        : '') +
      (failedCount > 0
        ? `<rect class="bar-fail" x="${r(left + 0.5)}" y="${r(yAll)}" width="${barWidth}" height="${r(yOk - yAll)}"/>`
        : '') +
      '</g>';
  }
  const marks = markers
    .filter((marker) => marker.us > 0)
    .map((marker, i) => {
      const at = r(x(Math.log10(marker.us)));
      return (
        `<line class="marker" x1="${at}" x2="${at}" y1="${Y1}" y2="${Y0}"/>` +
        `<text class="marker-label" x="${at + 4}" y="${Y1 + 10 + 13 * i}">${escapeHtml(marker.label)}</text>`
      );
    })
    .join('');
  return (
    open('chart-latency', label) +
    yAxis(ticks, top, noun) +
    xAxis(xTicks, x, 'latency (log scale)') +
    bars +
    marks +
    '</svg>'
  );
}

/** One row of a horizontal bar chart; `kind` picks the colour (a CSS class). */
export interface BarRow {
  label: string;
  count: number;
  kind: string;
  title?: string;
}

const ROW = 26;

/** Horizontal bars, one per row, each with its count and share of `total`. */
export function barsChart(id: string, label: string, rows: BarRow[], total: number): string {
  const height = Math.max(1, rows.length) * ROW + 16;
  const max = Math.max(1, ...rows.map((row) => row.count));
  const left = 230;
  const right = WIDTH - 150;
  let body = '';
  rows.forEach((row, i) => {
    const top = 8 + i * ROW;
    const length = r(Math.max(row.count > 0 ? 1 : 0, ((right - left) * row.count) / max));
    const share = total > 0 ? ` (${formatCount((100 * row.count) / total, 1)}%)` : '';
    body +=
      `<g><title>${escapeHtml(row.title ?? row.label)}: ${formatCount(row.count)}${share}</title>` +
      `<text class="row-label" x="${left - 10}" y="${top + 16}" text-anchor="end">${escapeHtml(row.label)}</text>` +
      `<rect class="${escapeHtml(row.kind)}" x="${left}" y="${top + 3}" width="${length}" height="${ROW - 8}" rx="2"/>` +
      `<text class="row-count" x="${left + length + 8}" y="${top + 16}">${formatCount(row.count)}${share}</text></g>`;
  });
  if (rows.length === 0) {
    body = `<text class="empty" x="${WIDTH / 2}" y="${height / 2 + 4}" text-anchor="middle">none</text>`;
  }
  return `${open(id, label, height)}${body}</svg>`;
}
