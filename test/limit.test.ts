/**
 * `limit()` and `limitFunction()`: the behaviour p-limit 7 documents, which code moving over from
 * p-limit relies on, plus sluice's own promises (cleared calls always settle, context is kept).
 * Tasks are deferred promises finished by hand, so every step is checked without sleeping.
 */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import process from 'node:process';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { limit, limitFunction } from '../src/index.ts';
import { deferred, flush } from './_helpers/clock.ts';
import { seeded } from './_helpers/random.ts';

/** Tasks that record when they start and run until the test finishes them. */
function tasks() {
  const started: number[] = [];
  const finished = new Set<number>();
  const pending = new Map<number, ReturnType<typeof deferred<number>>>();
  let inFlight = 0;
  let peak = 0;
  return {
    started,
    get inFlight() {
      return inFlight;
    },
    get peak() {
      return peak;
    },
    /** Started and not finished yet, in the order they started. */
    running(): number[] {
      return started.filter((id) => !finished.has(id));
    },
    /** A task that resolves to `id * 10` when `finish(id)` is called. */
    task(id: number): () => Promise<number> {
      return () => {
        started.push(id);
        inFlight++;
        peak = Math.max(peak, inFlight);
        const done = deferred<number>();
        pending.set(id, done);
        return done.promise.finally(() => {
          inFlight--;
        });
      };
    },
    finish(id: number): void {
      finished.add(id);
      pending.get(id)!.resolve(id * 10);
    },
    fail(id: number, error: Error): void {
      finished.add(id);
      pending.get(id)!.reject(error);
    },
  };
}

/** Records the unhandled rejections until `stop()`. */
function watchUnhandled() {
  const reasons: unknown[] = [];
  const listener = (reason: unknown) => {
    reasons.push(reason);
  };
  process.on('unhandledRejection', listener);
  return {
    reasons,
    stop: () => {
      process.off('unhandledRejection', listener);
    },
  };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('limit()', () => {
  it('runs at most `concurrency` tasks at once and keeps every slot busy while tasks finish in random order', async () => {
    for (const seed of [1, 2, 3]) {
      const run = limit(3);
      const t = tasks();
      const results = range(20).map((id) => run(t.task(id)));
      const next = seeded(seed);
      for (let done = 0; done < 20; done++) {
        await flush();
        assert.equal(t.inFlight, Math.min(3, 20 - done));
        assert.equal(run.activeCount, t.inFlight);
        const running = t.running();
        t.finish(running[Math.floor(next() * running.length)]!);
      }
      assert.deepEqual(
        await Promise.all(results),
        range(20).map((id) => id * 10),
      );
      assert.equal(t.peak, 3);
      assert.deepEqual(t.started, range(20), 'tasks start in the order they were queued');
      assert.equal(run.activeCount, 0);
    }
  });

  it('resolves each call with what its function returned, a plain value or a promise', async () => {
    const run = limit(1);
    const values = await Promise.all([
      run(() => 'plain'),
      run(() => Promise.resolve('promise')),
      run(async () => {
        await flush();
        return 'async';
      }),
      run(() => null),
    ]);
    assert.deepEqual(values, ['plain', 'promise', 'async', null]);
  });

  it("rejects a call with its function's error and goes on with the tasks behind it", async () => {
    const run = limit(1);
    const t = tasks();
    const error = new Error('task failed');
    const first = run(t.task(0));
    const second = run(t.task(1));
    await flush();
    t.fail(0, error);
    await assert.rejects(first, (e) => e === error);
    await flush();
    assert.deepEqual(t.started, [0, 1]);
    t.finish(1);
    assert.equal(await second, 10);
  });

  it('rejects Promise.all over its calls with the error of the call that failed', async () => {
    const run = limit(2);
    const t = tasks();
    const error = new Error('the second one');
    const all = Promise.all(range(3).map((id) => run(t.task(id))));
    await flush();
    t.finish(0);
    await flush();
    t.fail(1, error);
    await assert.rejects(all, (e) => e === error);
    t.finish(2);
  });

  it('passes the extra arguments to the function, for a call that starts at once and one that waits', async () => {
    const run = limit(1);
    const symbol = Symbol('arg');
    const gate = deferred();
    const seen: unknown[][] = [];
    const first = run(
      async (a: number, b: string) => {
        seen.push([a, b]);
        await gate.promise;
      },
      1,
      'two',
    );
    const second = run(
      (s: symbol, o: { n: number }, ...rest: number[]) => {
        seen.push([s, o, ...rest]);
        return rest.length;
      },
      symbol,
      { n: 3 },
      4,
      5,
    );
    await flush();
    assert.deepEqual(seen, [[1, 'two']]);
    gate.resolve();
    await first;
    assert.equal(await second, 2);
    assert.deepEqual(seen, [
      [1, 'two'],
      [symbol, { n: 3 }, 4, 5],
    ]);
  });

  it('counts the calls running (activeCount) and the calls waiting (pendingCount) at each step', async () => {
    const run = limit(2);
    const t = tasks();
    const counts = () => [run.activeCount, run.pendingCount];
    assert.deepEqual(counts(), [0, 0]);
    const results = [run(t.task(0))];
    assert.deepEqual(counts(), [1, 0]);
    results.push(run(t.task(1)));
    assert.deepEqual(counts(), [2, 0]);
    results.push(run(t.task(2)), run(t.task(3)));
    assert.deepEqual(counts(), [2, 2]);
    await flush();
    assert.deepEqual(counts(), [2, 2]);
    assert.deepEqual(t.started, [0, 1], 'a pending call has not had its function called');

    t.finish(0);
    await flush();
    assert.deepEqual(counts(), [2, 1]);
    assert.deepEqual(t.started, [0, 1, 2]);
    t.finish(2);
    await flush();
    assert.deepEqual(counts(), [2, 0]);
    t.finish(1);
    await flush();
    assert.deepEqual(counts(), [1, 0]);
    t.finish(3);
    await Promise.all(results);
    assert.deepEqual(counts(), [0, 0]);
  });

  it('has given the slot back by the time the caller of a finished call resumes', async () => {
    const run = limit(1);
    await run(async () => {
      await flush();
    });
    assert.equal(run.activeCount, 0);
    await assert.rejects(
      run(async () => {
        await flush();
        throw new Error('no');
      }),
    );
    assert.equal(run.activeCount, 0);
  });

  it('calls the function of a call with a free slot one microtask later, counting it active at once, as p-limit 7 does', async () => {
    // p-limit 7 takes the slot in the call and calls the function from a promise reaction: code
    // right after the call runs first, and what it changes, the function sees.
    const run = limit(2);
    let state = 'before the call';
    const seen: string[] = [];
    const first = run(() => {
      seen.push(`first: ${state}`);
      return 1;
    });
    assert.deepEqual([run.activeCount, run.pendingCount], [1, 0]);
    assert.equal(seen.length, 0, 'not called yet');
    state = 'right after the call';
    await Promise.resolve();
    assert.deepEqual(seen, ['first: right after the call']);
    assert.equal(await first, 1);

    // limitFunction() and map() call through the same path.
    const limited = limitFunction((n: number) => seen.push(`limited: ${state} ${n}`), {
      concurrency: 1,
    });
    const viaFunction = limited(1);
    const viaMap = run.map([2], (n) => seen.push(`mapped: ${state} ${n}`));
    state = 'later';
    await Promise.all([viaFunction, viaMap]);
    assert.deepEqual(seen.slice(1), ['limited: later 1', 'mapped: later 2']);
  });

  it('does not call the function of a call that waits before a slot frees', async () => {
    const run = limit(1);
    const gate = deferred();
    const calls: string[] = [];
    const first = run(() => {
      calls.push('first');
      return gate.promise;
    });
    const second = run(() => {
      calls.push('second');
    });
    await flush();
    assert.deepEqual(calls, ['first']);
    assert.deepEqual([run.activeCount, run.pendingCount], [1, 1]);
    gate.resolve();
    await Promise.all([first, second]);
    assert.deepEqual(calls, ['first', 'second']);
  });

  it('begins calls in the order they were made and never runs more than the limit, whatever the interleaving', async () => {
    type Op =
      | { call: 'sync' | 'async' | 'throw' }
      | { finish: number }
      | { concurrency: number }
      | { wait: 'microtask' | 'turn' };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ call: fc.constantFrom('sync' as const, 'async' as const, 'throw' as const) }),
      fc.record({ finish: fc.nat(20) }),
      fc.record({ concurrency: fc.integer({ min: 1, max: 4 }) }),
      fc.record({ wait: fc.constantFrom('microtask' as const, 'turn' as const) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(op, { maxLength: 40 }),
        async (initial, ops) => {
          const run = limit(initial);
          let concurrency = initial;
          let running = 0;
          const begun: number[] = [];
          const unfinished: { id: number; done: () => void }[] = [];
          const calls: Promise<unknown>[] = [];
          const call = (kind: 'sync' | 'async' | 'throw') => {
            const id = calls.length;
            const promise = run(() => {
              begun.push(id);
              // Lowering the limit lets what runs finish, but nothing begins until fewer run.
              assert.ok(
                running < concurrency,
                `call ${id} began with ${running} of ${concurrency} running`,
              );
              if (kind === 'throw') throw new Error(`${id}`);
              if (kind === 'sync') return id;
              running++;
              const task = deferred<number>();
              unfinished.push({
                id,
                done: () => {
                  running--;
                  task.resolve(id);
                },
              });
              return task.promise;
            });
            promise.catch(() => undefined);
            calls.push(promise);
          };
          for (const step of ops) {
            if ('call' in step) call(step.call);
            else if ('finish' in step) {
              if (unfinished.length > 0)
                unfinished.splice(step.finish % unfinished.length, 1)[0]!.done();
            } else if ('concurrency' in step) {
              concurrency = step.concurrency;
              run.concurrency = step.concurrency;
            } else if (step.wait === 'microtask') await Promise.resolve();
            else await flush();
            assert.ok(running <= run.activeCount, `${running} running, ${run.activeCount} active`);
          }
          while (unfinished.length > 0 || run.activeCount > 0 || run.pendingCount > 0) {
            unfinished.shift()?.done();
            await flush();
          }
          await Promise.allSettled(calls);
          assert.deepEqual(begun, range(calls.length), 'calls begin in the order they were made');
        },
      ),
      { numRuns: 300 },
    );
  });

  it("calls functions with free slots in the order of the calls, each in its caller's AsyncLocalStorage context", async () => {
    const als = new AsyncLocalStorage<string>();
    const run = limit(Infinity);
    const seen: string[] = [];
    const calls = ['a', 'b', 'c'].map((name) =>
      als.run(name, () =>
        run(() => {
          seen.push(`${name}:${als.getStore()}`);
        }),
      ),
    );
    await Promise.all(calls);
    assert.deepEqual(seen, ['a:a', 'b:b', 'c:c']);
  });

  it('turns a synchronous throw into a rejection and frees the slot for the next task', async () => {
    const run = limit(1);
    const error = new Error('thrown');
    const thrower = () => {
      throw error;
    };
    let call: Promise<never> | undefined;
    assert.doesNotThrow(() => {
      call = run(thrower);
    });
    await assert.rejects(call!, (e) => e === error);
    assert.equal(run.activeCount, 0);

    // The same for a task that throws when it is started from the queue.
    const gate = deferred();
    const holder = run(() => gate.promise);
    const queued = run(thrower);
    let ran = false;
    const after = run(() => {
      ran = true;
    });
    gate.resolve();
    await holder;
    await assert.rejects(queued, (e) => e === error);
    await after;
    assert.equal(ran, true);
    assert.equal(run.activeCount, 0);
  });

  it('runs each queued task in the AsyncLocalStorage context of the call that queued it', async () => {
    const als = new AsyncLocalStorage<string>();
    const run = limit(1);
    const gate = deferred();
    const holder = als.run('holder', () =>
      run(async () => {
        await gate.promise;
        return [als.getStore()];
      }),
    );
    const queued = ['a', 'b', 'c'].map((name) =>
      als.run(name, () =>
        run(async () => {
          const atStart = als.getStore();
          await flush();
          return [atStart, als.getStore()];
        }),
      ),
    );
    als.run('releaser', () => {
      gate.resolve();
    });
    assert.deepEqual(await holder, ['holder']);
    assert.deepEqual(await Promise.all(queued), [
      ['a', 'a'],
      ['b', 'b'],
      ['c', 'c'],
    ]);
  });

  describe('concurrency', () => {
    it('reads back the limit it was given, Infinity included', () => {
      assert.equal(limit(3).concurrency, 3);
      assert.equal(limit(Infinity).concurrency, Infinity);
    });

    it('starts waiting tasks when it is raised, without any task finishing', async () => {
      const run = limit(1);
      const t = tasks();
      const results = range(6).map((id) => run(t.task(id)));
      run.concurrency = 3;
      assert.equal(run.concurrency, 3);
      await flush();
      assert.deepEqual(t.started, [0, 1, 2]);
      assert.deepEqual([run.activeCount, run.pendingCount], [3, 3]);
      run.concurrency = Infinity;
      await flush();
      assert.deepEqual(t.started, range(6));
      assert.deepEqual([run.activeCount, run.pendingCount], [6, 0]);
      for (const id of range(6)) t.finish(id);
      await Promise.all(results);
    });

    it('lets running tasks finish when it is lowered, and starts no more until fewer run than the new limit', async () => {
      const run = limit(4);
      const t = tasks();
      const results = range(7).map((id) => run(t.task(id)));
      await flush();
      run.concurrency = 2;
      assert.equal(run.concurrency, 2);
      await flush();
      assert.deepEqual([run.activeCount, run.pendingCount], [4, 3]);

      t.finish(0);
      await flush();
      assert.deepEqual([run.activeCount, run.pendingCount], [3, 3]);
      t.finish(1);
      await flush();
      assert.deepEqual([run.activeCount, run.pendingCount], [2, 3]);
      assert.deepEqual(t.started, [0, 1, 2, 3]);
      t.finish(2);
      await flush();
      assert.deepEqual([run.activeCount, run.pendingCount], [2, 2]);
      assert.deepEqual(t.started, [0, 1, 2, 3, 4]);

      for (const id of range(7).slice(3)) {
        t.finish(id);
        await flush();
        assert.ok(t.inFlight <= 2);
      }
      assert.deepEqual(
        await Promise.all(results),
        range(7).map((id) => id * 10),
      );
    });
  });

  describe('clearQueue()', () => {
    it('rejects every waiting call with an AbortError and leaves the running ones alone', async () => {
      const run = limit(1);
      const t = tasks();
      const running = run(t.task(0));
      const waiting = [1, 2, 3].map((id) => run(t.task(id)));
      await flush();
      assert.deepEqual([run.activeCount, run.pendingCount], [1, 3]);

      run.clearQueue();
      assert.deepEqual([run.activeCount, run.pendingCount], [1, 0]);
      for (const call of waiting) {
        await assert.rejects(call, (error: Error) => {
          assert.equal(error.name, 'AbortError');
          return true;
        });
      }
      assert.equal(t.inFlight, 1, 'the running task was not cut short');
      t.finish(0);
      assert.equal(await running, 0);
      assert.deepEqual(t.started, [0], 'no cleared task was ever called');
      assert.equal(run.activeCount, 0);

      const later = run(t.task(4));
      await flush();
      t.finish(4);
      assert.equal(await later, 40, 'the limit is still usable');
    });

    it('causes no unhandled rejection when nobody kept the cleared promises, yet rejects one awaited later', async () => {
      const unhandled = watchUnhandled();
      try {
        const run = limit(1);
        const gate = deferred();
        const running = run(() => gate.promise);
        for (const id of range(3)) void run(() => id);
        const awaitedLater = run(() => 'never');
        run.clearQueue();
        await flush();
        await flush();
        assert.deepEqual(unhandled.reasons, []);
        await assert.rejects(awaitedLater, { name: 'AbortError' });
        gate.resolve();
        await running;
      } finally {
        unhandled.stop();
      }
    });

    it('also rejects the cleared calls made through map(), so the map rejects instead of hanging', async () => {
      const run = limit(1);
      const t = tasks();
      const mapped = run.map(range(3), (id) => t.task(id)());
      assert.deepEqual([run.activeCount, run.pendingCount], [1, 2]);
      run.clearQueue();
      await assert.rejects(mapped, { name: 'AbortError' });
      t.finish(0);
      await flush();
      assert.deepEqual([run.activeCount, run.pendingCount], [0, 0]);
      assert.deepEqual(t.started, [0]);
    });

    it('does nothing when nothing waits', async () => {
      const run = limit(2);
      const t = tasks();
      const running = run(t.task(0));
      await flush();
      run.clearQueue();
      assert.deepEqual([run.activeCount, run.pendingCount], [1, 0]);
      t.finish(0);
      assert.equal(await running, 0);
    });
  });

  describe('map()', () => {
    it('resolves to the results in input order, passing each item and its index', async () => {
      const run = limit(2);
      const gates = range(4).map(() => deferred());
      const calls: [string, number][] = [];
      const completed: string[] = [];
      let inFlight = 0;
      let peak = 0;
      const mapped = run.map(['a', 'b', 'c', 'd'], async (item, index) => {
        calls.push([item, index]);
        peak = Math.max(peak, ++inFlight);
        await gates[index]!.promise;
        inFlight--;
        completed.push(item);
        return `${item}${index}`;
      });
      for (const index of [3, 2, 1, 0]) {
        await flush();
        gates[index]!.resolve();
      }
      assert.deepEqual(await mapped, ['a0', 'b1', 'c2', 'd3']);
      assert.deepEqual(completed, ['b', 'c', 'd', 'a'], 'they finished out of order');
      assert.deepEqual(calls, [
        ['a', 0],
        ['b', 1],
        ['c', 2],
        ['d', 3],
      ]);
      assert.equal(peak, 2);
    });

    it('accepts any iterable: a Set, a generator, a string', async () => {
      const run = limit(2);
      function* numbers() {
        yield 1;
        yield 2;
        yield 3;
      }
      assert.deepEqual(await run.map(new Set([1, 2, 2, 3]), (n) => n * 2), [2, 4, 6]);
      assert.deepEqual(await run.map(numbers(), (n, i) => n + i), [1, 3, 5]);
      assert.deepEqual(await run.map('ab', (c) => c.toUpperCase()), ['A', 'B']);
      assert.deepEqual(await run.map([], () => 1), []);
    });

    it('rejects with the first error a mapper call fails with', async () => {
      const run = limit(2);
      const error = new Error('item 1');
      const mapped = run.map(range(4), (n) => {
        if (n === 1) throw error;
        return n;
      });
      await assert.rejects(mapped, (e) => e === error);
    });

    it('rejects with the error the iterable threw, and still runs the calls it had queued', async () => {
      const unhandled = watchUnhandled();
      try {
        const run = limit(1);
        const boom = new Error('iteration failed');
        function* items() {
          yield 'a';
          yield 'b';
          throw boom;
        }
        const gate = deferred();
        const calls: string[] = [];
        const mapped = run.map(items(), async (item) => {
          calls.push(item);
          if (item === 'a') await gate.promise;
          else throw new Error('a discarded result');
        });
        await assert.rejects(mapped, (e) => e === boom);
        assert.deepEqual(calls, ['a']);
        gate.resolve();
        await flush();
        await flush();
        assert.deepEqual(calls, ['a', 'b']);
        assert.deepEqual(unhandled.reasons, [], 'the discarded failure is not unhandled');
        assert.equal(run.activeCount, 0);
      } finally {
        unhandled.stop();
      }
    });

    it('shares the slots of its limit, also when taken off it', async () => {
      const run = limit(1);
      // map() does not use `this`; p-limit users take it off the limit like this.
      const { map } = run;
      const t = tasks();
      const direct = run(t.task(0));
      const mapped = map([1, 2], (id) => t.task(id)());
      assert.deepEqual([run.activeCount, run.pendingCount], [1, 2]);
      for (const id of [0, 1, 2]) {
        await flush();
        t.finish(id);
      }
      assert.deepEqual(await Promise.all([direct, mapped]), [0, [10, 20]]);
      assert.equal(t.peak, 1);
    });
  });

  describe('the options object', () => {
    it('takes { concurrency } like a number', async () => {
      const run = limit({ concurrency: 2 });
      assert.equal(run.concurrency, 2);
      const t = tasks();
      const results = range(3).map((id) => run(t.task(id)));
      assert.deepEqual([run.activeCount, run.pendingCount], [2, 1]);
      for (const id of range(3)) {
        await flush();
        t.finish(id);
      }
      assert.deepEqual(await Promise.all(results), [0, 10, 20]);
      assert.equal(t.peak, 2);
    });

    it('accepts rejectOnClear either way, and a cleared call rejects with an AbortError in both', async () => {
      for (const rejectOnClear of [true, false]) {
        const run = limit({ concurrency: 1, rejectOnClear });
        const gate = deferred();
        const running = run(() => gate.promise);
        const waiting = run(() => 'never');
        run.clearQueue();
        await assert.rejects(waiting, { name: 'AbortError' });
        gate.resolve();
        await running;
      }
    });
  });

  describe('bad input', () => {
    const message = (got: string) =>
      `Expected \`concurrency\` to be an integer >= 1 or Infinity, got ${got}`;

    it('refuses a bad concurrency with a RangeError that says what came', () => {
      assert.throws(() => limit(0), { name: 'RangeError', message: message('`0` (number)') });
      for (const [bad, got] of [
        [-1, '`-1` (number)'],
        [1.5, '`1.5` (number)'],
        [-Infinity, '`-Infinity` (number)'],
      ] as const) {
        assert.throws(() => limit(bad), { name: 'RangeError', message: message(got) });
      }
      assert.throws(() => limit({ concurrency: 0 }), {
        name: 'RangeError',
        message: message('`0` (number)'),
      });
    });

    it('refuses a concurrency of the wrong type with a TypeError', () => {
      for (const [bad, got] of [
        ['2', '`"2"` (string)'],
        [undefined, '`undefined` (undefined)'],
        [true, '`true` (boolean)'],
        [null, '`null` (null)'],
        [NaN, '`NaN` (number)'],
        [{ concurrency: undefined }, '`undefined` (undefined)'],
        [[], 'an array'],
        [[2], 'an array'],
        [{}, 'an object without `concurrency`'],
        [{ limit: 2 }, 'an object without `concurrency`'],
      ] as const) {
        assert.throws(() => limit(bad as never), { name: 'TypeError', message: message(got) });
        assert.throws(() => limitFunction(() => 1, bad as never), {
          name: 'TypeError',
          message: message(got),
        });
      }
      assert.throws(() => limit({ concurrency: 1, rejectOnClear: 'yes' as never }), {
        name: 'TypeError',
        message: 'Expected `rejectOnClear` to be a boolean, got `"yes"` (string)',
      });
    });

    it('refuses a bad new concurrency and keeps the old one', () => {
      const run = limit(3);
      assert.throws(() => (run.concurrency = 0), {
        name: 'RangeError',
        message: message('`0` (number)'),
      });
      assert.throws(() => (run.concurrency = '4' as never), { name: 'TypeError' });
      assert.equal(run.concurrency, 3);
    });

    it('rejects a call whose function is not a function, and runs on', async () => {
      const run = limit(1);
      await assert.rejects(run(42 as never), {
        name: 'TypeError',
        message: 'Expected `fn` to be a function, got `42` (number)',
      });
      assert.equal(run.activeCount, 0);
      assert.equal(await run(() => 'ok'), 'ok');
    });

    it('rejects map() with a mapper that is not a function, as p-limit does, instead of throwing', async () => {
      const run = limit(1);
      const mapped = run.map([1], 'f' as never);
      assert.ok(mapped instanceof Promise);
      await assert.rejects(mapped, {
        name: 'TypeError',
        message: 'Expected `fn` to be a function, got `"f"` (string)',
      });
    });
  });
});

describe('limitFunction()', () => {
  it('runs the function at most `concurrency` at a time, passing arguments and results through', async () => {
    const t = tasks();
    const seen: string[] = [];
    const limited = limitFunction(
      (id: number, label: string) => {
        seen.push(`${label}${id}`);
        return t.task(id)();
      },
      { concurrency: 2 },
    );
    const results = range(5).map((id) => limited(id, 'call'));
    await flush();
    assert.deepEqual(t.started, [0, 1]);
    const next = seeded(9);
    for (let done = 0; done < 5; done++) {
      await flush();
      assert.equal(t.inFlight, Math.min(2, 5 - done));
      const running = t.running();
      t.finish(running[Math.floor(next() * running.length)]!);
    }
    assert.deepEqual(await Promise.all(results), [0, 10, 20, 30, 40]);
    assert.deepEqual(seen, ['call0', 'call1', 'call2', 'call3', 'call4']);
    assert.equal(t.peak, 2);
  });

  it('rejects the waiting calls with an AbortError on its clearQueue(), not the running ones', async () => {
    const t = tasks();
    const limited = limitFunction((id: number) => t.task(id)(), { concurrency: 1 });
    const running = limited(0);
    const waiting = [limited(1), limited(2)];
    await flush();
    limited.clearQueue();
    for (const call of waiting) await assert.rejects(call, { name: 'AbortError' });
    t.finish(0);
    assert.equal(await running, 0);
    assert.deepEqual(t.started, [0]);
  });

  it('refuses a function that is not one, and a bad concurrency', () => {
    assert.throws(() => limitFunction(42 as never, { concurrency: 1 }), {
      name: 'TypeError',
      message: 'Expected `fn` to be a function, got `42` (number)',
    });
    assert.throws(() => limitFunction(() => 1, { concurrency: 0 }), {
      name: 'RangeError',
      message: 'Expected `concurrency` to be an integer >= 1 or Infinity, got `0` (number)',
    });
  });
});
