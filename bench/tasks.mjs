/**
 * The timed run of (a) and (f): N immediately-resolving tasks through one limiter, enqueued all
 * at once, then awaited all; the clock runs from the first enqueue until `Promise.all` over every
 * returned promise resolves, so it covers queueing, starting, settling and handing the result back.
 */
import { collect } from './gc.mjs';
import * as s from './stats.mjs';

const WARMUP = 20_000;

/** The size of the untimed warm-up run before a timed run of `n` tasks. */
export function warmupOf(n) {
  return Math.min(WARMUP, Math.ceil(n / 10));
}

/** Enqueues `n` tasks, then awaits them all; the tasks are per-call closures, as in user code. */
async function drive(limiter, n) {
  const promises = new Array(n);
  const start = performance.now();
  for (let i = 0; i < n; i++) promises[i] = limiter.run(() => Promise.resolve(i));
  const values = await Promise.all(promises);
  return { ms: performance.now() - start, values };
}

/**
 * Times `n` tasks through `create(concurrency)` (an object with `run(fn) → Promise`), after a
 * short run through the same code on another instance, so that the timed run measures the
 * optimised code rather than the first compile (equal for everyone, small next to `n`).
 */
export async function measureTasks(create, concurrency, n) {
  await drive(create(concurrency), warmupOf(n));
  collect();
  const { ms, values } = await drive(create(concurrency), n);
  let ok = values.length === n;
  for (let i = 0; ok && i < n; i++) ok = values[i] === i;
  const tasksPerSec = n / (ms / 1000);
  return { ms, tasksPerSec, ok, summary: `${s.rate(tasksPerSec)} tasks/s` };
}
