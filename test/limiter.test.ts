/**
 * `Limiter`: concurrency, rate windows, retries, honest timeouts, priorities, a bounded queue,
 * pause, close and events, composed. Time is a `ManualClock` and tasks are deferred promises
 * finished by hand, so every instant is named and checked; the only real time is in the two
 * child processes at the end, which check what a fake clock cannot: whether the process stays
 * alive or exits.
 */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { inspect, promisify } from 'node:util';
import {
  ClosedError,
  Limiter,
  QueueFullError,
  RetryError,
  Semaphore,
  TimeoutError,
  type Gate,
  type Permit,
  type RetryInfo,
  type TaskContext,
  type TaskInfo,
} from '../src/index.ts';
import { deferred, flush, ManualClock, state } from './_helpers/clock.ts';

type Deferred = ReturnType<typeof deferred<string>>;

interface Run {
  name: string;
  /** The clock instant the attempt started. */
  at: number;
  context: TaskContext;
  done: Deferred;
}

/** Tasks that record each start and run until the test finishes or fails them. */
class Tasks {
  readonly runs: Run[] = [];
  readonly #clock: ManualClock;

  constructor(clock: ManualClock) {
    this.#clock = clock;
  }

  /** A task named `name`: each attempt records its start and waits for `finish` or `fail`. */
  task(name: string): (context: TaskContext) => Promise<string> {
    return (context) => {
      const done = deferred<string>();
      this.runs.push({ name, at: this.#clock.now(), context, done });
      return done.promise;
    };
  }

  /** Names in the order their attempts started. */
  get started(): string[] {
    return this.runs.map((run) => run.name);
  }

  /**
   * [name, start instant] in start order, rounded to the microsecond: a spaced rate's interval is
   * a hair (a billionth) longer than interval / limit.
   */
  get instants(): [string, number][] {
    return this.runs.map((run) => [run.name, Math.round(run.at * 1000) / 1000]);
  }

  /** The latest attempt of `name`. */
  run(name: string): Run {
    const run = this.runs.findLast((r) => r.name === name);
    assert.ok(run, `${name} has not started`);
    return run;
  }

  finish(name: string): void {
    this.run(name).done.resolve(name);
  }

  fail(name: string, error: Error): void {
    this.run(name).done.reject(error);
  }
}

interface Outcome<T> {
  status: 'pending' | 'fulfilled' | 'rejected';
  value?: T;
  error?: unknown;
}

/** Follows a promise's outcome (and handles its rejection). Read it after a flush. */
function watch<T>(promise: Promise<T>): Outcome<T> {
  const outcome: Outcome<T> = { status: 'pending' };
  promise.then(
    (value) => {
      outcome.status = 'fulfilled';
      outcome.value = value;
    },
    (error: unknown) => {
      outcome.status = 'rejected';
      outcome.error = error;
    },
  );
  return outcome;
}

describe('Limiter', () => {
  describe('concurrency and rate', () => {
    it('starts tasks at the instants a concurrency of 2 and a rate of 10/s allow together', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 2, rate: '10/s', clock });
      const t = new Tasks(clock);
      const results = ['a', 'b', 'c', 'd', 'e'].map((name) =>
        watch(limiter.schedule(t.task(name))),
      );
      await flush();
      assert.deepEqual(t.instants, [['a', 0]], 't=0: b waits for the rate');
      await clock.advanceTo(150);
      assert.deepEqual(t.started, ['a', 'b'], 't=100: b; c would be allowed at 200 but 2 run');
      assert.equal(t.instants[1]![1], 100);
      t.finish('a');
      await clock.advanceTo(199);
      assert.deepEqual(t.started, ['a', 'b'], 't=150: a slot is free, the rate says 200');
      await clock.advanceTo(400);
      assert.deepEqual(t.instants.at(-1), ['c', 200]);
      assert.equal(limiter.activeCount, 2);
      t.finish('b');
      await flush();
      assert.deepEqual(t.instants.at(-1), ['d', 400], 't=400: the rate allowed d since 300');
      t.finish('c');
      await clock.advanceTo(499);
      assert.equal(t.runs.length, 4, 't=400: a slot is free, the rate says 500');
      await clock.advanceTo(600);
      assert.deepEqual(t.instants.at(-1), ['e', 500]);
      t.finish('d');
      t.finish('e');
      await flush();
      assert.deepEqual(
        results.map((r) => r.value),
        ['a', 'b', 'c', 'd', 'e'],
      );
      assert.equal(clock.pending, 0);
    });

    it('keeps several rates at once, starting only when every one allows it', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ rate: ['2/s', '3/min'], window: 'sliding', clock });
      const starts: number[] = [];
      const all = Promise.all(
        [1, 2, 3, 4].map(() =>
          limiter.schedule(() => {
            starts.push(clock.now());
          }),
        ),
      );
      await clock.advanceTo(59_999);
      assert.deepEqual(starts, [0, 0, 1000], '2/s admits two at once; 3/min holds the fourth');
      await clock.advanceTo(60_000);
      await all;
      assert.deepEqual(starts, [0, 0, 1000, 60_000]);
    });

    it('lets a burst start at once, then spaces the rest one interval apart', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ rate: '10/s', burst: 3, clock });
      const starts: number[] = [];
      const all = Promise.all(
        [1, 2, 3, 4, 5].map(() =>
          limiter.schedule(() => {
            starts.push(Math.round(clock.now()));
          }),
        ),
      );
      await clock.advance(1000);
      await all;
      assert.deepEqual(starts, [0, 0, 0, 100, 200]);
    });

    it('starts waiting tasks at once when the concurrency is raised, and lets running ones finish when it is lowered', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      const results = ['a', 'b', 'c', 'd', 'e'].map((name) =>
        watch(limiter.schedule(t.task(name))),
      );
      await flush();
      assert.deepEqual(t.started, ['a']);
      limiter.concurrency = 3;
      assert.deepEqual(t.started, ['a', 'b', 'c'], 'started by the setter itself');
      assert.equal(limiter.concurrency, 3);
      assert.equal(limiter.stats().concurrency, 3);
      limiter.concurrency = 1;
      assert.equal(limiter.activeCount, 3, 'running tasks keep their slots');
      t.finish('a');
      t.finish('b');
      await flush();
      assert.deepEqual(t.started, ['a', 'b', 'c'], 'c still runs: that is the new concurrency');
      t.finish('c');
      await flush();
      assert.deepEqual(t.started, ['a', 'b', 'c', 'd']);
      t.finish('d');
      await flush();
      t.finish('e');
      await flush();
      assert.ok(results.every((r) => r.status === 'fulfilled'));
      assert.throws(
        () => (limiter.concurrency = 0),
        /^RangeError: Expected `concurrency` to be an integer >= 1 or Infinity, got `0` \(number\)$/,
      );
      assert.equal(limiter.concurrency, 1);
    });

    it('rejects a retry heavier than a lowered concurrency rather than leaving it in line forever', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 3,
        retry: { retries: 1, minDelay: 100, jitter: 'none' },
        clock,
      });
      let attempts = 0;
      const result = watch(
        limiter.schedule(
          () => {
            attempts++;
            throw new Error('flaky');
          },
          { weight: 3 },
        ),
      );
      await flush();
      limiter.concurrency = 2;
      await clock.advanceTo(1000);
      assert.equal(attempts, 1, 'weight 3 can never run under a concurrency of 2');
      assert.ok(result.error instanceof RangeError, `the task is ${result.status}`);
      assert.equal(limiter.isIdle, true);
    });

    it("spaces starts from when the task's synchronous part has run, not from its booking", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ rate: '10/s', clock });
      const instants: number[] = [];
      const tasks = Array.from({ length: 3 }, () =>
        limiter.schedule(() => {
          instants.push(clock.now());
          clock.jumpTo(clock.now() + 30); // a long synchronous start (or a preemption)
          return 'ok';
        }),
      );
      await clock.advanceTo(1000);
      await Promise.all(tasks);
      // Each start is counted from the end of its synchronous part: 0+30, then 130+30, ...
      assert.deepEqual(
        instants.map((t) => Math.round(t)),
        [0, 130, 260],
      );
    });

    it('changes the rate at runtime: the next start is due one new interval after the last', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ rate: '1/s', clock });
      const t = new Tasks(clock);
      for (const name of ['a', 'b', 'c']) void limiter.schedule(t.task(name));
      await clock.advanceTo(200);
      assert.deepEqual(t.started, ['a'], 'b waits until 1000 under 1/s');
      limiter.rate = '10/s';
      assert.deepEqual(limiter.rate, ['10/s']);
      assert.deepEqual(limiter.stats().rate, ['10/s']);
      await flush();
      assert.deepEqual(t.instants, [
        ['a', 0],
        ['b', 200],
      ]);
      await clock.advanceTo(301);
      assert.deepEqual(t.instants.at(-1), ['c', 300]);
      for (const name of ['d', 'e']) void limiter.schedule(t.task(name));
      await clock.advanceTo(350);
      assert.equal(t.runs.length, 3, 'd waits until 400');
      assert.equal(clock.pending, 1, 'the rate timer for d');
      limiter.rate = undefined;
      await flush();
      assert.deepEqual(t.instants.slice(3), [
        ['d', 350],
        ['e', 350],
      ]);
      assert.deepEqual(limiter.rate, []);
      assert.equal(clock.pending, 0, 'no rate, no timer');
      for (const name of ['a', 'b', 'c', 'd', 'e']) t.finish(name);
      await limiter.onIdle();
    });
  });

  describe('priorities and weights', () => {
    it('starts higher priorities first, and is FIFO within a priority', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      const names: [string, number][] = [
        ['blocker', 0],
        ['low1', -1],
        ['mid1', 0],
        ['high1', 5],
        ['mid2', 0],
        ['high2', 5],
        ['low2', -1],
      ];
      const all = Promise.all(
        names.map(([name, priority]) => limiter.schedule(t.task(name), { priority })),
      );
      for (let i = 0; i < names.length; i++) {
        await flush();
        t.finish(t.started.at(-1)!);
      }
      await all;
      assert.deepEqual(t.started, ['blocker', 'high1', 'high2', 'mid1', 'mid2', 'low1', 'low2']);
    });

    it('lets a waiting heavy task hold back a later light one that would fit (no barging)', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 3, clock });
      const t = new Tasks(clock);
      const all = Promise.all([
        limiter.schedule(t.task('a'), { weight: 2 }),
        limiter.schedule(t.task('heavy'), { weight: 2 }),
        limiter.schedule(t.task('light'), { weight: 1 }),
      ]);
      await flush();
      assert.deepEqual(t.started, ['a'], 'light would fit beside a, but heavy is ahead of it');
      assert.equal(limiter.tryAcquire(), undefined, 'tryAcquire does not barge either');
      t.finish('a');
      await flush();
      assert.deepEqual(t.started, ['a', 'heavy', 'light'], 'weights 2 + 1 fill the 3');
      t.finish('heavy');
      t.finish('light');
      await all;
    });

    it('rejects at once a weight above the concurrency or above what the rate admits at once', async () => {
      const limiter = new Limiter({ concurrency: 2, rate: '10/s', burst: 3 });
      let called = false;
      const fn = () => {
        called = true;
      };
      await assert.rejects(limiter.schedule(fn, { weight: 3 }), {
        name: 'RangeError',
        message:
          'Expected `weight` to be at most the capacity 2, got `3` (number): it could never be granted',
      });
      const rated = new Limiter({ rate: '10/s', burst: 3 });
      await assert.rejects(
        rated.schedule(fn, { weight: 4 }),
        /^RangeError: Expected `weight` to be at most 3, the most the rate admits at once, got `4`/,
      );
      assert.equal(called, false);
      assert.equal(limiter.pendingCount + rated.pendingCount, 0);
    });
  });

  describe('the task context', () => {
    it('gives each attempt its number and a signal of its own, left unaborted when it simply fails', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        retry: { retries: 2, minDelay: 10, jitter: 'none' },
        clock,
      });
      const contexts: TaskContext[] = [];
      const result = limiter.schedule((context) => {
        contexts.push(context);
        if (context.attempt < 3) throw new Error(`attempt ${context.attempt}`);
        return 'third time lucky';
      });
      await flush();
      await clock.advance(100);
      assert.equal(await result, 'third time lucky');
      assert.deepEqual(
        contexts.map((c) => c.attempt),
        [1, 2, 3],
      );
      assert.equal(new Set(contexts.map((c) => c.signal)).size, 3);
      assert.ok(contexts.every((c) => !c.signal.aborted));
    });

    it("aborts the task's signal with the caller's reason when the caller aborts", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ clock });
      const t = new Tasks(clock);
      const controller = new AbortController();
      const result = watch(limiter.schedule(t.task('a'), { signal: controller.signal }));
      await flush();
      const { signal } = t.run('a').context;
      assert.equal(signal.aborted, false);
      const reason = new Error('never mind');
      controller.abort(reason);
      assert.equal(signal.aborted, true);
      assert.equal(signal.reason, reason);
      await flush();
      assert.equal(result.error, reason);
      t.finish('a');
      await limiter.onIdle();
    });
  });

  describe('retries', () => {
    it('backs off min(maxDelay, minDelay * factor^(n-1)) jittered by the injected random, and says so in retry events', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        retry: { retries: 3, minDelay: 100, factor: 2, maxDelay: 300, random: () => 0.5 },
        clock,
      });
      const starts: [number, number][] = [];
      const retries: [TaskInfo, RetryInfo][] = [];
      limiter.on('retry', (task, info) => {
        retries.push([task, info]);
      });
      const result = watch(
        limiter.schedule(({ attempt }) => {
          starts.push([attempt, clock.now()]);
          if (attempt < 4) throw new Error(`attempt ${attempt}`);
          return 'done';
        }),
      );
      await flush();
      await clock.advanceTo(1000);
      assert.equal(result.value, 'done');
      // Full jitter of 0.5: half of 100, 200, then 300 (400 capped at maxDelay).
      assert.deepEqual(starts, [
        [1, 0],
        [2, 50],
        [3, 150],
        [4, 300],
      ]);
      assert.deepEqual(
        retries.map(([task, info]) => [task.id, task.attempt, info.attempt, info.delay]),
        [
          [1, 1, 1, 50],
          [1, 2, 2, 100],
          [1, 3, 3, 150],
        ],
      );
      assert.match((retries[2]![1].error as Error).message, /^attempt 3$/);
      assert.equal(limiter.stats().retries, 3);
      assert.equal(clock.pending, 0);
    });

    it('rejects with a RetryError naming the attempts and carrying the last error when the retries run out', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ retry: { retries: 2, minDelay: 10, jitter: 'none' }, clock });
      const errors = [new Error('boom 1'), new Error('boom 2'), new Error('boom 3')];
      const result = watch(
        limiter.schedule(({ attempt }) => {
          throw errors[attempt - 1]!;
        }),
      );
      await flush();
      await clock.advance(100);
      assert.ok(result.error instanceof RetryError);
      assert.equal(result.error.message, 'failed after 3 attempts: boom 3');
      assert.equal(result.error.attempts, 3);
      assert.equal(result.error.cause, errors[2]);
      assert.equal(limiter.stats().failed, 1);
    });

    it('rejects with the error itself, without retrying, when retryIf refuses it', async () => {
      const clock = new ManualClock();
      const fatal = new Error('fatal');
      const limiter = new Limiter({
        retry: { retries: 5, minDelay: 10, retryIf: (error) => error !== fatal },
        clock,
      });
      let attempts = 0;
      const result = limiter.schedule(() => {
        attempts++;
        throw fatal;
      });
      await assert.rejects(result, (error) => error === fatal);
      assert.equal(attempts, 1);
      assert.equal(limiter.stats().retries, 0);
    });

    it('holds no slot while backing off, and puts the retry at the back of the line', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 1,
        retry: { retries: 1, minDelay: 100, jitter: 'none' },
        clock,
      });
      const t = new Tasks(clock);
      const all = Promise.all(['a', 'b', 'c'].map((name) => limiter.schedule(t.task(name))));
      await flush();
      t.fail('a', new Error('flaky'));
      await flush();
      assert.deepEqual(t.started, ['a', 'b'], 'b takes the slot a gave back');
      assert.equal(limiter.stats().retrying, 1);
      await clock.advanceTo(100);
      assert.equal(limiter.stats().retrying, 0);
      assert.equal(limiter.stats().pending, 2, "a's retry waits behind c");
      t.finish('b');
      await flush();
      t.finish('c');
      await flush();
      assert.deepEqual(t.instants, [
        ['a', 0],
        ['b', 0],
        ['c', 100],
        ['a', 100],
      ]);
      t.finish('a');
      assert.deepEqual(await all, ['a', 'b', 'c']);
    });

    it('waits at least as long as the server asked (retryAfterMs)', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ retry: { retries: 1, minDelay: 10, jitter: 'none' }, clock });
      const starts: number[] = [];
      const result = limiter.schedule(({ attempt }) => {
        starts.push(clock.now());
        if (attempt === 1) throw Object.assign(new Error('429'), { retryAfterMs: 1500 });
        return 'ok';
      });
      await flush();
      await clock.advanceTo(1499);
      assert.deepEqual(starts, [0]);
      await clock.advanceTo(1500);
      assert.equal(await result, 'ok');
      assert.deepEqual(starts, [0, 1500]);
    });
  });

  describe('honest timeouts', () => {
    it('rejects a timed-out task at once with a TimeoutError, but keeps its slot until the task really settles', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, timeout: 100, clock });
      const t = new Tasks(clock);
      const slow = watch(limiter.schedule(t.task('slow')));
      const next = watch(limiter.schedule(t.task('next')));
      await clock.advanceTo(99);
      assert.equal(slow.status, 'pending');
      assert.equal(t.run('slow').context.signal.aborted, false);
      await clock.advanceTo(100);
      assert.equal(slow.status, 'rejected');
      assert.ok(slow.error instanceof TimeoutError);
      assert.equal(slow.error.message, 'the task timed out after 100ms');
      assert.equal(slow.error.timeout, 100);
      const { signal } = t.run('slow').context;
      assert.equal(signal.aborted, true);
      assert.equal(signal.reason, slow.error, 'the task sees the same TimeoutError');
      assert.deepEqual(t.started, ['slow'], 'the slot is still held: next does not start');
      const stats = limiter.stats();
      assert.equal(stats.active, 1);
      assert.equal(stats.timedOutActive, 1);
      assert.equal(stats.timedOut, 1);
      assert.equal(stats.failed, 1);
      assert.equal(stats.pending, 1);
      assert.equal(limiter.isIdle, false);
      await clock.advanceTo(5000);
      assert.deepEqual(t.started, ['slow'], 'however long it takes');
      t.finish('slow');
      await flush();
      assert.deepEqual(t.instants, [
        ['slow', 0],
        ['next', 5000],
      ]);
      assert.equal(slow.status, 'rejected', 'a late result changes nothing');
      assert.equal(limiter.stats().timedOutActive, 0);
      assert.equal(limiter.stats().active, 1);
      t.finish('next');
      await flush();
      assert.equal(next.value, 'next');
      assert.equal(limiter.stats().completed, 1);
      assert.equal(clock.pending, 0);
    });

    it("takes a task's own timeout over the limiter's", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ timeout: 100, clock });
      const t = new Tasks(clock);
      const long = watch(limiter.schedule(t.task('long'), { timeout: 300 }));
      const never = watch(limiter.schedule(t.task('never'), { timeout: Infinity }));
      await clock.advanceTo(299);
      assert.equal(long.status, 'pending');
      await clock.advanceTo(300);
      assert.ok(long.error instanceof TimeoutError);
      assert.match(long.error.message, /after 300ms/);
      await clock.advanceTo(100_000);
      assert.equal(never.status, 'pending');
      assert.equal(clock.pending, 0);
      t.finish('long');
      t.finish('never');
      await limiter.onIdle();
      assert.equal(never.value, 'never');
    });

    it('times out each attempt at its own instant when their timeouts differ, whatever order they started in', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ timeout: 100, clock });
      const t = new Tasks(clock);
      const timedOut: [string, number][] = [];
      const start = (name: string, timeout: number) => {
        limiter.schedule(t.task(name), { timeout }).catch((error: unknown) => {
          assert.ok(error instanceof TimeoutError);
          timedOut.push([name, clock.now()]);
        });
      };
      start('a', 300); // due at t=300
      await clock.advanceTo(10);
      start('b', 100); // due at t=110, before a
      await clock.advanceTo(20);
      start('c', 200); // due at t=220, between b and a
      start('d', 90); // due at t=110, with b, after it
      const instants = [109, 110, 219, 220, 299, 300];
      const seen: string[][] = [];
      for (const at of instants) {
        await clock.advanceTo(at);
        seen.push(timedOut.map(([name, when]) => `${name}@${when}`));
      }
      assert.deepEqual(seen, [
        [],
        ['b@110', 'd@110'],
        ['b@110', 'd@110'],
        ['b@110', 'd@110', 'c@220'],
        ['b@110', 'd@110', 'c@220'],
        ['b@110', 'd@110', 'c@220', 'a@300'],
      ]);
      for (const name of ['a', 'b', 'c', 'd']) t.finish(name);
      await limiter.onIdle();
      assert.equal(clock.pending, 0);
    });

    it('retries a timed-out attempt in a slot of its own, after the timed-out one settles', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 1,
        timeout: 100,
        retry: { retries: 1, minDelay: 10, jitter: 'none' },
        clock,
      });
      const t = new Tasks(clock);
      const retried: unknown[] = [];
      limiter.on('retry', (_task, info) => {
        retried.push(info.error);
      });
      const result = watch(limiter.schedule(t.task('a')));
      await clock.advanceTo(500);
      assert.equal(retried.length, 1);
      assert.ok(retried[0] instanceof TimeoutError);
      assert.equal(t.runs.length, 1, 'the retry waits: attempt 1 still holds the only slot');
      assert.equal(limiter.stats().pending, 1);
      t.runs[0]!.done.resolve('too late');
      await flush();
      assert.deepEqual(t.instants, [
        ['a', 0],
        ['a', 500],
      ]);
      assert.equal(t.run('a').context.attempt, 2);
      t.finish('a');
      await flush();
      assert.equal(result.value, 'a');
    });

    it('clears the timeout timer of a task that settles in time', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ timeout: 1000, clock });
      const t = new Tasks(clock);
      const result = limiter.schedule(t.task('quick'));
      await flush();
      assert.equal(clock.pending, 1);
      t.finish('quick');
      assert.equal(await result, 'quick');
      assert.equal(clock.pending, 0);
      await clock.advanceTo(5000);
      assert.equal(limiter.stats().timedOut, 0);
    });
  });

  describe('caller abort', () => {
    it("rejects a queued task with the signal's reason at once, and the line behind it moves up", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      const controller = new AbortController();
      const a = watch(limiter.schedule(t.task('a')));
      const b = watch(limiter.schedule(t.task('b'), { signal: controller.signal }));
      const c = watch(limiter.schedule(t.task('c')));
      const reason = new Error('changed my mind');
      controller.abort(reason);
      await flush();
      assert.equal(b.error, reason);
      assert.equal(limiter.stats().pending, 1);
      t.finish('a');
      await flush();
      assert.deepEqual(t.started, ['a', 'c'], 'b never runs');
      t.finish('c');
      await flush();
      assert.deepEqual([a.status, c.status], ['fulfilled', 'fulfilled']);
    });

    it('rejects a running task at once when the caller aborts, and keeps its slot until it settles', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      const controller = new AbortController();
      const a = watch(limiter.schedule(t.task('a'), { signal: controller.signal }));
      const b = watch(limiter.schedule(t.task('b')));
      await flush();
      controller.abort(new Error('stop'));
      await flush();
      assert.match(String(a.error), /stop/);
      assert.equal(t.run('a').context.signal.aborted, true);
      assert.deepEqual(t.started, ['a'], 'a still holds the slot');
      assert.equal(limiter.activeCount, 1);
      t.finish('a');
      await flush();
      assert.deepEqual(t.started, ['a', 'b']);
      assert.equal(a.status, 'rejected');
      t.finish('b');
      await flush();
      assert.equal(b.value, 'b');
    });

    it('stops a task that is backing off when the caller aborts: no retry, no timer left', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ retry: { retries: 3, minDelay: 1000 }, clock });
      const controller = new AbortController();
      let attempts = 0;
      const result = watch(
        limiter.schedule(
          () => {
            attempts++;
            throw new Error('flaky');
          },
          { signal: controller.signal },
        ),
      );
      await flush();
      assert.equal(limiter.stats().retrying, 1);
      assert.equal(clock.pending, 1, 'the backoff timer');
      const reason = new Error('give up');
      controller.abort(reason);
      await flush();
      assert.equal(result.error, reason);
      assert.equal(clock.pending, 0);
      assert.equal(limiter.stats().retrying, 0);
      assert.equal(limiter.isIdle, true);
      await clock.advance(10_000);
      assert.equal(attempts, 1);
    });

    it('rejects at once, without calling the task, when the signal has already aborted', async () => {
      const limiter = new Limiter({ concurrency: 1 });
      const reason = new Error('too late');
      let called = false;
      await assert.rejects(
        limiter.schedule(
          () => {
            called = true;
          },
          { signal: AbortSignal.abort(reason) },
        ),
        (error) => error === reason,
      );
      assert.equal(called, false);
      assert.equal(limiter.isIdle, true);
    });
  });

  describe('a bounded queue', () => {
    it("rejects a task with a QueueFullError when the line is full and overflow is 'reject'", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 2, overflow: 'reject', clock });
      const t = new Tasks(clock);
      const failed: [TaskInfo, unknown][] = [];
      limiter.on('failed', (task, error) => {
        failed.push([task, error]);
      });
      const queued = ['a', 'b', 'c'].map((name) => watch(limiter.schedule(t.task(name))));
      const refused = watch(limiter.schedule(t.task('d')));
      await flush();
      assert.ok(refused.error instanceof QueueFullError);
      assert.equal(refused.error.message, 'the queue is full (maxQueue 2)');
      assert.equal(refused.error.code, 'ERR_SLUICE_QUEUE_FULL');
      assert.deepEqual(failed, [[{ id: 4, attempt: 0, priority: 0, weight: 1 }, refused.error]]);
      assert.equal(limiter.stats().pending, 2);
      t.finish('a');
      await flush();
      const later = watch(limiter.schedule(t.task('e')));
      for (const name of ['b', 'c', 'e']) {
        await flush();
        t.finish(name);
      }
      await limiter.onIdle();
      assert.ok([...queued, later].every((r) => r.status === 'fulfilled'));
      assert.deepEqual(t.started, ['a', 'b', 'c', 'e']);
    });

    it("drops the oldest task of the lowest priority for a new one when overflow is 'drop-oldest'", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 2, overflow: 'drop-oldest', clock });
      const t = new Tasks(clock);
      const log: string[] = [];
      limiter.on('dropped', (task) => {
        log.push(`dropped ${task.id} ${JSON.stringify(task)}`);
      });
      limiter.on('failed', (task) => {
        log.push(`failed ${task.id}`);
      });
      const a = watch(limiter.schedule(t.task('a')));
      const high = watch(limiter.schedule(t.task('high'), { priority: 1 }));
      const old = watch(limiter.schedule(t.task('old')));
      const newer = watch(limiter.schedule(t.task('newer')));
      await flush();
      assert.ok(old.error instanceof QueueFullError);
      assert.equal(
        old.error.message,
        'dropped from a full queue (maxQueue 2) to make room for a newer task',
      );
      assert.deepEqual(log, ['dropped 3 {"id":3,"attempt":0,"priority":0,"weight":1}', 'failed 3']);
      const newest = watch(limiter.schedule(t.task('newest')));
      await flush();
      assert.ok(newer.error instanceof QueueFullError, 'the lowest priority goes first');
      assert.equal(high.status, 'pending');
      assert.equal(limiter.stats().dropped, 2);
      for (const name of ['a', 'high', 'newest']) {
        await flush();
        t.finish(name);
      }
      await limiter.onIdle();
      assert.deepEqual(t.started, ['a', 'high', 'newest']);
      assert.deepEqual(
        [a, high, newest].map((r) => r.status),
        ['fulfilled', 'fulfilled', 'fulfilled'],
      );
    });

    it("parks a task when the line is full and overflow is 'wait', and lets it join when room frees", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 1, clock });
      const t = new Tasks(clock);
      const results = ['a', 'b', 'c'].map((name) => watch(limiter.schedule(t.task(name))));
      await flush();
      assert.deepEqual(
        [limiter.stats().pending, limiter.stats().waitingForRoom, limiter.pendingCount],
        [1, 1, 2],
      );
      const room = watch(limiter.onRoom());
      await flush();
      assert.equal(room.status, 'pending');
      t.finish('a');
      await flush();
      assert.deepEqual(t.started, ['a', 'b']);
      assert.deepEqual(
        [limiter.stats().pending, limiter.stats().waitingForRoom],
        [1, 0],
        'c took the room b left',
      );
      assert.equal(room.status, 'pending', 'so there is still no room for one more');
      t.finish('b');
      await flush();
      assert.deepEqual(t.started, ['a', 'b', 'c']);
      assert.equal(room.status, 'fulfilled', 'c left the line: room for one');
      t.finish('c');
      await flush();
      assert.deepEqual(t.started, ['a', 'b', 'c']);
      assert.ok(results.every((r) => r.status === 'fulfilled'));
      assert.equal(await state(limiter.onRoom()), 'fulfilled', 'room now: resolves at once');
    });

    it('with maxQueue 0, starts a task at once when a slot is free, and refuses only a task that would wait', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 0, overflow: 'reject', clock });
      const t = new Tasks(clock);
      const first = watch(limiter.schedule(t.task('first')));
      const second = watch(limiter.schedule(t.task('second')));
      await flush();
      assert.deepEqual(t.started, ['first'], 'nothing waits in line for a free slot');
      assert.ok(second.error instanceof QueueFullError);
      t.finish('first');
      await flush();
      assert.equal(first.value, 'first');
    });

    it("with maxQueue 0 and overflow 'wait', starts a parked task once a slot frees", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 0, clock });
      const t = new Tasks(clock);
      const first = watch(limiter.schedule(t.task('first')));
      const second = watch(limiter.schedule(t.task('second')));
      await flush();
      t.run('first');
      t.finish('first');
      await flush();
      t.finish('second');
      await flush();
      assert.deepEqual([first.status, second.status], ['fulfilled', 'fulfilled']);
      await limiter.close({ deadline: 0 });
    });

    it('stops counting a parked task once its caller aborts it', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 1, clock });
      const t = new Tasks(clock);
      const controller = new AbortController();
      void limiter.schedule(t.task('a'));
      void limiter.schedule(t.task('b'));
      const parked = watch(limiter.schedule(t.task('c'), { signal: controller.signal }));
      controller.abort(new Error('no longer needed'));
      await flush();
      assert.equal(parked.status, 'rejected');
      assert.equal(limiter.stats().waitingForRoom, 0);
      assert.equal(limiter.pendingCount, 1);
      assert.equal(limiter.toString(), 'Limiter(1/1 active, 1 pending)');
      t.finish('a');
      await flush();
      t.finish('b');
      await limiter.onIdle();
      assert.deepEqual(t.started, ['a', 'b']);
    });

    it('lets a parked task join the line when a lowered concurrency rejects the queued one', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 3, maxQueue: 1, clock });
      const t = new Tasks(clock);
      void limiter.schedule(t.task('a'), { weight: 3 });
      const heavy = watch(limiter.schedule(t.task('heavy'), { weight: 3 }));
      const parked = watch(limiter.schedule(t.task('parked')));
      limiter.concurrency = 2;
      await flush();
      assert.ok(heavy.error instanceof RangeError, 'weight 3 can never run under 2');
      t.finish('a');
      await flush();
      assert.deepEqual(t.started, ['a', 'parked']);
      t.finish('parked');
      await flush();
      assert.equal(parked.value, 'parked');
      await limiter.close({ deadline: 0 });
    });
  });

  describe('pause', () => {
    it('starts nothing while paused, runs no timer for it, and starts the waiting tasks on resume()', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 2, clock });
      const t = new Tasks(clock);
      void limiter.schedule(t.task('running'));
      limiter.pause();
      const results = ['a', 'b', 'c'].map((name) => watch(limiter.schedule(t.task(name))));
      assert.equal(limiter.isPaused, true);
      assert.equal(limiter.stats().paused, true);
      assert.equal(limiter.toString(), 'Limiter(1/2 active, 3 pending, paused)');
      assert.equal(clock.pending, 0, 'an indefinite pause needs no timer');
      await clock.advanceTo(10_000);
      t.finish('running');
      await flush();
      assert.deepEqual(t.started, ['running'], 'a free slot changes nothing while paused');
      limiter.resume();
      assert.equal(limiter.isPaused, false);
      assert.deepEqual(t.instants, [
        ['running', 0],
        ['a', 10_000],
        ['b', 10_000],
      ]);
      for (const name of ['a', 'b']) t.finish(name);
      await flush();
      t.finish('c');
      await flush();
      assert.ok(results.every((r) => r.status === 'fulfilled'));
    });

    it('lets running tasks go on while paused', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ clock });
      const t = new Tasks(clock);
      const result = limiter.schedule(t.task('a'));
      await flush();
      limiter.pause();
      t.finish('a');
      assert.equal(await result, 'a');
      assert.equal(limiter.isIdle, true);
    });

    it('pauses for exactly pauseFor(ms), even on a timer that fires early, and a shorter later pauseFor does not shorten it', async () => {
      const clock = new ManualClock(0, { early: 2 });
      const limiter = new Limiter({ clock });
      const t = new Tasks(clock);
      limiter.pauseFor(1000);
      assert.equal(clock.pending, 0, 'nothing waits: no timer');
      assert.equal(limiter.isPaused, true);
      void limiter.schedule(t.task('a'));
      assert.equal(clock.pending, 1);
      await clock.advanceTo(200);
      limiter.pauseFor(500);
      await clock.advanceTo(999.999);
      assert.deepEqual(t.started, []);
      assert.equal(limiter.isPaused, true);
      await clock.advanceTo(1000);
      assert.deepEqual(
        t.runs.map((r) => [r.name, r.at]),
        [['a', 1000]],
      );
      assert.equal(limiter.isPaused, false);
      limiter.pauseFor(300);
      void limiter.schedule(t.task('b'));
      await clock.advanceTo(1200);
      limiter.pauseFor(400);
      await clock.advanceTo(1599.999);
      assert.equal(t.runs.length, 1, 'a longer later pause does extend it');
      await clock.advanceTo(1600);
      assert.deepEqual(t.runs.map((r) => [r.name, r.at]).at(-1), ['b', 1600]);
      t.finish('a');
      t.finish('b');
      await limiter.onIdle();
      assert.equal(clock.pending, 0);
    });

    it('ends pause() on resume(), but not a pauseFor() still running', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ clock });
      const t = new Tasks(clock);
      limiter.pause();
      limiter.pauseFor(1000);
      void limiter.schedule(t.task('a'));
      await clock.advanceTo(100);
      limiter.resume();
      await clock.advanceTo(999);
      assert.equal(
        t.runs.length,
        0,
        'the server asked for 1000 ms: resume() does not override that',
      );
      assert.equal(limiter.isPaused, true);
      await clock.advanceTo(1000);
      assert.deepEqual(
        t.runs.map((r) => [r.name, r.at]),
        [['a', 1000]],
      );
      assert.equal(clock.pending, 0);
      t.finish('a');
      await limiter.onIdle();
    });
  });

  describe('onIdle() and onEmpty()', () => {
    it('resolves onIdle() only when nothing runs, waits or backs off', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 1,
        retry: { retries: 1, minDelay: 100, jitter: 'none' },
        clock,
      });
      assert.equal(await state(limiter.onIdle()), 'fulfilled', 'a new limiter is idle');
      const t = new Tasks(clock);
      void limiter.schedule(t.task('a'));
      void limiter.schedule(t.task('b'));
      const idle = watch(limiter.onIdle());
      t.fail('a', new Error('flaky'));
      await flush();
      t.finish('b');
      await flush();
      assert.equal(limiter.stats().retrying, 1);
      assert.equal(idle.status, 'pending', 'a backs off');
      await clock.advanceTo(100);
      assert.equal(idle.status, 'pending', 'a runs again');
      t.finish('a');
      await flush();
      assert.equal(idle.status, 'fulfilled');
    });

    it('resolves onEmpty() when the last waiting task starts, while tasks still run', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      void limiter.schedule(t.task('a'));
      void limiter.schedule(t.task('b'));
      const empty = watch(limiter.onEmpty());
      await flush();
      assert.equal(empty.status, 'pending');
      t.finish('a');
      await flush();
      assert.deepEqual(t.started, ['a', 'b']);
      assert.equal(empty.status, 'fulfilled');
      assert.equal(limiter.isIdle, false);
      t.finish('b');
      await limiter.onIdle();
    });

    it("resolves onEmpty() when the last waiting task starts on the rate's timer", async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ rate: '1/s', clock });
      const t = new Tasks(clock);
      void limiter.schedule(t.task('a'));
      void limiter.schedule(t.task('b'));
      const empty = watch(limiter.onEmpty());
      await clock.advanceTo(1001);
      assert.deepEqual(t.started, ['a', 'b']);
      assert.equal(limiter.pendingCount, 0);
      assert.equal(empty.status, 'fulfilled', 'nothing waits to start any more');
      t.finish('a');
      t.finish('b');
      await limiter.onIdle();
    });
  });

  describe('close()', () => {
    it('rejects what waits at once with a ClosedError, lets running tasks finish, and resolves when they have', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 2,
        maxQueue: 1,
        retry: { retries: 1, minDelay: 1000, jitter: 'none' },
        clock,
      });
      const t = new Tasks(clock);
      const a = watch(limiter.schedule(t.task('a')));
      const backingOff = watch(
        limiter.schedule(() => {
          throw new Error('flaky');
        }),
      );
      await flush();
      const b = watch(limiter.schedule(t.task('b')));
      const queued = watch(limiter.schedule(t.task('queued')));
      const parked = watch(limiter.schedule(t.task('parked')));
      const room = watch(limiter.onRoom());
      await flush();
      assert.deepEqual(
        [limiter.stats().retrying, limiter.stats().pending, limiter.stats().waitingForRoom],
        [1, 1, 1],
      );
      const closed = watch(limiter.close());
      await flush();
      for (const waiting of [backingOff, queued, parked]) {
        assert.ok(waiting.error instanceof ClosedError);
        assert.equal(waiting.error.message, 'the limiter is closed');
      }
      assert.equal(room.status, 'fulfilled', 'a producer waiting for room is let go');
      assert.equal(clock.pending, 0, 'the backoff timer is gone');
      assert.deepEqual([a.status, b.status, closed.status], ['pending', 'pending', 'pending']);
      assert.equal(t.run('a').context.signal.aborted, false, 'running tasks are left alone');
      assert.equal(limiter.stats().closed, true);
      assert.equal(limiter.toString(), 'Limiter(2/2 active, 0 pending, closed)');
      await assert.rejects(limiter.schedule(t.task('late')), ClosedError);
      await assert.rejects(limiter.acquire(), ClosedError);
      assert.throws(() => limiter.tryAcquire(), ClosedError);
      t.finish('a');
      await flush();
      assert.equal(closed.status, 'pending');
      t.finish('b');
      await flush();
      assert.deepEqual([a.value, b.value, closed.status], ['a', 'b', 'fulfilled']);
      assert.deepEqual(t.started, ['a', 'b']);
    });

    it('with drain, lets the waiting tasks run, and resolves when all are done', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      const results = ['a', 'b', 'c'].map((name) => watch(limiter.schedule(t.task(name))));
      const closed = watch(limiter.close({ drain: true }));
      await assert.rejects(limiter.schedule(t.task('late')), ClosedError);
      for (const name of ['a', 'b']) {
        await flush();
        t.finish(name);
      }
      await flush();
      assert.equal(closed.status, 'pending');
      t.finish('c');
      await flush();
      assert.equal(closed.status, 'fulfilled');
      assert.deepEqual(
        results.map((r) => r.value),
        ['a', 'b', 'c'],
      );
    });

    it('with drain and a deadline, rejects what is left at the deadline and aborts the running tasks', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, clock });
      const t = new Tasks(clock);
      const a = watch(limiter.schedule(t.task('a')));
      const b = watch(limiter.schedule(t.task('b')));
      const closed = watch(limiter.close({ drain: true, deadline: 500 }));
      await clock.advanceTo(499);
      assert.deepEqual([a.status, b.status, closed.status], ['pending', 'pending', 'pending']);
      await clock.advanceTo(500);
      assert.deepEqual([a.status, b.status, closed.status], ['rejected', 'rejected', 'fulfilled']);
      assert.ok(a.error instanceof ClosedError);
      assert.ok(b.error instanceof ClosedError);
      const { signal } = t.run('a').context;
      assert.equal(signal.aborted, true);
      assert.equal(signal.reason, a.error);
      assert.equal(limiter.activeCount, 1, 'a holds its slot until it really settles');
      assert.equal(clock.pending, 0);
      t.finish('a');
      await flush();
      assert.equal(limiter.activeCount, 0);
      assert.equal(limiter.isIdle, true);
      assert.deepEqual(t.started, ['a']);
    });

    it('with a deadline, resolves as soon as the work is done and leaves no timer', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ clock });
      const t = new Tasks(clock);
      const a = watch(limiter.schedule(t.task('a')));
      const closed = watch(limiter.close({ deadline: 60_000 }));
      await clock.advanceTo(10);
      t.finish('a');
      await flush();
      assert.deepEqual([a.value, closed.status], ['a', 'fulfilled']);
      assert.equal(clock.pending, 0);
    });

    it('with drain, settles the tasks parked for room too', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({ concurrency: 1, maxQueue: 1, clock });
      const t = new Tasks(clock);
      const results = ['a', 'b', 'c'].map((name) => watch(limiter.schedule(t.task(name))));
      const closed = watch(limiter.close({ drain: true }));
      for (const name of ['a', 'b']) {
        await flush();
        t.finish(name);
      }
      await flush();
      if (t.started.includes('c')) t.finish('c');
      await flush();
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'fulfilled', t.started.includes('c') ? 'fulfilled' : 'rejected'],
      );
      assert.equal(closed.status, 'fulfilled');
      await limiter.close({ deadline: 0 });
    });
  });

  describe('events', () => {
    it('emits active, dropped, failed, retry, completed and idle with their arguments, in order', async () => {
      const clock = new ManualClock();
      const fatal = new Error('fatal');
      const limiter = new Limiter({
        concurrency: 1,
        maxQueue: 1,
        overflow: 'drop-oldest',
        retry: { retries: 1, minDelay: 10, jitter: 'none', retryIf: (error) => error !== fatal },
        clock,
      });
      const t = new Tasks(clock);
      const log: unknown[][] = [];
      limiter.on('active', (task) => log.push(['active', task.id, task.attempt]));
      limiter.on('dropped', (task) => log.push(['dropped', task.id]));
      limiter.on('failed', (task, error) => log.push(['failed', task.id, String(error)]));
      limiter.on('retry', (task, info) => log.push(['retry', task.id, info.attempt, info.delay]));
      limiter.on('completed', (task, value) => log.push(['completed', task.id, value]));
      // Idle once the permits are back, not just once the tasks have settled.
      limiter.on('idle', () => log.push(['idle', limiter.held]));
      // @ts-expect-error -- 'done' is not an event of a Limiter
      limiter.on('done', () => undefined);
      const all = Promise.allSettled([
        limiter.schedule(t.task('a')),
        limiter.schedule(t.task('b')),
        limiter.schedule(t.task('c'), { priority: 2 }),
      ]);
      await flush();
      t.fail('a', new Error('flaky'));
      await flush();
      await clock.advanceTo(10);
      t.finish('c');
      await flush();
      t.finish('a');
      await flush();
      const d = limiter.schedule(t.task('d'));
      await flush();
      t.fail('d', fatal);
      await assert.rejects(d, (error) => error === fatal);
      await all;
      assert.deepEqual(log, [
        ['active', 1, 1],
        ['dropped', 2],
        [
          'failed',
          2,
          'QueueFullError: dropped from a full queue (maxQueue 1) to make room for a newer task',
        ],
        ['active', 3, 1],
        ['retry', 1, 1, 10],
        ['completed', 3, 'c'],
        ['active', 1, 2],
        ['completed', 1, 'a'],
        ['idle', 0],
        ['active', 4, 1],
        ['failed', 4, 'Error: fatal'],
        ['idle', 0],
      ]);
    });
  });

  describe('stats() and toString()', () => {
    it('reports its state and lifetime counters in stats()', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 2,
        maxQueue: 1,
        timeout: 100,
        retry: {
          retries: 1,
          minDelay: 1000,
          jitter: 'none',
          retryIf: (error) => !(error instanceof TimeoutError),
        },
        clock,
      });
      const t = new Tasks(clock);
      const all = Promise.allSettled([
        limiter.schedule(t.task('zombie')),
        limiter.schedule(() => 'fine'),
        limiter.schedule(() => {
          throw new Error('flaky');
        }),
      ]);
      await flush();
      const rest = Promise.allSettled([
        limiter.schedule(t.task('worker'), { timeout: Infinity }),
        limiter.schedule(t.task('queued')),
        limiter.schedule(t.task('parked')),
      ]);
      await clock.advanceTo(100);
      limiter.pause();
      assert.deepEqual(limiter.stats(), {
        concurrency: 2,
        active: 2,
        held: 2,
        timedOutActive: 1,
        pending: 1,
        waitingForRoom: 1,
        retrying: 1,
        completed: 1,
        failed: 1,
        retries: 1,
        timedOut: 1,
        dropped: 0,
        paused: true,
        rate: [],
        closed: false,
      });
      await limiter.close({ deadline: 0 });
      t.finish('zombie');
      t.finish('worker');
      await Promise.all([all, rest]);
      assert.deepEqual(limiter.stats(), {
        concurrency: 2,
        active: 0,
        held: 0,
        timedOutActive: 0,
        pending: 0,
        waitingForRoom: 0,
        retrying: 0,
        completed: 1,
        failed: 5,
        retries: 1,
        timedOut: 1,
        dropped: 0,
        paused: true,
        rate: [],
        closed: true,
      });
    });

    it('describes itself like Limiter(1/2 active, 3 pending, 10/s and 500/min)', async () => {
      const clock = new ManualClock();
      assert.equal(String(new Limiter()), 'Limiter(0/Infinity active, 0 pending)');
      const limiter = new Limiter({ concurrency: 2, rate: ['10/s', '500/min'], clock });
      const t = new Tasks(clock);
      const all = Promise.allSettled(
        ['a', 'b', 'c', 'd'].map((name) => limiter.schedule(t.task(name))),
      );
      assert.equal(limiter.toString(), 'Limiter(1/2 active, 3 pending, 10/s and 500/min)');
      assert.equal(inspect(limiter), limiter.toString());
      limiter.pause();
      assert.equal(limiter.toString(), 'Limiter(1/2 active, 3 pending, 10/s and 500/min, paused)');
      await limiter.close({ deadline: 0 });
      assert.equal(
        limiter.toString(),
        'Limiter(1/2 active, 0 pending, 10/s and 500/min, paused, closed)',
      );
      t.finish('a');
      await all;
    });
  });

  describe('synchronous tasks', () => {
    it('rejects with what a task throws synchronously, frees its slot, and runs the next', async () => {
      const limiter = new Limiter({ concurrency: 1 });
      const error = new Error('sync');
      const thrown = limiter.schedule(() => {
        throw error;
      });
      const value = limiter.schedule(() => 42);
      await assert.rejects(thrown, (e) => e === error);
      assert.equal(await value, 42);
      assert.equal(limiter.activeCount, 0);
      assert.equal(limiter.isIdle, true);
    });
  });

  describe('async context', () => {
    it('runs a queued task in the async context of the call that scheduled it', async () => {
      const clock = new ManualClock();
      const als = new AsyncLocalStorage<string>();
      const limiter = new Limiter({ concurrency: 1, rate: '10/s', clock });
      const gate = deferred();
      const first = als.run('first', () =>
        limiter.schedule(() => gate.promise.then(() => als.getStore())),
      );
      const second = als.run('second', () => limiter.schedule(() => als.getStore()));
      const third = als.run('third', () => limiter.schedule(() => als.getStore()));
      await clock.advanceTo(100);
      gate.resolve();
      await flush();
      await clock.advanceTo(1000);
      assert.deepEqual(await Promise.all([first, second, third]), ['first', 'second', 'third']);
    });

    it('runs every retry in the async context of the call that scheduled it', async () => {
      const clock = new ManualClock();
      const als = new AsyncLocalStorage<string>();
      const limiter = new Limiter({ retry: { retries: 2, minDelay: 100, jitter: 'none' }, clock });
      const seen: (string | undefined)[] = [];
      const result = als.run('caller', () =>
        limiter.schedule(({ attempt }) => {
          seen.push(als.getStore());
          if (attempt < 3) throw new Error('flaky');
          return 'ok';
        }),
      );
      await flush();
      await clock.advanceTo(1000);
      assert.equal(await result, 'ok');
      assert.deepEqual(seen, ['caller', 'caller', 'caller']);
    });
  });

  describe('timers', () => {
    it('runs no timer once idle, whatever rate, timeout and retries it has', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        concurrency: 2,
        rate: '10/s',
        timeout: 1000,
        retry: { retries: 1, minDelay: 50, jitter: 'none' },
        clock,
      });
      const all = Promise.all(
        [1, 2, 3].map((n) =>
          limiter.schedule(({ attempt }) => {
            if (n === 2 && attempt === 1) throw new Error('flaky');
            return n;
          }),
        ),
      );
      await flush();
      await clock.advanceTo(1000);
      assert.deepEqual(await all, [1, 2, 3]);
      assert.equal(limiter.isIdle, true);
      assert.equal(clock.pending, 0);
    });

    it('runs exactly the timers its waiting work needs: one for the line, one for all running timeouts, one per backoff', async () => {
      const clock = new ManualClock();
      const limiter = new Limiter({
        rate: '10/s',
        timeout: 1000,
        retry: { retries: 1, minDelay: 500, jitter: 'none' },
        clock,
      });
      const t = new Tasks(clock);
      const all = Promise.all(['a', 'b', 'c'].map((name) => limiter.schedule(t.task(name))));
      await flush();
      assert.equal(clock.pending, 2, "a's timeout, and the line's rate timer");
      await clock.advanceTo(150);
      assert.equal(clock.pending, 2, "a's and b's timeouts (one timer), and the line's rate timer");
      t.finish('a');
      t.fail('b', new Error('flaky'));
      await flush();
      assert.equal(clock.pending, 2, "b's backoff, and the line's rate timer");
      await clock.advanceTo(250);
      assert.equal(clock.pending, 2, "c's timeout, and b's backoff");
      t.finish('c');
      await flush();
      assert.equal(clock.pending, 1, "b's backoff");
      await clock.advanceTo(650);
      assert.equal(clock.pending, 1, "b's second timeout");
      t.finish('b');
      await all;
      assert.equal(clock.pending, 0);
    });
  });

  describe('bad input', () => {
    it('names the option, what was expected and what came', async () => {
      assert.throws(() => new Limiter({ concurrency: 0 }), {
        name: 'RangeError',
        message: 'Expected `concurrency` to be an integer >= 1 or Infinity, got `0` (number)',
      });
      assert.throws(
        () => new Limiter({ overflow: 'spill' as never }),
        /^TypeError: Expected `overflow` to be one of 'wait', 'reject', 'drop-oldest', got `"spill"` \(string\)$/,
      );
      assert.throws(
        () => new Limiter({ maxQueue: -1 }),
        /Expected `maxQueue` to be an integer >= 0/,
      );
      assert.throws(() => new Limiter({ timeout: -1 }), /Expected `timeout` to be a number >= 0/);
      assert.throws(() => new Limiter({ rate: '10 per second' }), /Expected `rate` to be a rate/);
      const limiter = new Limiter();
      await assert.rejects(
        limiter.schedule(42 as never),
        /^TypeError: Expected `fn` to be a function, got `42` \(number\)$/,
      );
      await assert.rejects(
        limiter.schedule(() => 1, { weight: 0 }),
        /Expected `weight` to be an integer >= 1/,
      );
      await assert.rejects(
        limiter.schedule(() => 1, { timeout: -5 }),
        /Expected `timeout` to be a number >= 0/,
      );
      assert.throws(() => {
        limiter.pauseFor(-1);
      }, /Expected `ms` to be a number >= 0/);
      assert.equal(limiter.isIdle, true);
    });
  });
});

describe('Limiter in a real process', { concurrency: true }, () => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const source = pathToFileURL(join(root, 'src', 'index.ts')).href;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-limiter-'));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `code` as a module in a child process, killed after 10 s; resolves to its output. */
  async function run(name: string, code: string): Promise<string[]> {
    const file = join(dir, `${name}.mts`);
    writeFileSync(file, `import { Limiter } from '${source}';\n${code}\nexport {};\n`);
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      timeout: 10_000,
    });
    return stdout.split('\n').filter((line) => line !== '');
  }

  it('keeps the process alive while a task waits on the rate, so an awaited rate-delayed task runs', async () => {
    const lines = await run(
      'rate-keeps-alive',
      `const limiter = new Limiter({ rate: '2/s' });
const tasks = [1, 2, 3].map((n) => limiter.schedule(() => console.log('task ' + n)));
await tasks[2];`,
    );
    assert.deepEqual(lines, ['task 1', 'task 2', 'task 3']);
  });

  it('lets the process exit promptly once idle, with a rate, a timeout and retries configured', async () => {
    const lines = await run(
      'idle-exits',
      `const limiter = new Limiter({ rate: '10/s', timeout: 60_000, retry: { retries: 1, minDelay: 10 } });
let failed = false;
const results = await Promise.all([1, 2, 3].map((n) =>
  limiter.schedule(() => {
    if (n === 2 && !failed) { failed = true; throw new Error('flaky'); }
    return n;
  }),
));
await limiter.onIdle();
console.log('results ' + results.join(','));
const idleAt = performance.now();
process.on('exit', () => console.log('exited after ' + Math.round(performance.now() - idleAt) + 'ms'));`,
    );
    assert.equal(lines[0], 'results 1,2,3');
    const ms = Number(/^exited after (\d+)ms$/.exec(lines[1] ?? '')?.[1]);
    assert.ok(ms < 2000, `the process lingered ${lines[1]}`);
  });
});

describe('Limiter.acquire() through the gates it was given', () => {
  // One timeout for the whole acquisition: the time spent at the first gate is taken off the
  // second's wait, and the error states the timeout the caller gave.
  it('times out once, at the timeout given, however many gates it waits at', async () => {
    const clock = new ManualClock(5_000);
    const t0 = clock.now();
    const first = new Semaphore(1, { clock });
    const second = new Semaphore(1, { clock });
    const heldFirst = first.tryAcquire()!;
    second.tryAcquire(); // held for good
    const limiter = new Limiter({ concurrency: first, rate: [second], clock });
    const acquiring = limiter.acquire({ timeout: 1_000 });
    acquiring.catch(() => undefined);
    const table: [at: number, act: () => void, expected: string][] = [
      [
        900,
        () => {
          heldFirst.release(); // through the first gate, with 100 ms left
        },
        'pending',
      ],
      [999, () => undefined, 'pending'],
      [1_000, () => undefined, 'rejected'],
    ];
    for (const [at, act, expected] of table) {
      await clock.advanceTo(t0 + at);
      act();
      await flush();
      assert.equal(await state(acquiring), expected, `at ${at}`);
    }
    await assert.rejects(
      acquiring,
      (error: unknown) =>
        error instanceof TimeoutError &&
        error.timeout === 1_000 &&
        /^acquire timed out after 1000ms \(/.test(error.message),
    );
    assert.equal(first.held, 0, 'the first permit given back');
    assert.equal(second.waiting, 0);
  });

  // A gate whose permit's release is confirmed later (a shared one: Redis answers): `await using`
  // on the limiter's permit waits for it, as it would on that gate's own permit.
  class SlowRelease implements Gate {
    /** The releases begun, by name, in order; each ends when its `done` is settled. */
    readonly begun: string[] = [];
    readonly done: ReturnType<typeof deferred<undefined>>[] = [];
    #granted = 0;
    readonly #async: boolean;

    /** `async`: whether its permits have an asynchronous release (a broken gate's may not). */
    constructor(async = true) {
      this.#async = async;
    }

    acquire(): Promise<Permit> {
      return Promise.resolve(this.tryAcquire());
    }

    tryAcquire(): Permit {
      const name = `permit ${++this.#granted}`;
      const release = () => {
        this.begun.push(name);
      };
      const permit = {
        weight: 1,
        signal: new AbortController().signal,
        release,
        [Symbol.dispose]: release,
      };
      if (!this.#async) return permit as unknown as Permit;
      return {
        ...permit,
        [Symbol.asyncDispose]: () => {
          release();
          const done = deferred<undefined>();
          this.done.push(done);
          return done.promise;
        },
      };
    }
  }

  it("`await using` waits until every gate's permit is given back, each asynchronous release confirmed", async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(1, { clock });
    const slow = new SlowRelease();
    const slower = new SlowRelease();
    const limiter = new Limiter({ concurrency: slow, rate: [sem, slower], clock });
    const block = (async () => {
      await using permit = await limiter.acquire();
      assert.equal(permit.weight, 1);
    })();
    await flush();
    // Every release has begun, the last taken first; the synchronous ones are done.
    assert.deepEqual([slow.begun, slower.begun], [['permit 1'], ['permit 1']]);
    assert.equal(sem.held, 0);
    assert.equal(limiter.held, 0);
    assert.equal(await state(block), 'pending', 'both confirmations awaited');
    slower.done[0]!.resolve(undefined);
    await flush();
    assert.equal(await state(block), 'pending', 'one confirmation awaited');
    slow.done[0]!.resolve(undefined);
    await flush();
    assert.equal(await state(block), 'fulfilled');
  });

  it('an asynchronous release that fails is told, after every other permit is given back', async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(1, { clock });
    const failing = new SlowRelease();
    const slow = new SlowRelease();
    const limiter = new Limiter({ concurrency: failing, rate: [sem, slow], clock });
    const permit = await limiter.acquire();
    const disposing = Promise.resolve(permit[Symbol.asyncDispose]());
    disposing.catch(() => undefined);
    const lost = new Error('the release was not confirmed');
    failing.done[0]!.reject(lost);
    await flush();
    assert.equal(await state(disposing), 'pending', 'the other release still awaited');
    assert.equal(sem.held, 0);
    slow.done[0]!.resolve(undefined);
    await assert.rejects(disposing, (error) => error === lost);
    // Given back once: a second dispose, or a release, does nothing more.
    await assert.rejects(Promise.resolve(permit[Symbol.asyncDispose]()), (error) => error === lost);
    permit.release();
    assert.deepEqual([failing.begun, slow.begun], [['permit 1'], ['permit 1']]);
  });

  it('a permit without an asynchronous release is given back synchronously by `await using`', async () => {
    const clock = new ManualClock();
    const plain = new SlowRelease(false);
    const slow = new SlowRelease();
    const limiter = new Limiter({ concurrency: plain, rate: [slow], clock });
    const permit = await limiter.acquire();
    const disposing = Promise.resolve(permit[Symbol.asyncDispose]());
    assert.deepEqual([plain.begun, slow.begun], [['permit 1'], ['permit 1']]);
    assert.equal(await state(disposing), 'pending');
    slow.done[0]!.resolve(undefined);
    await disposing;
    // release() (synchronous) begins every release and waits for none.
    const again = await limiter.acquire();
    again.release();
    assert.deepEqual(
      [plain.begun, slow.begun],
      [
        ['permit 1', 'permit 2'],
        ['permit 1', 'permit 2'],
      ],
    );
    assert.equal(slow.done.length, 1, 'no asynchronous release asked of it');
  });
});

describe('Limiter.pauseFor() and the gates that pause with it', () => {
  // The limiter and a shared rate take the same durations: a pause that only this process would
  // keep (Infinity: use pause()) is refused, not half done.
  it('refuses Infinity as the shared rate does', () => {
    const limiter = new Limiter({ concurrency: 1 });
    assert.throws(() => {
      limiter.pauseFor(Infinity);
    }, /^RangeError: Expected `ms` to be a number >= 0, got `Infinity` \(number\)$/);
    assert.equal(limiter.isPaused, false);
  });

  it("tells a gate's failure to pause with a pauseFailed event; its own pause still holds", async () => {
    const down = new Error('Redis is down');
    const sem = new Semaphore(1);
    // A gate that can pause itself (as a shared rate does), whose pause fails.
    const gate = {
      acquire: (options?: object) => sem.acquire(options),
      pauseFor: () => Promise.reject(down),
    };
    const limiter = new Limiter({ rate: [gate] });
    const failed: unknown[] = [];
    limiter.on('pauseFailed', (error) => failed.push(error));
    limiter.pauseFor(1_000);
    await flush();
    assert.deepEqual(failed, [down]);
    assert.equal(limiter.isPaused, true);
    limiter.resume();
  });
});
