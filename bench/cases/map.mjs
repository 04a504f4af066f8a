/**
 * (d) Ordered map: 100 000 items through an `async (x) => x * 2` mapper at concurrency 16.
 * Every result is checked, value and position, after the clock stops.
 */
import { findImpl, mappers } from '../impls.mjs';
import { collect } from '../gc.mjs';
import * as s from '../stats.mjs';

export const title = '(d) Ordered map, 100 000 items at concurrency 16';

const ITEMS = 100_000;
const CONCURRENCY = 16;
const WARMUP = 10_000;

export function plan() {
  return mappers.map((impl) => ({ label: impl.name, params: { impl: impl.name } }));
}

const double = async (x) => x * 2;

async function timed(mapImpl, items) {
  const start = performance.now();
  const results = await mapImpl(items, double, CONCURRENCY);
  return { ms: performance.now() - start, results };
}

export async function measure({ impl }) {
  const mapImpl = await findImpl(mappers, impl).load();
  const items = Array.from({ length: ITEMS }, (_, i) => i);
  // The same call on a slice first: the timed run is then the optimised code, for everyone.
  await timed(mapImpl, items.slice(0, WARMUP));
  collect();
  const { ms, results } = await timed(mapImpl, items);
  let ok = Array.isArray(results) && results.length === ITEMS;
  for (let i = 0; ok && i < ITEMS; i++) ok = results[i] === i * 2;
  const itemsPerSec = ITEMS / (ms / 1000);
  return { ms, itemsPerSec, ok, summary: `${s.rate(itemsPerSec)} items/s${ok ? '' : ' WRONG'}` };
}

export function report(cells, config) {
  const at = (name) => cells.find((cell) => cell.params.impl === name);
  const rateOf = (name) => s.medianOf(at(name), 'itemsPerSec');
  const correct = (name) => {
    const cell = at(name);
    return cell.runs.length > 0 && cell.errors.length === 0 && cell.runs.every((run) => run.ok);
  };
  const pMap = rateOf('p-map');
  const mapLimit = rateOf('async.mapLimit');

  const rows = mappers.map((impl) => [
    impl.name,
    s.rate(rateOf(impl.name)),
    s.ratio(rateOf(impl.name) / pMap),
    s.ratio(rateOf(impl.name) / mapLimit),
    correct(impl.name) ? 'yes' : '**no**',
  ]);

  const markdown = [
    `### ${title}`,
    '',
    `items/s for \`map(items, async (x) => x * 2)\`, results checked for value and order. ` +
      `A ${s.int(WARMUP)}-item warm-up per process; median of ${config.reps} ` +
      `process${config.reps === 1 ? '' : 'es'}. "unlimited" ignores the concurrency; ` +
      `"ref-pool" is ${CONCURRENCY} async workers pulling indexes from a shared counter.`,
    '',
    s.table(
      ['implementation', 'items/s', '× p-map', '× async.mapLimit', 'in order, correct'],
      rows,
    ),
    '',
    s.spreadNote(cells, 'itemsPerSec', (cell) => cell.label),
  ].join('\n');

  const value = rateOf('sluice map()');
  const ok = correct('sluice map()');
  const targets = [
    s.target(
      value / mapLimit >= 1 && value / pMap >= 2 && ok,
      `(d) sluice map(): ${s.ratio(value / mapLimit)} async.mapLimit (≥ 1×), ` +
        `${s.ratio(value / pMap)} p-map (≥ 2×)${ok ? '' : ', WRONG RESULTS'}`,
    ),
  ];
  return { markdown, targets };
}
