/**
 * (a) Throughput: N immediately-resolving tasks through each limiter, at several concurrencies.
 * The clock runs from the first enqueue until `Promise.all` over every returned promise
 * resolves, so it covers queueing, starting, settling and handing the result back.
 */
import { findImpl, limiters } from '../impls.mjs';
import * as s from '../stats.mjs';
import { measureTasks, warmupOf } from '../tasks.mjs';

export const title = '(a) Throughput, immediately-resolving tasks';

const CONCURRENCIES = [1, 10, 100, 10_000];

export function plan(config) {
  return limiters.flatMap((impl) =>
    CONCURRENCIES.map((concurrency) => ({
      label: `${impl.name} c=${concurrency}`,
      params: { impl: impl.name, concurrency, n: config.n },
    })),
  );
}

export async function measure({ impl, concurrency, n }) {
  return measureTasks(await findImpl(limiters, impl).load(), concurrency, n);
}

export function report(cells, config) {
  const at = (name, concurrency) =>
    cells.find((cell) => cell.params.impl === name && cell.params.concurrency === concurrency);
  const rateOf = (name, concurrency) => s.medianOf(at(name, concurrency), 'tasksPerSec');

  // The fastest peer is chosen per concurrency: the target is to beat whichever is best there.
  const fastest = new Map();
  for (const concurrency of CONCURRENCIES) {
    let best = { name: 'n/a', rate: NaN };
    for (const impl of limiters) {
      if (impl.kind !== 'peer') continue;
      const value = rateOf(impl.name, concurrency);
      if (Number.isFinite(value) && !(value <= best.rate)) best = { name: impl.name, rate: value };
    }
    fastest.set(concurrency, best);
  }

  const cHeads = CONCURRENCIES.map((c) => `c=${s.int(c)}`);
  const rows = limiters.map((impl) => {
    const rates = CONCURRENCIES.map((c) => rateOf(impl.name, c));
    const vsPLimit = CONCURRENCIES.map((c, i) => s.fixed(rates[i] / rateOf('p-limit', c), 2));
    const vsFastest = CONCURRENCIES.map((c, i) => s.fixed(rates[i] / fastest.get(c).rate, 2));
    const bad = cells.some((cell) => cell.params.impl === impl.name && !allOk(cell));
    return [
      `${impl.name}${bad ? ' ⚠ wrong results' : ''}`,
      ...rates.map((value) => s.rate(value)),
      vsPLimit.join(' / '),
      vsFastest.join(' / '),
    ];
  });

  const markdown = [
    `### ${title}`,
    '',
    `tasks/s for ${s.int(config.n)} tasks \`() => Promise.resolve(i)\`: enqueue all, then await ` +
      `all. Median of ${config.reps} fresh process${config.reps === 1 ? '' : 'es'} per cell; ` +
      `each does a ${s.int(warmupOf(config.n))}-task warm-up first. ` +
      `Ratio columns list c=1 / 10 / 100 / 10 000.`,
    '',
    s.table(['implementation', ...cHeads, '× p-limit', '× fastest peer'], rows),
    '',
    `Fastest peer (of p-limit, p-queue, async.queue) per concurrency: ` +
      CONCURRENCIES.map((c) => {
        const best = fastest.get(c);
        return `c=${s.int(c)} ${best.name} (${s.rate(best.rate)}/s)`;
      }).join(', ') +
      '.',
    '',
    s.spreadNote(cells, 'tasksPerSec', (cell) => cell.label),
  ].join('\n');

  const targets = [];
  for (const impl of limiters.filter((candidate) => candidate.kind === 'sluice')) {
    for (const concurrency of CONCURRENCIES) {
      const value = rateOf(impl.name, concurrency);
      const vsPLimit = value / rateOf('p-limit', concurrency);
      const best = fastest.get(concurrency);
      const vsFastest = value / best.rate;
      const okPLimit = vsPLimit >= 2;
      const okFastest = vsFastest >= 1.2;
      const correct = allOk(at(impl.name, concurrency));
      targets.push(
        s.target(
          okPLimit && okFastest && correct,
          `(a) ${impl.name} c=${s.int(concurrency)}: ${s.ratio(vsPLimit)} p-limit (≥ 2×), ` +
            `${s.ratio(vsFastest)} the fastest peer ${best.name} (≥ 1.2×)` +
            `${correct ? '' : ', WRONG RESULTS'}`,
        ),
      );
    }
  }
  return { markdown, targets };
}

function allOk(cell) {
  return cell.runs.length > 0 && cell.runs.every((run) => run.ok) && cell.errors.length === 0;
}
