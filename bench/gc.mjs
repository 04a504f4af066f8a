/**
 * Heap helpers for the child processes, which run with `--expose-gc`.
 */
import { setImmediate as immediate } from 'node:timers/promises';

/**
 * A full collection, twice: the first can leave garbage reachable only from objects it is
 * finalising (weak references, finalizers), which the second then frees.
 */
export function collect() {
  if (typeof globalThis.gc !== 'function') {
    throw new Error('run this child with --expose-gc (bench/run.mjs does)');
  }
  globalThis.gc();
  globalThis.gc();
}

/** Lets the microtasks and immediates already scheduled run, e.g. a queue's deferred start. */
export async function settle() {
  await immediate();
  await immediate();
}

export function heapUsed() {
  return process.memoryUsage().heapUsed;
}
