/**
 * (b) Memory: bytes per queued task, with N tasks waiting behind a blocker that never settles.
 *
 * Heap used after a full GC, before and after queueing, divided by N. What is counted: the
 * limiter's queue entry and whatever it allocates per call, plus the promise it hands back (a
 * caller cannot queue without holding one). What is not: the caller's array of promises
 * (allocated before the first reading) and the task function (one shared function for every
 * call, so a per-call closure, the same cost under every limiter, does not blur the difference).
 */
import { findImpl, limiters } from '../impls.mjs';
import { collect, heapUsed, settle } from '../gc.mjs';
import * as s from '../stats.mjs';

export const title = '(b) Memory per queued task';

export function plan(config) {
  return limiters.map((impl) => ({ label: impl.name, params: { impl: impl.name, n: config.n } }));
}

export async function measure({ impl, n }) {
  const create = await findImpl(limiters, impl).load();
  const task = () => Promise.resolve(1);
  const limiter = create(1);
  const blocker = limiter.run(() => new Promise(() => undefined));
  const promises = new Array(n);
  // Let a deferred start (async.queue starts on an immediate) happen before the first reading.
  await settle();
  collect();
  const before = heapUsed();
  for (let i = 0; i < n; i++) promises[i] = limiter.run(task);
  await settle();
  collect();
  const after = heapUsed();
  // Read both after the second measurement: V8 frees what the code no longer uses, and a
  // collected queue would make any limiter look free.
  const pending = limiter.pending();
  if (!(promises[n - 1] instanceof Promise) || !(blocker instanceof Promise)) {
    throw new Error(`${impl} did not return promises`);
  }
  const bytesPerTask = (after - before) / n;
  return {
    bytesPerTask,
    pending,
    heapDeltaMB: (after - before) / 2 ** 20,
    summary: `${bytesPerTask.toFixed(0)} B/task, ${pending} pending`,
  };
}

export function report(cells, config) {
  const at = (name) => cells.find((cell) => cell.params.impl === name);
  const bytesOf = (name) => s.medianOf(at(name), 'bytesPerTask');
  const pLimit = bytesOf('p-limit');

  const rows = limiters.map((impl) => {
    const cell = at(impl.name);
    const bytes = bytesOf(impl.name);
    // Every limiter must really hold the N calls in line (the unlimited reference runs them).
    const pendings = [...new Set(cell.runs.map((run) => run.pending))];
    return [
      impl.name,
      s.int(bytes),
      s.ratio(bytes / pLimit),
      s.fixed(s.medianOf(cell, 'heapDeltaMB'), 1),
      pendings.length === 0 ? 'n/a' : pendings.map((p) => s.int(p)).join(', '),
    ];
  });

  const markdown = [
    `### ${title}`,
    '',
    `Heap delta / ${s.int(config.n)} after a double forced GC, with every task queued behind a ` +
      `blocker that never settles (concurrency 1). Counts the limiter's entry and the promise it ` +
      `returns; not the task function (shared) nor the caller's array. "unlimited" runs each ` +
      `task at once, so its row is the returned promise alone. Median of ${config.reps} ` +
      `process${config.reps === 1 ? '' : 'es'}.`,
    '',
    s.table(
      ['implementation', 'bytes / queued task', '× p-limit', 'heap delta MB', 'pending seen'],
      rows,
    ),
    '',
    s.spreadNote(cells, 'bytesPerTask', (cell) => cell.label),
  ].join('\n');

  const targets = limiters
    .filter((impl) => impl.kind === 'sluice')
    .map((impl) => {
      const bytes = bytesOf(impl.name);
      const queued = at(impl.name).runs.every((run) => run.pending === config.n);
      return s.target(
        bytes <= 300 && queued,
        `(b) ${impl.name}: ${s.int(bytes)} bytes per queued task (≤ 300), ` +
          `${s.ratio(bytes / pLimit)} p-limit's ${s.int(pLimit)}` +
          `${queued ? '' : `, but not all ${s.int(config.n)} were pending`}`,
      );
    });
  return { markdown, targets };
}
