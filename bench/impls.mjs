/**
 * The implementations under test, behind two small adapter shapes:
 *
 * - a limiter: `create(concurrency)` returns `{ run(fn) → Promise, pending() → number }`, where
 *   `pending()` counts the calls waiting for a slot (the memory case checks it, to prove the
 *   tasks really were queued and not run);
 * - a mapper: `(items, fn, concurrency) → Promise<results in input order>`.
 *
 * Every `load()` imports its library lazily, so a child process loads only the one it measures:
 * another library's code in the same process would share the JIT's inline caches and the heap.
 * `kind` decides the ratios: 'peer' rows make up "the fastest peer", 'ref' rows are references
 * written here (what a limiter could cost, not a competitor).
 */

// The built package, as users get it (`npm run bench` builds first).
const SLUICE = new URL('../dist/index.js', import.meta.url).href;

export const limiters = [
  {
    name: 'sluice limit()',
    kind: 'sluice',
    async load() {
      const { limit } = await import(SLUICE);
      return (concurrency) => {
        const run = limit(concurrency);
        return { run, pending: () => run.pendingCount };
      };
    },
  },
  {
    name: 'sluice Semaphore.run',
    kind: 'sluice',
    async load() {
      const { Semaphore } = await import(SLUICE);
      return (concurrency) => {
        const sem = new Semaphore(concurrency);
        return { run: (fn) => sem.run(fn), pending: () => sem.waiting };
      };
    },
  },
  {
    name: 'p-limit',
    kind: 'peer',
    async load() {
      const { default: pLimit } = await import('p-limit');
      return (concurrency) => {
        const run = pLimit(concurrency);
        return { run, pending: () => run.pendingCount };
      };
    },
  },
  {
    name: 'p-queue',
    kind: 'peer',
    async load() {
      const { default: PQueue } = await import('p-queue');
      return (concurrency) => {
        const queue = new PQueue({ concurrency });
        return { run: (fn) => queue.add(fn), pending: () => queue.size };
      };
    },
  },
  {
    name: 'async.queue',
    kind: 'peer',
    async load() {
      const { default: async } = await import('async');
      // async.queue is callback-shaped; this is how it serves as a promise limiter: the task is
      // the function, the worker awaits it, and pushAsync's promise carries its result or error.
      // A native async worker is what async recognises and calls without a callback wrapper.
      const worker = async (fn) => await fn();
      return (concurrency) => {
        const queue = async.queue(worker, concurrency);
        return { run: (fn) => queue.pushAsync(fn), pending: () => queue.length() };
      };
    },
  },
  {
    name: 'ref-minimal',
    kind: 'ref',
    load() {
      return Promise.resolve((concurrency) => {
        const run = refMinimal(concurrency);
        return { run, pending: run.pending };
      });
    },
  },
  {
    name: 'unlimited Promise.all',
    kind: 'ref',
    load() {
      // No limiter at all: every call starts at once. The floor under every other row.
      return Promise.resolve(() => ({ run: (fn) => fn(), pending: () => 0 }));
    },
  },
];

export const mappers = [
  {
    name: 'sluice map()',
    kind: 'sluice',
    async load() {
      const { map } = await import(SLUICE);
      return (items, fn, concurrency) => map(items, fn, { concurrency });
    },
  },
  {
    name: 'sluice limit().map',
    kind: 'sluice',
    async load() {
      const { limit } = await import(SLUICE);
      return (items, fn, concurrency) => limit(concurrency).map(items, fn);
    },
  },
  {
    name: 'p-map',
    kind: 'peer',
    async load() {
      const { default: pMap } = await import('p-map');
      return (items, fn, concurrency) => pMap(items, fn, { concurrency });
    },
  },
  {
    name: 'async.mapLimit',
    kind: 'peer',
    async load() {
      const { default: async } = await import('async');
      // Without a callback, async 3 returns a promise; a native async mapper needs no wrapper.
      return (items, fn, concurrency) => async.mapLimit(items, concurrency, fn);
    },
  },
  {
    name: 'p-limit .map',
    kind: 'peer',
    async load() {
      const { default: pLimit } = await import('p-limit');
      return (items, fn, concurrency) => pLimit(concurrency).map(items, fn);
    },
  },
  {
    name: 'unlimited Promise.all',
    kind: 'ref',
    load() {
      return Promise.resolve((items, fn) => Promise.all(items.map((item) => fn(item))));
    },
  },
  {
    name: 'ref-pool',
    kind: 'ref',
    load() {
      return Promise.resolve(refPool);
    },
  },
];

export function findImpl(list, name) {
  const impl = list.find((candidate) => candidate.name === name);
  if (impl === undefined) throw new Error(`Unknown implementation ${JSON.stringify(name)}`);
  return impl;
}

/**
 * ref-minimal: the least a limiter in p-limit's shape has to do. A counter of running calls, an
 * array of the calls waiting for a slot, and one promise per call, resolved with the task's own
 * promise. Whatever a library costs above this row is the price of its features or its
 * overheads. No validation, no clearing, no async context: a yardstick, not a library.
 */
export function refMinimal(concurrency) {
  let active = 0;
  // A waiting call is two slots, its function and its promise's resolve, rather than a closure
  // over both: a closure and its context would cost more than the rest of the entry.
  let queue = [];
  // Array#shift on a large array copies it (V8 cannot trim an array in large-object space),
  // which makes a million-task queue quadratic; read from a moving head instead and drop the
  // array once it has been read to the end.
  let head = 0;

  function start(fn, resolve) {
    let result;
    try {
      result = Promise.resolve(fn());
    } catch (error) {
      result = Promise.reject(error);
    }
    result.then(next, next);
    resolve(result);
  }

  function next() {
    active--;
    if (head === queue.length) return;
    const fn = queue[head];
    const resolve = queue[head + 1];
    queue[head] = queue[head + 1] = undefined;
    head += 2;
    if (head === queue.length) {
      queue = [];
      head = 0;
    }
    active++;
    start(fn, resolve);
  }

  function run(fn) {
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    if (active < concurrency) {
      active++;
      start(fn, resolve);
    } else {
      queue.push(fn, resolve);
    }
    return promise;
  }

  run.pending = () => (queue.length - head) / 2;
  return run;
}

/**
 * ref-pool: `concurrency` async workers pulling indexes from a shared counter, writing results
 * by index. No promise, closure or queue entry per item: one `await` per item is all an ordered
 * map has to cost, so this row is the ceiling for the map case.
 */
export async function refPool(items, fn, concurrency) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index], index);
    }
  };
  const workers = [];
  for (let k = 0; k < Math.min(concurrency, items.length); k++) workers.push(worker());
  await Promise.all(workers);
  return results;
}
