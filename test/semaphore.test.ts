import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { describe, it } from 'node:test';
import { ClosedError, Mutex, Semaphore, TimeoutError } from '../src/index.ts';
import { deferred, flush, ManualClock, state } from './_helpers/clock.ts';

describe('Semaphore', () => {
  it('leaves itself unchanged by a release that throws: the permit can still be released', async () => {
    const sem = new Semaphore(2);
    const a = await sem.acquire();
    const b = await sem.acquire();
    sem.release(1); // a misuse: gives back a permit it never took
    a.release();
    assert.equal(sem.held, 0);
    assert.throws(() => {
      b.release();
    }, RangeError);
    assert.equal(sem.held, 0, 'the throw changed nothing');
    assert.throws(
      () => {
        b.release();
      },
      RangeError,
      'b was not marked released by the throw',
    );
    const c = await sem.acquire();
    assert.equal(sem.held, 1);
    c.release();
    assert.equal(sem.held, 0);
  });

  it('refuses a weight above the capacity the same way on both paths', async () => {
    const sem = new Semaphore(2);
    await assert.rejects(sem.acquire({ weight: 3 }), RangeError);
    assert.throws(() => sem.tryAcquire(3), {
      name: 'RangeError',
      message: /^Expected `weight` to be at most the capacity 2, got `3` \(number\)/,
    });
  });

  it('describes itself like Semaphore(2/8 held, 5 waiting)', async () => {
    const sem = new Semaphore(8);
    await sem.acquire({ weight: 2 });
    assert.equal(sem.toString(), 'Semaphore(2/8 held, 0 waiting)');
    const blocked = Array.from({ length: 5 }, () => sem.acquire({ weight: 7 }));
    assert.equal(sem.toString(), 'Semaphore(2/8 held, 5 waiting)');
    sem.close();
    assert.equal(sem.toString(), 'Semaphore(2/8 held, 0 waiting, closed)');
    await Promise.allSettled(blocked);
  });

  it('counts what happened in stats()', async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(2, { clock });
    const a = await sem.acquire({ weight: 2 });
    const controller = new AbortController();
    const cancelled = Promise.allSettled([
      sem.acquire({ signal: controller.signal }),
      sem.acquire({ timeout: 10 }),
    ]);
    const waiting = sem.acquire({ weight: 2 });
    controller.abort();
    await clock.advance(10);
    await cancelled;
    assert.deepEqual(sem.stats(), {
      capacity: 2,
      held: 2,
      available: 0,
      waiting: 1,
      waitingWeight: 2,
      peakHeld: 2,
      granted: 1,
      aborted: 1,
      timedOut: 1,
      closed: false,
    });
    a.release();
    (await waiting).release();
    assert.equal(sem.stats().granted, 2);
  });

  it('throws when more is released than held', async () => {
    const sem = new Semaphore(3);
    await sem.acquire({ weight: 2 });
    assert.throws(() => {
      sem.release(3);
    }, /^RangeError: Cannot release 3 permits: only 2 held \(2\/3 held, 0 waiting\)$/);
    sem.release(2);
    assert.equal(sem.held, 0);
  });

  it('throws when a permit is released after its permits were given back another way', async () => {
    const sem = new Semaphore(1);
    const permit = await sem.acquire();
    sem.release();
    assert.throws(() => {
      permit.release();
    }, RangeError);
  });

  it('rejects a timeout of 0 at once unless a permit is free', async () => {
    const sem = new Semaphore(1);
    const permit = await sem.acquire({ timeout: 0 });
    await assert.rejects(sem.acquire({ timeout: 0 }), TimeoutError);
    assert.equal(sem.waiting, 0);
    permit.release();
  });

  it('says in a timeout error how the semaphore stood', async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(2, { clock });
    await sem.acquire({ weight: 2 });
    const others = Array.from({ length: 3 }, () => sem.acquire());
    const timed = assert.rejects(sem.acquire({ timeout: 500 }), {
      name: 'TimeoutError',
      message: 'acquire timed out after 500ms (2/2 held, 4 waiting)',
    });
    await clock.advance(500);
    await timed;
    sem.close();
    await Promise.allSettled(others);
  });

  it('rejects every waiter and later request on close(), and lets holders release', async () => {
    const sem = new Semaphore(1);
    const holder = await sem.acquire();
    const waiters = [sem.acquire(), sem.run(() => 'never')];
    sem.close();
    for (const waiter of waiters) await assert.rejects(waiter, ClosedError);
    await assert.rejects(sem.acquire(), ClosedError);
    await assert.rejects(
      sem.run(() => 1),
      ClosedError,
    );
    assert.throws(() => sem.tryAcquire(), ClosedError);
    holder.release();
    assert.equal(sem.held, 0);
  });

  it('rejects on close() with the reason given', async () => {
    const sem = new Semaphore(1);
    await sem.acquire();
    const waiter = sem.acquire();
    const reason = new Error('shutting down');
    sem.close(reason);
    await assert.rejects(waiter, (e) => e === reason);
  });

  it('rejects the waiters heavier than a lowered capacity, and serves the rest', async () => {
    const sem = new Semaphore(4);
    const holder = await sem.acquire({ weight: 4 });
    const heavy = sem.acquire({ weight: 3 });
    const light = sem.acquire({ weight: 1 });
    sem.capacity = 2;
    await assert.rejects(heavy, /at most the capacity 2, got `3`/);
    holder.release();
    (await light).release();
    assert.equal(sem.held, 0);
  });

  describe('run()', () => {
    it('releases when the task resolves, rejects or throws synchronously', async () => {
      const sem = new Semaphore(1);
      assert.equal(await sem.run(() => Promise.resolve(1)), 1);
      await assert.rejects(
        sem.run(() => Promise.reject(new Error('async'))),
        /async/,
      );
      await assert.rejects(
        sem.run(() => {
          throw new Error('sync');
        }),
        /sync/,
      );
      assert.equal(sem.run(() => 2) instanceof Promise, true);
      assert.equal(await sem.run(() => 2), 2);
      assert.equal(sem.held, 0);
    });

    it('has released the permit by the time the caller resumes', async () => {
      const sem = new Semaphore(1);
      await sem.run(async () => {
        await flush();
      });
      assert.equal(sem.held, 0);
    });

    it('reads a foreign thenable once', async () => {
      const sem = new Semaphore(1);
      let reads = 0;
      const thenable = {
        then(resolve?: ((value: number) => unknown) | null) {
          reads++;
          resolve?.(7);
          return thenable;
        },
      } as PromiseLike<number>;
      assert.equal(await sem.run(() => thenable), 7);
      assert.equal(reads, 1);
    });

    it('runs a queued task in the async context of the call that queued it', async () => {
      const sem = new Semaphore(1);
      const als = new AsyncLocalStorage<string>();
      const gate = deferred();
      const first = als.run('first', () => sem.run(() => gate.promise.then(() => als.getStore())));
      const second = als.run('second', () => sem.run(() => als.getStore()));
      gate.resolve();
      assert.deepEqual(await Promise.all([first, second]), ['first', 'second']);
    });

    it('bounds the wait with signal and timeout, not the task', async () => {
      const clock = new ManualClock();
      const sem = new Semaphore(1, { clock });
      const hold = await sem.acquire();
      const waited = assert.rejects(
        sem.run(() => 'late', { timeout: 100 }),
        TimeoutError,
      );
      await clock.advance(100);
      await waited;
      hold.release();
      const slow = deferred<string>();
      const running = sem.run(() => slow.promise, { timeout: 100 });
      await clock.advance(1000);
      assert.equal(await state(running), 'pending');
      slow.resolve('done');
      assert.equal(await running, 'done');
    });

    it('serves a long line of synchronously failing tasks without growing the stack', async () => {
      const sem = new Semaphore(1);
      const hold = await sem.acquire();
      const tasks = Array.from({ length: 100_000 }, () =>
        sem.run(() => {
          throw new Error('no');
        }),
      );
      hold.release();
      const results = await Promise.allSettled(tasks);
      assert.equal(results.filter((r) => r.status === 'rejected').length, 100_000);
      assert.equal(sem.held, 0);
    });
  });

  describe('bad input', () => {
    it('names the option, what was expected and what came', async () => {
      assert.throws(() => new Semaphore(0), {
        name: 'RangeError',
        message: 'Expected `permits` to be an integer >= 1 or Infinity, got `0` (number)',
      });
      assert.throws(() => new Semaphore('2' as never), {
        name: 'TypeError',
        message: 'Expected `permits` to be an integer >= 1 or Infinity, got `"2"` (string)',
      });
      assert.throws(() => new Semaphore(1.5), /got `1.5` \(number\)/);
      const sem = new Semaphore(2);
      await assert.rejects(
        sem.acquire({ weight: 0 }),
        /Expected `weight` to be an integer >= 1, got `0`/,
      );
      await assert.rejects(
        sem.acquire({ priority: NaN }),
        /Expected `priority` to be a finite number, got `NaN`/,
      );
      await assert.rejects(
        sem.acquire({ timeout: -1 }),
        /Expected `timeout` to be a number >= 0 or Infinity/,
      );
      await assert.rejects(
        sem.acquire({ signal: {} as AbortSignal }),
        /Expected `signal` to be an AbortSignal/,
      );
      await assert.rejects(
        sem.run(42 as never),
        /Expected `fn` to be a function, got `42` \(number\)/,
      );
      assert.throws(
        () => (sem.capacity = -1),
        /Expected `capacity` to be an integer >= 1 or Infinity/,
      );
      assert.equal(sem.capacity, 2);
    });
  });

  it('has no limit with Infinity permits', async () => {
    const sem = new Semaphore(Infinity);
    const permits = await Promise.all(
      Array.from({ length: 1000 }, () => sem.acquire({ weight: 1000 })),
    );
    assert.equal(sem.held, 1_000_000);
    assert.equal(sem.available, Infinity);
    for (const permit of permits) permit.release();
  });
});

describe('Mutex', () => {
  it('runs one caller at a time', async () => {
    const mutex = new Mutex();
    let inside = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        mutex.runExclusive(async () => {
          inside++;
          peak = Math.max(peak, inside);
          await flush();
          inside--;
        }),
      ),
    );
    assert.equal(peak, 1);
  });

  it('locks, reports isLocked, and refuses tryLock while held', async () => {
    const mutex = new Mutex();
    const lock = await mutex.lock();
    assert.equal(mutex.isLocked, true);
    assert.equal(mutex.tryLock(), undefined);
    lock.release();
    assert.equal(mutex.isLocked, false);
    const again = mutex.tryLock();
    assert.ok(again);
    again.release();
    assert.equal(mutex.toString(), 'Mutex(0/1 held, 0 waiting)');
  });

  it('refuses a new capacity', () => {
    assert.throws(() => ((new Mutex() as { capacity: number }).capacity = 2), /exactly one permit/);
  });
});
