import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { all, map, mapIterable, mapSettled } from '../src/index.ts';
import { deferred, flush } from './_helpers/clock.ts';

/** A task pool where the test decides when each task finishes, and which are in flight. */
function controlled<T>() {
  const running = new Map<T, (value: unknown) => void>();
  const failing = new Map<T, (reason: unknown) => void>();
  let peak = 0;
  const signals: AbortSignal[] = [];
  return {
    running,
    get peak() {
      return peak;
    },
    signals,
    fn: (item: T, _index: number, { signal }: { signal: AbortSignal }) => {
      signals.push(signal);
      const { promise, resolve, reject } = deferred<unknown>();
      running.set(item, resolve);
      failing.set(item, reject);
      peak = Math.max(peak, running.size);
      return promise.finally(() => running.delete(item));
    },
    finish(item: T, value: unknown = item) {
      running.get(item)?.(value);
    },
    fail(item: T, error: unknown) {
      failing.get(item)?.(error);
    },
  };
}

/** A generator that records how far it has been read and whether it was closed. */
function counting(n: number) {
  const seen = { pulled: 0, closed: false };
  function* generate() {
    try {
      for (let i = 0; i < n; i++) {
        seen.pulled++;
        yield i;
      }
    } finally {
      seen.closed = true;
    }
  }
  return { seen, iterable: generate() };
}

async function* asyncRange(n: number, seen?: { pulled: number; closed: boolean }) {
  try {
    for (let i = 0; i < n; i++) {
      await flush();
      if (seen) seen.pulled++;
      yield i;
    }
  } finally {
    if (seen) seen.closed = true;
  }
}

describe('map', () => {
  it('resolves to the results in input order whatever order they finish in', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.nat(5), { maxLength: 40 }),
        fc.integer({ min: 1, max: 8 }),
        async (delays, concurrency) => {
          let inFlight = 0;
          let peak = 0;
          const results = await map(
            delays,
            async (delay, index) => {
              inFlight++;
              peak = Math.max(peak, inFlight);
              for (let i = 0; i < delay; i++) await flush();
              inFlight--;
              return index * 10;
            },
            { concurrency },
          );
          assert.deepEqual(
            results,
            delays.map((_, i) => i * 10),
          );
          assert.ok(peak <= concurrency, `peak ${peak} > ${concurrency}`);
          // A task with no await finishes before the next one starts; the others overlap.
          if (delays.every((d) => d > 0)) assert.equal(peak, Math.min(concurrency, delays.length));
        },
      ),
      { numRuns: 50 },
    );
  });

  it('passes the index and a signal, and works with synchronous results', async () => {
    const results = await map(
      ['a', 'b'],
      (item, index, { signal }) => `${item}${index}${signal.aborted}`,
    );
    assert.deepEqual(results, ['a0false', 'b1false']);
  });

  it('resolves to an empty array for an empty input', async () => {
    assert.deepEqual(await map([], () => 1), []);
    assert.deepEqual(await map(asyncRange(0), () => 1), []);
  });

  it('pulls a generator only as far as the work', async () => {
    const pool = controlled<number>();
    const { seen, iterable } = counting(100);
    const done = map(iterable, pool.fn, { concurrency: 3 });
    await flush();
    assert.equal(seen.pulled, 3);
    pool.finish(0);
    await flush();
    assert.equal(seen.pulled, 4);
    for (let i = 1; i < 100; i++) {
      pool.finish(i);
      await flush();
    }
    assert.equal((await done).length, 100);
    assert.equal(pool.peak, 3);
  });

  it('pulls an async iterable with at most one pull ahead of the work', async () => {
    const seen = { pulled: 0, closed: false };
    const pool = controlled<number>();
    const done = map(asyncRange(50, seen), pool.fn, { concurrency: 4 });
    for (let i = 0; i < 10; i++) await flush();
    assert.equal(pool.running.size, 4);
    assert.ok(seen.pulled <= 5, `pulled ${seen.pulled}`);
    for (let i = 0; i < 50; i++) {
      while (!pool.running.has(i)) await flush();
      pool.finish(i, i * 2);
    }
    const results = await done;
    assert.deepEqual(
      results,
      Array.from({ length: 50 }, (_, i) => i * 2),
    );
    assert.equal(pool.peak, 4);
  });

  it('stops at the first error: rejects with it, aborts the signal, pulls nothing more, closes the input', async () => {
    const pool = controlled<number>();
    const { seen, iterable } = counting(100);
    const done = map(iterable, pool.fn, { concurrency: 2 });
    await flush();
    const boom = new Error('boom');
    pool.fail(1, boom);
    await assert.rejects(done, (error) => error === boom);
    assert.equal(pool.signals[0]!.aborted, true);
    assert.equal(pool.signals[0]!.reason, boom);
    assert.equal(seen.closed, true);
    pool.finish(0);
    await flush();
    assert.equal(seen.pulled, 2);
  });

  it('with stopOnError false runs everything and rejects with an AggregateError in input order', async () => {
    const attempted: number[] = [];
    const done = map(
      [0, 1, 2, 3, 4, 5],
      async (i) => {
        attempted.push(i);
        for (let k = 0; k < 6 - i; k++) await flush(); // later items fail first
        if (i % 2 === 1) throw new Error(`item ${i}`);
        return i;
      },
      { concurrency: 6, stopOnError: false },
    );
    await assert.rejects(done, (error: unknown) => {
      assert.ok(error instanceof AggregateError);
      assert.equal(error.message, '3 of 6 items failed');
      assert.deepEqual(
        error.errors.map((e: Error) => e.message),
        ['item 1', 'item 3', 'item 5'],
      );
      return true;
    });
    assert.deepEqual(attempted, [0, 1, 2, 3, 4, 5]);
  });

  it('stops when the caller aborts, rejecting with the reason', async () => {
    const pool = controlled<number>();
    const controller = new AbortController();
    const done = map([1, 2, 3, 4], pool.fn, { concurrency: 2, signal: controller.signal });
    await flush();
    const reason = new Error('caller gave up');
    controller.abort(reason);
    await assert.rejects(done, (error) => error === reason);
    assert.equal(pool.signals[0]!.reason, reason);
    assert.equal(pool.signals.length, 2, 'no item started after the abort');
  });

  it('rejects at once with an already aborted signal, without calling fn', async () => {
    let calls = 0;
    const reason = new Error('already');
    await assert.rejects(
      map([1], () => calls++, { signal: AbortSignal.abort(reason) }),
      (error) => error === reason,
    );
    assert.equal(calls, 0);
  });

  it('rejects with the error of an input that throws', async () => {
    function* broken() {
      yield 1;
      throw new Error('input broke');
    }
    await assert.rejects(
      map(broken(), (x) => x),
      /input broke/,
    );
    async function* brokenAsync() {
      yield 1;
      await flush();
      throw new Error('async input broke');
    }
    await assert.rejects(
      map(brokenAsync(), (x) => x),
      /async input broke/,
    );
  });

  it('turns a synchronous throw in fn into a rejection', async () => {
    await assert.rejects(
      map([1], () => {
        throw new Error('sync');
      }),
      /sync/,
    );
  });

  it('runs every call in the async context of the caller', async () => {
    const als = new AsyncLocalStorage<string>();
    const stores = await als.run('caller', () =>
      map(
        [1, 2, 3, 4],
        async () => {
          await flush();
          return als.getStore();
        },
        { concurrency: 2 },
      ),
    );
    assert.deepEqual(stores, ['caller', 'caller', 'caller', 'caller']);
  });

  it('handles unlimited concurrency over a long synchronous input without growing the stack', async () => {
    const items = Array.from({ length: 200_000 }, (_, i) => i);
    const results = await map(items, (i) => Promise.resolve(i + 1));
    assert.equal(results.length, 200_000);
    assert.equal(results[199_999], 200_000);
  });

  it('rejects bad input with a message naming it', async () => {
    await assert.rejects(
      map(42 as never, () => 1),
      {
        name: 'TypeError',
        message: 'Expected `input` to be an iterable or an async iterable, got `42` (number)',
      },
    );
    await assert.rejects(
      map([1], 'f' as never),
      /Expected `fn` to be a function, got `"f"` \(string\)/,
    );
    await assert.rejects(
      map([1], () => 1, { concurrency: 0 }),
      {
        name: 'RangeError',
        message: 'Expected `concurrency` to be an integer >= 1 or Infinity, got `0` (number)',
      },
    );
    await assert.rejects(
      map([1], () => 1, { stopOnError: 'no' as never }),
      /`stopOnError` to be a boolean/,
    );
  });
});

describe('mapSettled', () => {
  it('resolves to a settled result per item, in input order', async () => {
    const results = await mapSettled(
      [1, 2, 3],
      async (i) => {
        await flush();
        if (i === 2) throw new Error('two');
        return i;
      },
      { concurrency: 2 },
    );
    assert.equal(results.length, 3);
    assert.deepEqual(results[0], { status: 'fulfilled', value: 1 });
    assert.equal(results[1]!.status, 'rejected');
    assert.match(String((results[1] as PromiseRejectedResult).reason), /two/);
    assert.deepEqual(results[2], { status: 'fulfilled', value: 3 });
  });
});

describe('all', () => {
  it('runs thunks with a limit and keeps their order', async () => {
    let inFlight = 0;
    let peak = 0;
    const thunks = [30, 10, 20, 0, 5].map((delay, i) => async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      for (let k = 0; k < delay; k++) await flush();
      inFlight--;
      return i;
    });
    assert.deepEqual(await all(thunks, { concurrency: 2 }), [0, 1, 2, 3, 4]);
    assert.equal(peak, 2);
  });

  it('rejects an item that is not a function', async () => {
    await assert.rejects(
      all([() => 1, 2 as never]),
      /Expected every item of `thunks` to be a function, got `2` \(number\)/,
    );
  });
});

describe('mapIterable', () => {
  it('yields results in input order by default', async () => {
    const out: number[] = [];
    for await (const value of mapIterable(
      [5, 1, 3, 0, 2],
      async (delay, i) => {
        for (let k = 0; k < delay; k++) await flush();
        return i;
      },
      { concurrency: 3 },
    )) {
      out.push(value);
    }
    assert.deepEqual(out, [0, 1, 2, 3, 4]);
  });

  it('yields results as they are ready with ordered: false', async () => {
    const pool = controlled<number>();
    const iterator = mapIterable([0, 1, 2], pool.fn, { concurrency: 3, ordered: false });
    const first = iterator.next();
    await flush();
    pool.finish(2, 'two');
    assert.deepEqual(await first, { value: 'two', done: false });
    pool.finish(0, 'zero');
    pool.finish(1, 'one');
    const rest: unknown[] = [];
    for await (const value of iterator) rest.push(value);
    assert.deepEqual(rest.sort(), ['one', 'zero']);
  });

  it('keeps memory bounded: a slow first item holds back the input', async () => {
    const pool = controlled<number>();
    const { seen, iterable } = counting(1000);
    const iterator = mapIterable(iterable, pool.fn, { concurrency: 2 });
    const first = iterator.next();
    await flush();
    // Item 0 is slow; the others finish as soon as they start.
    for (let i = 1; i < 20; i++) {
      pool.finish(i);
      await flush();
    }
    assert.ok(seen.pulled <= 4, `pulled ${seen.pulled} while the first item was still running`);
    pool.finish(0);
    assert.deepEqual(await first, { value: 0, done: false });
    await iterator.return(undefined);
  });

  it('on break stops pulling, aborts the work in flight, waits for it, and closes the input', async () => {
    const { seen, iterable } = counting(100);
    const signals: AbortSignal[] = [];
    let settled = 0;
    for await (const value of mapIterable(
      iterable,
      async (i, _index, { signal }) => {
        signals.push(signal);
        if (i > 0) {
          await new Promise((resolve) => {
            signal.addEventListener('abort', resolve);
          });
          settled++;
        }
        return i;
      },
      { concurrency: 3 },
    )) {
      assert.equal(value, 0);
      break;
    }
    assert.equal(signals.at(-1)!.aborted, true);
    assert.equal(settled, signals.length - 1, 'every call in flight settled before the loop ended');
    assert.equal(seen.closed, true);
    assert.ok(seen.pulled <= 4);
  });

  it('ends the loop with the first error', async () => {
    const iterate = async () => {
      for await (const _ of mapIterable(
        [1, 2, 3],
        (i) => {
          if (i === 2) throw new Error('two failed');
          return i;
        },
        { concurrency: 1 },
      )) {
        // consume
      }
    };
    await assert.rejects(iterate(), /two failed/);
  });

  it('ends the loop with the reason when the caller aborts', async () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    const iterate = async () => {
      for await (const value of mapIterable(asyncRange(100), (i) => i, {
        signal: controller.signal,
      })) {
        if (value === 3) controller.abort(reason);
      }
    };
    await assert.rejects(iterate(), (error) => error === reason);
  });

  it('reads an async input lazily and completely', async () => {
    const seen = { pulled: 0, closed: false };
    const out: number[] = [];
    for await (const value of mapIterable(asyncRange(20, seen), (i) => Promise.resolve(i * 3), {
      concurrency: 4,
    })) {
      out.push(value);
    }
    assert.deepEqual(
      out,
      Array.from({ length: 20 }, (_, i) => i * 3),
    );
    assert.equal(seen.pulled, 20);
  });

  it('throws on bad input when called, not later', () => {
    assert.throws(() => mapIterable(null as never, (x) => x), /Expected `input` to be an iterable/);
    assert.throws(
      () => mapIterable([1], (x) => x, { ordered: 1 as never }),
      /`ordered` to be a boolean/,
    );
  });
});
