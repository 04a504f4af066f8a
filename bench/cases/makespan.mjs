/**
 * (c) Makespan: 1000 tasks that each wait on a real 10 ms setTimeout, at concurrency 50.
 *
 * The ideal is 1000 / 50 × 10 ms = 200 ms; what a limiter adds is the gap between a task's end
 * and the next start, times 20 waves. The task counts itself in and out, so the peak in flight
 * checks the limit is kept (exactly 50: fewer wastes the slots, more breaks the promise).
 */
import { findImpl, limiters } from '../impls.mjs';
import { collect } from '../gc.mjs';
import * as s from '../stats.mjs';

export const title = '(c) Makespan, 1000 × sleep(10 ms) at concurrency 50';

const TASKS = 1000;
const CONCURRENCY = 50;
const SLEEP_MS = 10;
const IDEAL_MS = (TASKS / CONCURRENCY) * SLEEP_MS;
const BATCHES = 3;

/** A plain setTimeout, as user code waits on I/O; no AbortSignal plumbing in the way. */
const sleep = (ms) =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

export function plan() {
  return limiters.map((impl) => ({ label: impl.name, params: { impl: impl.name } }));
}

/** One batch: all tasks enqueued at once, timed until the last settles. */
async function batch(limiter) {
  let inFlight = 0;
  let peak = 0;
  const task = async () => {
    inFlight++;
    if (inFlight > peak) peak = inFlight;
    await sleep(SLEEP_MS);
    inFlight--;
  };
  const promises = new Array(TASKS);
  const start = performance.now();
  for (let i = 0; i < TASKS; i++) promises[i] = limiter.run(task);
  await Promise.all(promises);
  return { ms: performance.now() - start, peak };
}

export async function measure({ impl }) {
  const create = await findImpl(limiters, impl).load();
  // One untimed batch first, so the timed ones run optimised code, then the median of a few
  // batches: a 200 ms makespan is 20 timer waves, and one late wakeup (a GC, a neighbour on
  // the CPU) moves it by more than the limiters differ.
  await batch(create(CONCURRENCY));
  const batches = [];
  for (let i = 0; i < BATCHES; i++) {
    collect();
    batches.push(await batch(create(CONCURRENCY)));
  }
  const ms = s.median(batches.map((b) => b.ms));
  const peaks = batches.map((b) => b.peak);
  return {
    ms,
    ratio: ms / IDEAL_MS,
    peaks,
    summary: `${ms.toFixed(1)} ms, peaks ${peaks.join('/')}`,
  };
}

export function report(cells, config) {
  const at = (name) => cells.find((cell) => cell.params.impl === name);
  const rows = limiters.map((impl) => {
    const cell = at(impl.name);
    // Unlimited runs all 1000 at once: there is no ideal at concurrency 50 to compare with.
    const limited = impl.name !== 'unlimited Promise.all';
    return [
      impl.name,
      s.fixed(s.medianOf(cell, 'ms'), 1),
      limited ? s.fixed(s.medianOf(cell, 'ratio'), 3) : '—',
      peaks(cell),
    ];
  });

  const markdown = [
    `### ${title}`,
    '',
    `Ideal ${IDEAL_MS} ms (${TASKS} / ${CONCURRENCY} × ${SLEEP_MS} ms). Makespan from the first ` +
      `enqueue to the last result. Each process runs one untimed batch, then ${BATCHES} timed ` +
      `ones and keeps their median; the cell is the median of ${config.reps} ` +
      `process${config.reps === 1 ? '' : 'es'}. Peak in flight is counted inside the task; ` +
      `every distinct peak seen in any batch is listed. A 10 ms timer wakes 10–11 ms later ` +
      `(libuv counts whole milliseconds), so no limiter reaches 1.00: read the rows against ` +
      `ref-minimal's.`,
    '',
    s.table(['implementation', 'makespan ms', 'makespan / ideal', 'peak in flight'], rows),
    '',
    s.spreadNote(
      cells.filter((cell) => cell.params.impl !== 'unlimited Promise.all'),
      'ms',
      (cell) => cell.label,
    ),
  ].join('\n');

  const targets = limiters
    .filter((impl) => impl.kind === 'sluice')
    .map((impl) => {
      const cell = at(impl.name);
      const value = s.medianOf(cell, 'ratio');
      const exact =
        cell.runs.length > 0 && cell.runs.every((run) => run.peaks.every((p) => p === CONCURRENCY));
      return s.target(
        value <= 1.04 && exact,
        `(c) ${impl.name}: makespan/ideal ${s.fixed(value, 3)} (≤ 1.04), ` +
          `peak in flight ${peaks(cell)} (exactly ${CONCURRENCY})`,
      );
    });
  return { markdown, targets };
}

function peaks(cell) {
  const values = [...new Set(cell.runs.flatMap((run) => run.peaks))].sort((a, b) => a - b);
  return values.length === 0 ? 'n/a' : values.join(', ');
}
