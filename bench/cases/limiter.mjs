/**
 * (f) Limiter: `Limiter` with only a concurrency limit, against p-queue, the peer with the same
 * shape (a queue object with options, events and idle promises). N immediately-resolving tasks,
 * timed from the first `schedule()` / `add()` until `Promise.all` over every returned promise
 * resolves, as in (a).
 */
import { findImpl } from '../impls.mjs';
import * as s from '../stats.mjs';
import { measureTasks, warmupOf } from '../tasks.mjs';

export const title = '(f) Limiter with a concurrency limit, immediately-resolving tasks';

const CONCURRENCIES = [10, 100];
const SLUICE = new URL('../../dist/index.js', import.meta.url).href;

/** `load()` resolves to `create(concurrency)`, which returns `{ run(fn) → Promise }`. */
const impls = [
  {
    name: 'sluice Limiter.schedule',
    kind: 'sluice',
    async load() {
      const { Limiter } = await import(SLUICE);
      return (concurrency) => {
        const limiter = new Limiter({ concurrency });
        return { run: (fn) => limiter.schedule(fn) };
      };
    },
  },
  {
    name: 'p-queue add',
    kind: 'peer',
    async load() {
      const { default: PQueue } = await import('p-queue');
      return (concurrency) => {
        const queue = new PQueue({ concurrency });
        return { run: (fn) => queue.add(fn) };
      };
    },
  },
];

export function plan(config) {
  return impls.flatMap((impl) =>
    CONCURRENCIES.map((concurrency) => ({
      label: `${impl.name} c=${concurrency}`,
      params: { impl: impl.name, concurrency, n: config.n },
    })),
  );
}

export async function measure({ impl, concurrency, n }) {
  return measureTasks(await findImpl(impls, impl).load(), concurrency, n);
}

export function report(cells, config) {
  const at = (name, concurrency) =>
    cells.find((cell) => cell.params.impl === name && cell.params.concurrency === concurrency);
  const rateOf = (name, concurrency) => s.medianOf(at(name, concurrency), 'tasksPerSec');
  const allOk = (cell) =>
    cell.runs.length > 0 && cell.runs.every((run) => run.ok) && cell.errors.length === 0;

  const rows = impls.map((impl) => {
    const bad = CONCURRENCIES.some((c) => !allOk(at(impl.name, c)));
    return [
      `${impl.name}${bad ? ' ⚠ wrong results or failures' : ''}`,
      ...CONCURRENCIES.map((c) => s.rate(rateOf(impl.name, c))),
      CONCURRENCIES.map((c) => s.fixed(rateOf(impl.name, c) / rateOf('p-queue add', c), 2)).join(
        ' / ',
      ),
    ];
  });

  const warmup = s.int(warmupOf(config.n));
  const markdown = [
    `### ${title}`,
    '',
    `tasks/s for ${s.int(config.n)} tasks \`() => Promise.resolve(i)\` through ` +
      `\`new Limiter({ concurrency })\`.schedule and \`new PQueue({ concurrency })\`.add: enqueue ` +
      `all, then await all. Median of ${config.reps} fresh ` +
      `process${config.reps === 1 ? '' : 'es'} per cell; each does a ${warmup}-task warm-up ` +
      `first. The ratio column lists ${CONCURRENCIES.map((c) => `c=${c}`).join(' / ')}.`,
    '',
    s.table(
      [
        'implementation',
        ...CONCURRENCIES.map((c) => `c=${s.int(c)}`),
        `× p-queue (${CONCURRENCIES.join(' / ')})`,
      ],
      rows,
    ),
    '',
    s.spreadNote(cells, 'tasksPerSec', (cell) => cell.label),
  ].join('\n');

  const targets = CONCURRENCIES.map((concurrency) => {
    const vs = rateOf('sluice Limiter.schedule', concurrency) / rateOf('p-queue add', concurrency);
    const correct = allOk(at('sluice Limiter.schedule', concurrency));
    return s.target(
      vs >= 2 && correct,
      `(f) sluice Limiter.schedule c=${s.int(concurrency)}: ${s.ratio(vs)} p-queue (≥ 2×)` +
        `${correct ? '' : ', WRONG RESULTS'}`,
    );
  });
  return { markdown, targets };
}
