/**
 * retry() and RetryBudget as tables over named instants on a ManualClock, with an injected
 * `random`: the backoff delays for each jitter, when each attempt happens, what ends the retrying
 * (success, `retryIf`, exhaustion, a server hint too long, an exhausted budget, an abort) and with
 * which error.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retry, RetryBudget, RetryError, type RetryInfo, type RetryOptions } from '../src/index.ts';
import { deferred, flush, ManualClock, state } from './_helpers/clock.ts';

/** Fires every timer, in order, until none is left. */
async function settle(clock: ManualClock): Promise<void> {
  await flush();
  for (let i = 0; clock.nextAt !== undefined; i++) {
    if (i > 10_000) throw new Error(`the clock never settles (next timer at ${clock.nextAt})`);
    await clock.advanceTo(clock.nextAt);
  }
}

/** A microsecond before an instant. */
const before = (ms: number): number => ms - 1e-3;

/** An error a server sent, asking to be retried no sooner than `retryAfterMs`. */
class ServerError extends Error {
  readonly retryAfterMs: unknown;

  constructor(message: string, retryAfterMs: unknown) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Runs `retry()` of a function that fails `failures` times (with `error(attempt)`), then returns
 * `'done'`; records the clock instant of every attempt and what `onRetry` was told.
 */
function run(
  clock: ManualClock,
  options: RetryOptions,
  failures = Infinity,
  error: (attempt: number) => unknown = () => new Error('boom'),
): { result: Promise<string>; attempts: number[]; retries: RetryInfo[] } {
  const attempts: number[] = [];
  const retries: RetryInfo[] = [];
  const result = retry(
    ({ attempt }) => {
      attempts.push(clock.now());
      assert.equal(attempt, attempts.length, 'attempts are counted from 1');
      if (attempt <= failures) throw error(attempt);
      return 'done';
    },
    {
      clock,
      onRetry: (info) => {
        retries.push(info);
      },
      ...options,
    },
  );
  // Handled here so that a test may check it after moving the clock; awaiting it still throws.
  void result.catch(() => undefined);
  return { result, attempts, retries };
}

/** The delays onRetry was told, to a nanosecond. */
const delays = (retries: readonly RetryInfo[]): number[] =>
  retries.map(({ delay }) => Math.round(delay * 1e6) / 1e6);

describe('retry()', () => {
  describe('backoff', () => {
    it("with jitter 'none' doubles the delay from minDelay, capped at maxDelay", async () => {
      const clock = new ManualClock();
      const random = (): number => {
        throw new Error('no jitter, no random numbers');
      };
      const { result, attempts, retries } = run(clock, {
        retries: 6,
        minDelay: 100,
        maxDelay: 1000,
        jitter: 'none',
        random,
      });
      await settle(clock);
      await assert.rejects(result, RetryError);
      assert.deepEqual(delays(retries), [100, 200, 400, 800, 1000, 1000]);
      const t = { t0: 0, t1: 100, t2: 300, t3: 700, t4: 1500, t5: 2500, t6: 3500 };
      assert.deepEqual(attempts, Object.values(t));
    });

    it('grows the delay by `factor` per retry', async () => {
      const table: [factor: number, expected: number[]][] = [
        [1, [10, 10, 10, 10, 10]],
        [1.5, [10, 15, 22.5, 33.75, 50.625]],
        [3, [10, 30, 90, 270, 500]],
      ];
      for (const [factor, expected] of table) {
        const clock = new ManualClock();
        const { result, retries } = run(clock, {
          retries: 5,
          minDelay: 10,
          maxDelay: 500,
          factor,
          jitter: 'none',
        });
        await settle(clock);
        await assert.rejects(result, RetryError);
        assert.deepEqual(delays(retries), expected, `factor ${factor}`);
      }
    });

    it('waits 100, 200, 400, … up to 30 s by default, with full jitter and three retries', async () => {
      const clock = new ManualClock();
      const { result, attempts, retries } = run(clock, { random: () => 0.5 });
      await settle(clock);
      await assert.rejects(result, { name: 'RetryError', attempts: 4 });
      assert.deepEqual(delays(retries), [50, 100, 200]);
      assert.deepEqual(attempts, [0, 50, 150, 350]);

      const cappedClock = new ManualClock();
      const { result: r2, retries: capDelays } = run(cappedClock, { retries: 10, jitter: 'none' });
      await settle(cappedClock);
      await assert.rejects(r2, RetryError);
      assert.deepEqual(
        delays(capDelays),
        [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000],
      );
    });

    it("with jitter 'equal' picks a delay in [d/2, d)", async () => {
      const table: [random: number, expected: number[]][] = [
        [0, [50, 100, 200, 400]],
        [0.5, [75, 150, 300, 600]],
        [0.999_999, [99.999_95, 199.9999, 399.9998, 799.9996]],
      ];
      for (const [random, expected] of table) {
        const clock = new ManualClock();
        const { result, retries } = run(clock, {
          retries: 4,
          minDelay: 100,
          maxDelay: 800,
          jitter: 'equal',
          random: () => random,
        });
        await settle(clock);
        await assert.rejects(result, RetryError);
        assert.deepEqual(delays(retries), expected, `random() = ${random}`);
      }
    });

    it("with jitter 'full' picks a delay in [0, d)", async () => {
      const table: [random: number, expected: number[]][] = [
        [0, [0, 0, 0, 0]],
        [0.5, [50, 100, 200, 400]],
        [0.999_999, [99.9999, 199.9998, 399.9996, 799.9992]],
      ];
      for (const [random, expected] of table) {
        const clock = new ManualClock();
        const { result, attempts, retries } = run(clock, {
          retries: 4,
          minDelay: 100,
          maxDelay: 800,
          jitter: 'full',
          random: () => random,
        });
        await settle(clock);
        await assert.rejects(result, RetryError);
        assert.deepEqual(delays(retries), expected, `random() = ${random}`);
        // Each attempt starts exactly the delay after the one before it failed.
        const sums = expected.map((_, i) => expected.slice(0, i + 1).reduce((a, b) => a + b, 0));
        assert.deepEqual(
          attempts.map((at) => Math.round(at * 1e6) / 1e6),
          [0, ...sums.map((at) => Math.round(at * 1e6) / 1e6)],
        );
      }
    });

    it('draws one random number per retry', async () => {
      const clock = new ManualClock();
      const draws = [0.25, 0.75, 0.5];
      let drawn = 0;
      const { result, retries } = run(clock, {
        retries: 3,
        minDelay: 100,
        jitter: 'full',
        random: () => draws[drawn++]!,
      });
      await settle(clock);
      await assert.rejects(result, RetryError);
      assert.equal(drawn, 3);
      assert.deepEqual(delays(retries), [25, 150, 200]);
    });
  });

  describe('attempts', () => {
    it('returns the first success, counting attempts from 1', async () => {
      const clock = new ManualClock();
      const { result, attempts, retries } = run(clock, { jitter: 'none' }, 2);
      await settle(clock);
      assert.equal(await result, 'done');
      assert.deepEqual(attempts, [0, 100, 300]);
      assert.deepEqual(
        retries.map(({ attempt }) => attempt),
        [1, 2],
      );
      assert.equal(clock.pending, 0);
    });

    it('makes one attempt with retries: 0, and rejects with a RetryError', async () => {
      const clock = new ManualClock();
      const boom = new Error('boom');
      const { result, attempts, retries } = run(clock, { retries: 0 }, Infinity, () => boom);
      await assert.rejects(result, (error) => {
        assert.ok(error instanceof RetryError);
        assert.equal(error.name, 'RetryError');
        assert.equal(error.code, 'ERR_SLUICE_RETRY');
        assert.equal(error.message, 'failed after 1 attempt: boom');
        assert.equal(error.attempts, 1);
        assert.equal(error.cause, boom);
        return true;
      });
      assert.deepEqual(attempts, [0]);
      assert.deepEqual(retries, []);
      assert.equal(clock.pending, 0);
    });

    it('rejects once the retries run out, with the last error as the cause', async () => {
      const clock = new ManualClock();
      const { result, attempts } = run(
        clock,
        { retries: 2, jitter: 'none' },
        Infinity,
        (attempt) => new Error(`boom ${attempt}`),
      );
      await settle(clock);
      await assert.rejects(result, (error) => {
        assert.ok(error instanceof RetryError);
        assert.equal(error.message, 'failed after 3 attempts: boom 3');
        assert.equal(error.attempts, 3);
        assert.equal((error.cause as Error).message, 'boom 3');
        return true;
      });
      assert.deepEqual(attempts, [0, 100, 300]);
    });

    it('names a thrown non-Error in the message, and keeps it as the cause', async () => {
      const clock = new ManualClock();
      const { result } = run(clock, { retries: 0 }, Infinity, () => 'nope');
      await assert.rejects(result, { message: 'failed after 1 attempt: nope', cause: 'nope' });
    });

    it('retries a function that throws synchronously or rejects alike', async () => {
      const clock = new ManualClock();
      let calls = 0;
      const result = retry(
        () => {
          calls++;
          if (calls === 1) throw new Error('sync');
          if (calls === 2) return Promise.reject(new Error('async'));
          return 42;
        },
        { clock, jitter: 'none' },
      );
      await settle(clock);
      assert.equal(await result, 42);
      assert.equal(calls, 3);
    });

    it('passes each attempt the caller’s signal, or one that never aborts', async () => {
      const seen: AbortSignal[] = [];
      await retry(({ signal }) => seen.push(signal));
      assert.equal(seen.length, 1);
      assert.ok(seen[0] instanceof AbortSignal);
      assert.equal(seen[0].aborted, false);
      const controller = new AbortController();
      await retry(({ signal }) => seen.push(signal), { signal: controller.signal });
      assert.equal(seen[1], controller.signal);
    });
  });

  describe('retryIf', () => {
    it('rethrows an error it refuses as it is, after no further attempt', async () => {
      const clock = new ManualClock();
      const fatal = new TypeError('fatal');
      const asked: [unknown, number][] = [];
      const { result, attempts } = run(
        clock,
        {
          retryIf: (error, attempt) => {
            asked.push([error, attempt]);
            return false;
          },
        },
        Infinity,
        () => fatal,
      );
      await settle(clock);
      await assert.rejects(result, (error) => error === fatal);
      assert.deepEqual(attempts, [0]);
      assert.deepEqual(asked, [[fatal, 1]]);
      assert.equal(clock.pending, 0);
    });

    it('may answer asynchronously', async () => {
      const clock = new ManualClock();
      const answers: boolean[] = [];
      const { result, attempts } = run(
        clock,
        {
          jitter: 'none',
          retryIf: async (error, attempt) => {
            await flush();
            const retryable = attempt < 3 && (error as Error).message !== 'fatal';
            answers.push(retryable);
            return retryable;
          },
        },
        Infinity,
        (attempt) => new Error(`transient ${attempt}`),
      );
      await settle(clock);
      await assert.rejects(result, { message: 'transient 3' });
      assert.deepEqual(answers, [true, true, false]);
      assert.deepEqual(attempts, [0, 100, 300]);
    });
  });

  describe('a server’s retryAfterMs', () => {
    it('is never retried sooner, even with full jitter drawing 0', async () => {
      const clock = new ManualClock();
      const { result, attempts, retries } = run(
        clock,
        { random: () => 0 },
        1,
        () => new ServerError('slow down', 1000),
      );
      const t = { t0: 0, t1: before(1000), t2: 1000 };
      await flush();
      await clock.advanceTo(t.t1);
      assert.deepEqual(attempts, [t.t0]);
      await clock.advanceTo(t.t2);
      assert.deepEqual(attempts, [t.t0, t.t2]);
      assert.equal(await result, 'done');
      assert.deepEqual(delays(retries), [1000]);
    });

    it('is never retried sooner on a clock whose timers fire early', async () => {
      const clock = new ManualClock(0, { early: 1 });
      const { result, attempts } = run(
        clock,
        { random: () => 0 },
        1,
        () => new ServerError('slow down', 1000),
      );
      await settle(clock);
      assert.equal(await result, 'done');
      assert.equal(attempts.length, 2);
      assert.ok(attempts[1]! >= 1000, `retried at t=${attempts[1]}, the server asked for t=1000`);
    });

    it('does not shorten a longer backoff', async () => {
      const clock = new ManualClock();
      const { result, retries } = run(
        clock,
        { jitter: 'none', minDelay: 400 },
        1,
        () => new ServerError('slow down', 100),
      );
      await settle(clock);
      await result;
      assert.deepEqual(delays(retries), [400]);
    });

    it('up to maxRetryAfter is honoured; above it fails at once with a RetryError saying so', async () => {
      const clock = new ManualClock();
      const honoured = run(clock, { maxRetryAfter: 1000 }, 1, () => new ServerError('busy', 1000));
      await settle(clock);
      assert.equal(await honoured.result, 'done');
      assert.deepEqual(honoured.attempts, [0, 1000]);

      const hint = new ServerError('slow down', 5000);
      const refused = run(clock, { maxRetryAfter: 1000 }, Infinity, () => hint);
      await assert.rejects(refused.result, (error) => {
        assert.ok(error instanceof RetryError);
        assert.equal(
          error.message,
          'the server asked to wait 5000ms, more than maxRetryAfter (1000ms), after 1 attempt: slow down',
        );
        assert.equal(error.attempts, 1);
        assert.equal(error.cause, hint);
        return true;
      });
      assert.equal(refused.attempts.length, 1);
      assert.equal(clock.pending, 0);
    });

    it('rounds a fractional wait up in the message', async () => {
      const clock = new ManualClock();
      const { result } = run(
        clock,
        { maxRetryAfter: 0 },
        Infinity,
        () => new ServerError('x', 0.2),
      );
      await assert.rejects(
        result,
        /^RetryError: the server asked to wait 1ms, more than maxRetryAfter \(0ms\), after 1 attempt: x$/,
      );
    });

    it('is ignored unless it is a finite number >= 0', async () => {
      for (const hint of [-1, NaN, Infinity, '1000', null]) {
        const clock = new ManualClock();
        const { result, retries } = run(
          clock,
          { jitter: 'none', maxRetryAfter: 10 },
          1,
          () => new ServerError('odd hint', hint),
        );
        await settle(clock);
        assert.equal(await result, 'done', `hint ${String(hint)}`);
        assert.deepEqual(delays(retries), [100], `hint ${String(hint)}`);
      }
    });
  });

  describe('abort', () => {
    it('during an attempt stops at once with signal.reason, and attempts nothing more', async () => {
      const clock = new ManualClock();
      const controller = new AbortController();
      let calls = 0;
      let asked = 0;
      const result = retry(
        ({ signal }) => {
          calls++;
          return new Promise((_, reject) => {
            signal.addEventListener('abort', () => {
              reject(new Error('the attempt saw the abort'));
            });
          });
        },
        {
          clock,
          signal: controller.signal,
          retryIf: () => {
            asked++;
            return true;
          },
        },
      );
      await flush();
      const reason = new Error('user gave up');
      controller.abort(reason);
      await assert.rejects(result, (error) => error === reason);
      await clock.advance(60_000);
      assert.equal(calls, 1);
      assert.equal(asked, 0, 'retryIf is not asked about a failure after the abort');
      assert.equal(clock.pending, 0);
    });

    it('during an attempt that ignores the signal still stops at once', async () => {
      const clock = new ManualClock();
      const controller = new AbortController();
      const attempt = deferred<string>();
      const result = retry(() => attempt.promise, { clock, signal: controller.signal });
      void result.catch(() => undefined);
      await flush();
      const reason = new Error('user gave up');
      controller.abort(reason);
      await flush();
      const settled = await state(result);
      attempt.resolve('too late');
      assert.equal(settled, 'rejected', 'retry() waited for an attempt the caller gave up on');
      await assert.rejects(result, (error) => error === reason);
    });

    it('during the backoff stops at once with signal.reason, and attempts nothing more', async () => {
      const clock = new ManualClock();
      const controller = new AbortController();
      const { result, attempts } = run(clock, {
        signal: controller.signal,
        jitter: 'none',
      });
      const t = { t0: 0, t1: 50 };
      await flush();
      assert.equal(clock.pending, 1, 'backing off until t=100');
      await clock.advanceTo(t.t1);
      const reason = new Error('user gave up');
      controller.abort(reason);
      await flush();
      assert.equal(await state(result), 'rejected');
      await assert.rejects(result, (error) => error === reason);
      assert.equal(clock.pending, 0, 'the backoff timer is cleared');
      await clock.advance(60_000);
      assert.deepEqual(attempts, [t.t0]);
    });

    it('before the first attempt makes none', async () => {
      const clock = new ManualClock();
      const reason = new Error('never mind');
      const { result, attempts } = run(clock, { signal: AbortSignal.abort(reason) });
      await assert.rejects(result, (error) => error === reason);
      assert.deepEqual(attempts, []);
    });

    it('while retryIf is deciding wins over its answer', async () => {
      const clock = new ManualClock();
      const controller = new AbortController();
      const answer = deferred<boolean>();
      const budget = new RetryBudget({ ratio: 0, minPerSecond: 0.1, clock });
      const { result, attempts, retries } = run(clock, {
        signal: controller.signal,
        retryIf: () => answer.promise,
        budget,
      });
      await flush();
      const reason = new Error('user gave up');
      controller.abort(reason);
      answer.resolve(true);
      await assert.rejects(result, (error) => error === reason);
      await clock.advance(60_000);
      assert.deepEqual(attempts, [0]);
      assert.deepEqual(retries, [], 'onRetry is not told of a retry that will not happen');
      assert.equal(budget.tryRetry(), true, 'and the budget is not spent on it');
    });
  });

  describe('onRetry', () => {
    it('is told the error, the failed attempt and the delay, before each retry', async () => {
      const clock = new ManualClock();
      const errors = [new Error('first'), new Error('second')];
      const told: [number, unknown, number, number][] = [];
      let calls = 0;
      const result = retry(
        () => {
          if (calls < errors.length) throw errors[calls++]!;
          return 'done';
        },
        {
          clock,
          jitter: 'none',
          onRetry: ({ error, attempt, delay }) => {
            told.push([clock.now(), error, attempt, delay]);
          },
        },
      );
      await settle(clock);
      assert.equal(await result, 'done');
      // Each call comes when the attempt fails, before the backoff.
      assert.deepEqual(told, [
        [0, errors[0], 1, 100],
        [100, errors[1], 2, 200],
      ]);
    });

    it('is not called when no retry follows', async () => {
      const clock = new ManualClock();
      const { result, retries } = run(clock, { retries: 1, jitter: 'none' });
      await settle(clock);
      await assert.rejects(result, RetryError);
      assert.equal(retries.length, 1);
    });
  });

  describe('bad options', () => {
    it('reject with a message naming the option, what was expected and what came', async () => {
      const table: [options: unknown, error: { name: string; message: string | RegExp }][] = [
        [
          { retries: -1 },
          {
            name: 'RangeError',
            message:
              'Expected `options.retries` to be an integer >= 0 or Infinity, got `-1` (number)',
          },
        ],
        [
          { retries: 1.5 },
          {
            name: 'RangeError',
            message:
              'Expected `options.retries` to be an integer >= 0 or Infinity, got `1.5` (number)',
          },
        ],
        [
          { retries: '3' },
          {
            name: 'TypeError',
            message:
              'Expected `options.retries` to be an integer >= 0 or Infinity, got `"3"` (string)',
          },
        ],
        [
          { minDelay: -1 },
          {
            name: 'RangeError',
            message: 'Expected `options.minDelay` to be a number >= 0, got `-1` (number)',
          },
        ],
        [
          { minDelay: Infinity },
          {
            name: 'RangeError',
            message: 'Expected `options.minDelay` to be a number >= 0, got `Infinity` (number)',
          },
        ],
        [
          { maxDelay: NaN },
          {
            name: 'TypeError',
            message:
              'Expected `options.maxDelay` to be a number >= 0 or Infinity, got `NaN` (number)',
          },
        ],
        [
          { factor: 0.5 },
          {
            name: 'RangeError',
            message: 'Expected `options.factor` to be a number >= 1, got `0.5` (number)',
          },
        ],
        [
          { jitter: 'half' },
          {
            name: 'TypeError',
            message:
              "Expected `options.jitter` to be one of 'full', 'equal', 'none', got `\"half\"` (string)",
          },
        ],
        [
          { maxRetryAfter: -1 },
          {
            name: 'RangeError',
            message:
              'Expected `options.maxRetryAfter` to be a number >= 0 or Infinity, got `-1` (number)',
          },
        ],
        [
          { retryIf: 5 },
          {
            name: 'TypeError',
            message: 'Expected `options.retryIf` to be a function, got `5` (number)',
          },
        ],
        [
          { onRetry: 'log' },
          {
            name: 'TypeError',
            message: 'Expected `options.onRetry` to be a function, got `"log"` (string)',
          },
        ],
        [
          { random: 0.5 },
          {
            name: 'TypeError',
            message: 'Expected `options.random` to be a function, got `0.5` (number)',
          },
        ],
        [
          { budget: {} },
          {
            name: 'TypeError',
            message: 'Expected `options.budget` to be a RetryBudget, got `[object]` (object)',
          },
        ],
        [
          { signal: {} },
          { name: 'TypeError', message: /to be an AbortSignal, got `\[object\]` \(object\)$/ },
        ],
        [
          null,
          { name: 'TypeError', message: 'Expected `options` to be an object, got `null` (null)' },
        ],
      ];
      for (const [options, error] of table) {
        let calls = 0;
        const fn = (): void => {
          calls++;
        };
        await assert.rejects(retry(fn, options as RetryOptions), error, JSON.stringify(options));
        assert.equal(calls, 0, 'fn is not called');
      }
      await assert.rejects(retry(42 as never), {
        name: 'TypeError',
        message: 'Expected `fn` to be a function, got `42` (number)',
      });
    });

    it('of a RetryBudget throw at construction', () => {
      assert.throws(() => new RetryBudget({ ratio: -1 }), {
        name: 'RangeError',
        message: 'Expected `ratio` to be a number >= 0, got `-1` (number)',
      });
      assert.throws(() => new RetryBudget({ minPerSecond: '1' as never }), {
        name: 'TypeError',
        message: 'Expected `minPerSecond` to be a number >= 0, got `"1"` (string)',
      });
      assert.throws(() => new RetryBudget({ window: 0 }), {
        name: 'RangeError',
        message: 'Expected `window` to be a number >= 1, got `0` (number)',
      });
      assert.throws(() => new RetryBudget(7 as never), {
        name: 'TypeError',
        message: 'Expected `options` to be an object, got `7` (number)',
      });
    });
  });
});

describe('RetryBudget', () => {
  /**
   * ratio 0.2, minPerSecond 1, window 10 s: over the last 10 s, retries <= 10 + 0.2 * calls.
   * Each row: at instant `at`, record `calls` calls, then ask for retries until one is refused
   * (or `asks` times); `granted` is how many were.
   */
  const table: [at: number, calls: number, asks: number, granted: number][] = [
    [0, 0, 11, 10], // t0: no traffic yet: the 10 retries minPerSecond allows per window
    [3000, 10, 3, 2], // t1: ten calls earn 0.2 * 10 = 2 more
    [9999, 0, 1, 0], // t2: everything since t0 still counts
    [10_000, 0, 11, 10], // t3: t0's retries have left the window; t1's calls and retries remain
    [12_999, 0, 1, 0], // t4: t1 still counts: 12 retries, 12 allowed
    [13_000, 0, 1, 0], // t5: t1 has left: 10 retries (t3's), 10 allowed
    [13_000, 5, 2, 1], // t5: five calls earn one more
    [20_000, 0, 11, 10], // t6: t3 has left; t5's calls and retry remain
  ];

  async function check(budget: RetryBudget, clock: ManualClock): Promise<void> {
    for (const [i, [at, calls, asks, granted]] of table.entries()) {
      await clock.advanceTo(at);
      for (let c = 0; c < calls; c++) budget.recordCall();
      let got = 0;
      for (let a = 0; a < asks; a++) if (budget.tryRetry()) got++;
      assert.equal(got, granted, `row ${i} (t=${at}): ${got} retries granted, expected ${granted}`);
    }
  }

  it('allows retries up to minPerSecond * window plus ratio * calls over the window', async () => {
    const clock = new ManualClock();
    await check(new RetryBudget({ ratio: 0.2, minPerSecond: 1, window: 10_000, clock }), clock);
  });

  it('has those numbers by default', async () => {
    const clock = new ManualClock();
    await check(new RetryBudget({ clock }), clock);
  });

  it('earns nothing from calls with ratio 0: minPerSecond alone is left', () => {
    const clock = new ManualClock();
    const budget = new RetryBudget({ ratio: 0, minPerSecond: 0.1, window: 10_000, clock });
    for (let i = 0; i < 1000; i++) budget.recordCall();
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), false);
  });

  it('makes retry() fail with a RetryError once exhausted, shared by every call', async () => {
    const clock = new ManualClock();
    const budget = new RetryBudget({ ratio: 0.5, minPerSecond: 0.1, window: 10_000, clock });
    // Over the window: retries <= 1 + 0.5 * calls, and every attempt is a call.
    const first = run(clock, { budget, retries: 5, jitter: 'none', minDelay: 1 }, 2);
    await settle(clock);
    // Retries after 1 call (1 <= 1.5) and after 2 calls (2 <= 2): two taken, three calls.
    assert.equal(await first.result, 'done');
    assert.deepEqual(first.attempts, [0, 1, 3]);

    const boom = new Error('boom');
    const second = run(
      clock,
      { budget, retries: 5, jitter: 'none', minDelay: 1 },
      Infinity,
      () => boom,
    );
    await settle(clock);
    // A retry after 4 calls (3 <= 3), but none after 5 (4 > 3.5).
    await assert.rejects(second.result, (error) => {
      assert.ok(error instanceof RetryError);
      assert.equal(error.message, 'retry budget exhausted after 2 attempts: boom');
      assert.equal(error.attempts, 2);
      assert.equal(error.cause, boom);
      return true;
    });
    assert.equal(second.retries.length, 1);

    await clock.advanceTo(10_000);
    const later = run(clock, { budget, retries: 5, jitter: 'none', minDelay: 1 }, 1);
    await settle(clock);
    assert.equal(await later.result, 'done', 'the budget recovers as the window slides');
  });
});
