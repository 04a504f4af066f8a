/**
 * RateLimiter as tables over named instants on a ManualClock: which starts are admitted when, for
 * spaced (GCRA) and sliding windows, several rates at once, weights, cancellation, reservations and
 * rate changes. Then property tests: under random arrivals, weights, aborts, timeouts and
 * reservations, on an exact and on an early-firing clock, no window of `interval` ever holds more
 * than its bound, and under saturating demand nothing is lost.
 *
 * A spaced window's emission interval is a billionth above `interval / limit` (so that rounding
 * can never fit `limit` spacings into one interval): the k-th spaced start is due a hair after
 * k * interval / limit. Tables therefore name instants a microsecond either side of such a
 * boundary, and admission instants are compared with `assertStarts`, which allows that hair after
 * the named instant and nothing before it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ClosedError, RateLimiter, TimeoutError, type Reservation } from '../src/index.ts';
import { parseRate } from '../src/_parse.ts';
import { flush, ManualClock } from './_helpers/clock.ts';

/** How late after its named instant a start may be: the spaced window's hair, with room to spare. */
const HAIR = 1e-3;

/** A microsecond before and after an instant. */
const before = (ms: number): number => ms - 1e-3;
const after = (ms: number): number => ms + 1e-3;

/** Fires every timer, in order, until none is left. */
async function settle(clock: ManualClock): Promise<void> {
  await flush();
  for (let i = 0; clock.nextAt !== undefined; i++) {
    if (i > 100_000) throw new Error(`the clock never settles (next timer at ${clock.nextAt})`);
    await clock.advanceTo(clock.nextAt);
  }
}

/**
 * A ManualClock whose timers fire `early` ms early, like `new ManualClock(0, { early })`, but
 * that, like a real timer, always lets some time pass: the helper fires a timer of
 * `early + 1e-15` ms at `now + 1e-15`, which rounds to `now`, so a line re-checking the clock would
 * re-arm forever at one instant. It also fails, rather than hangs, if a line re-arms endlessly.
 */
class EarlyClock extends ManualClock {
  readonly #early: number;
  #armed = 0;

  constructor(early: number) {
    super(0, { early });
    this.#early = early;
  }

  override setTimeout(callback: () => void, ms: number): unknown {
    if (++this.#armed > 100_000) throw new Error(`a timer was armed ${this.#armed} times`);
    const now = this.now();
    return super.setTimeout(
      callback,
      now + (ms - this.#early) > now ? ms : Math.min(ms, this.#early),
    );
  }
}

/** Records, by name, the clock instant at which each tracked wait() settles (`name!`: rejected). */
class Starts {
  readonly log: [string, number][] = [];
  readonly #clock: ManualClock;

  constructor(clock: ManualClock) {
    this.#clock = clock;
  }

  track(name: string, promise: Promise<void>): Promise<void> {
    void promise.then(
      () => this.log.push([name, this.#clock.now()]),
      () => this.log.push([`${name}!`, this.#clock.now()]),
    );
    return promise;
  }

  get names(): string[] {
    return this.log.map(([name]) => name);
  }
}

/** Asks for `n` waits at once (w0, w1, …), lets the clock run until none is left, and gives the log. */
async function waitAll(
  clock: ManualClock,
  limiter: RateLimiter,
  n: number,
): Promise<[string, number][]> {
  const starts = new Starts(clock);
  for (let i = 0; i < n; i++) void starts.track(`w${i}`, limiter.wait());
  await settle(clock);
  return starts.log;
}

/** Asserts the starts happened in this order, each at its instant (never before, at most a hair after). */
function assertStarts(
  log: readonly (readonly [string, number])[],
  expected: readonly (readonly [string, number])[],
): void {
  assert.deepEqual(
    log.map(([name]) => name),
    expected.map(([name]) => name),
  );
  for (const [i, [name, at]] of log.entries()) {
    const due = expected[i]![1];
    assert.ok(at >= due && at < due + HAIR, `${name} started at t=${at}, expected t=${due}`);
  }
}

/** One row of a tryTake table: at instant `at`, `tryTake(weight)` returns `admitted`. */
type Row = readonly [at: number, weight: number, admitted: boolean];

async function tryTakeTable(
  clock: ManualClock,
  limiter: RateLimiter,
  rows: readonly Row[],
): Promise<void> {
  for (const [i, [at, weight, admitted]] of rows.entries()) {
    await clock.advanceTo(at);
    assert.equal(
      limiter.tryTake(weight),
      admitted,
      `row ${i}: tryTake(${weight}) at t=${at} should return ${admitted}`,
    );
  }
}

/** The most weight admitted in any half-open window [s, s + interval) of the given starts. */
function busiestWindow(
  starts: readonly { at: number; weight: number }[],
  interval: number,
): number {
  let most = 0;
  for (const { at: s } of starts) {
    let weight = 0;
    for (const start of starts)
      if (start.at >= s && start.at < s + interval) weight += start.weight;
    most = Math.max(most, weight);
  }
  return most;
}

const EXPECTED_RATE = 'a rate like "10/s", "500/min", "1/2s" or { limit, interval }';

describe('parseRate', () => {
  it('reads rates written the ways people write them', () => {
    const table: [spec: unknown, limit: number, interval: number][] = [
      ['10/s', 10, 1000],
      ['500/min', 500, 60_000],
      ['1/2s', 1, 2000],
      ['10/100ms', 10, 100],
      ['3/h', 3, 3_600_000],
      ['5 / 1.5s', 5, 1500],
      [' 7/ .5 s ', 7, 500],
      ['60/MIN', 60, 60_000],
      ['1/second', 1, 1000],
      ['2/day', 2, 86_400_000],
      [{ limit: 4, interval: 250 }, 4, 250],
      [{ limit: 1, interval: 0.5 }, 1, 0.5],
    ];
    for (const [spec, limit, interval] of table) {
      assert.deepEqual(parseRate('rate', spec), { limit, interval }, `parsing ${String(spec)}`);
    }
  });

  it('rejects malformed rates with a message naming what was expected and what came', () => {
    const malformed = [
      '10',
      '0/s',
      '-1/s',
      '10/fortnight',
      '1.5/s',
      '10/0s',
      '',
      '10/s/s',
      '1e3/s',
      'ten/s',
      '9007199254740993/s',
    ];
    for (const spec of malformed) {
      assert.throws(() => parseRate('rate', spec), {
        name: 'RangeError',
        message: `Expected \`rate\` to be ${EXPECTED_RATE}, got \`${JSON.stringify(spec)}\` (string)`,
      });
    }
    const table: [spec: unknown, name: string, message: string][] = [
      [
        { limit: 0, interval: 1000 },
        'RangeError',
        'Expected `rate.limit` to be an integer >= 1, got `0` (number)',
      ],
      [
        { limit: 1.5, interval: 1000 },
        'RangeError',
        'Expected `rate.limit` to be an integer >= 1, got `1.5` (number)',
      ],
      [
        { interval: 0 },
        'TypeError',
        'Expected `rate.limit` to be an integer >= 1, got `undefined` (undefined)',
      ],
      [
        { limit: 1, interval: 0 },
        'RangeError',
        'Expected `rate.interval` to be a number of milliseconds > 0, got `0` (number)',
      ],
      [
        { limit: 1, interval: Infinity },
        'RangeError',
        'Expected `rate.interval` to be a number of milliseconds > 0, got `Infinity` (number)',
      ],
      [null, 'TypeError', `Expected \`rate\` to be ${EXPECTED_RATE}, got \`null\` (null)`],
      [42, 'TypeError', `Expected \`rate\` to be ${EXPECTED_RATE}, got \`42\` (number)`],
      [['10/s'], 'TypeError', `Expected \`rate\` to be ${EXPECTED_RATE}, got \`[array]\` (array)`],
    ];
    for (const [spec, name, message] of table) {
      assert.throws(
        () => parseRate('rate', spec),
        { name, message },
        `parsing ${JSON.stringify(spec)}`,
      );
    }
  });
});

describe('RateLimiter', () => {
  describe('options', () => {
    it('takes a rate, a list of rates, or options, and reads its rates back as written', () => {
      assert.deepEqual(new RateLimiter('10/s').rate, ['10/s']);
      assert.deepEqual(new RateLimiter({ limit: 3, interval: 3_600_000 }).rate, ['3/h']);
      assert.deepEqual(new RateLimiter(['10/s', '500/min']).rate, ['10/s', '500/min']);
      assert.deepEqual(new RateLimiter({ rate: ['1/2s', '10/100ms', '5 / 1.5s'] }).rate, [
        '1/2s',
        '10/100ms',
        '5/1500ms',
      ]);
    });

    it('names the option that is wrong: rate, rate[i], burst or window', () => {
      const table: [() => unknown, { name: string; message: string }][] = [
        [
          () => new RateLimiter('10'),
          {
            name: 'RangeError',
            message: `Expected \`rate\` to be ${EXPECTED_RATE}, got \`"10"\` (string)`,
          },
        ],
        [
          () => new RateLimiter(null as never),
          {
            name: 'TypeError',
            message: `Expected \`rate\` to be ${EXPECTED_RATE}, got \`null\` (null)`,
          },
        ],
        [
          () => new RateLimiter(42 as never),
          {
            name: 'TypeError',
            message: `Expected \`rate\` to be ${EXPECTED_RATE}, got \`42\` (number)`,
          },
        ],
        [
          () => new RateLimiter({ rate: undefined as never }),
          {
            name: 'TypeError',
            message: 'Expected `rate` to be a rate like "10/s", got `undefined` (undefined)',
          },
        ],
        [
          () => new RateLimiter(['10/s', '10/fortnight']),
          {
            name: 'RangeError',
            message: `Expected \`rate[1]\` to be ${EXPECTED_RATE}, got \`"10/fortnight"\` (string)`,
          },
        ],
        [
          () => new RateLimiter({ rate: ['10/s', { limit: 0, interval: 1000 }] }),
          {
            name: 'RangeError',
            message: 'Expected `rate[1].limit` to be an integer >= 1, got `0` (number)',
          },
        ],
        [
          () => new RateLimiter({ rate: [] }),
          {
            name: 'RangeError',
            message: 'Expected `rate` to hold at least one rate, got `[array]` (array)',
          },
        ],
        [
          () => new RateLimiter({ rate: '10/s', burst: 0 }),
          {
            name: 'RangeError',
            message: 'Expected `burst` to be an integer >= 1, got `0` (number)',
          },
        ],
        [
          () => new RateLimiter({ rate: '10/s', burst: '2' as never }),
          {
            name: 'TypeError',
            message: 'Expected `burst` to be an integer >= 1, got `"2"` (string)',
          },
        ],
        [
          () => new RateLimiter({ rate: ['10/s', '5/min'], burst: 6 }),
          {
            name: 'RangeError',
            message:
              'Expected `burst` to be at most the limit of every rate, got `6` (number) for 5/min',
          },
        ],
        [
          () => new RateLimiter({ rate: '10/s', window: 'fixed' as never }),
          {
            name: 'TypeError',
            message: "Expected `window` to be one of 'spaced', 'sliding', got `\"fixed\"` (string)",
          },
        ],
        [
          () => new RateLimiter({ rate: '10/s', window: 'sliding', burst: 2 }),
          {
            name: 'TypeError',
            message:
              "`burst` applies to window 'spaced' only: a sliding window admits its whole limit at once",
          },
        ],
      ];
      for (const [make, error] of table) assert.throws(make, error);
    });

    it('names `weight` when a weight is not an integer >= 1', async () => {
      const limiter = new RateLimiter('10/s');
      const error = {
        name: 'RangeError',
        message: 'Expected `weight` to be an integer >= 1, got `0` (number)',
      };
      assert.throws(() => limiter.tryTake(0), error);
      assert.throws(() => limiter.reserve(0), error);
      await assert.rejects(limiter.wait({ weight: 0 }), error);
      await assert.rejects(limiter.wait({ weight: 1.5 }), /got `1.5` \(number\)/);
      await assert.rejects(limiter.wait({ timeout: -1 }), /Expected `timeout` to be a number >= 0/);
      assert.equal(limiter.tryTake(), true, 'the bad calls consumed nothing');
    });
  });

  describe('a spaced window (the default)', () => {
    it("admits '10/s' one start every 100 ms: t0=0, t1=100, t2=200, …", async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      // Each start is due 100 ms after the one before: t1 a microsecond after 100, t2 after t1 + 100.
      const t0 = 0;
      const t1 = after(100);
      const t2 = after(t1 + 100);
      const t3 = 1000;
      await tryTakeTable(clock, limiter, [
        [t0, 1, true],
        [t0, 1, false],
        [before(100), 1, false],
        [t1, 1, true],
        [t1, 1, false],
        [before(t1 + 100), 1, false],
        [t2, 1, true],
        [t2, 1, false],
        // Idle from t2 to t3: a spaced window with burst 1 saves nothing up.
        [t3, 1, true],
        [t3, 1, false],
        [before(t3 + 100), 1, false],
        [after(t3 + 100), 1, true],
      ]);
    });

    it('hands waiters their starts one interval / limit apart', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      const starts = new Starts(clock);
      for (const name of ['a', 'b', 'c', 'd', 'e']) void starts.track(name, limiter.wait());
      await settle(clock);
      assertStarts(starts.log, [
        ['a', 0],
        ['b', 100],
        ['c', 200],
        ['d', 300],
        ['e', 400],
      ]);
    });

    it('with burst 3 admits three at once, then one every 100 ms', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      const t = { t0: 0, t1: 100, t2: 200, t3: 700 };
      await tryTakeTable(clock, limiter, [
        [t.t0, 1, true],
        [t.t0, 1, true],
        [t.t0, 1, true],
        [t.t0, 1, false],
        [before(t.t1), 1, false],
        [after(t.t1), 1, true],
        [after(t.t1), 1, false],
        [after(t.t2), 1, true],
        [after(t.t2), 1, false],
      ]);
      // Idle for long enough, the whole burst is back, and no more.
      await clock.advanceTo(t.t3);
      const starts = new Starts(clock);
      for (const name of ['a', 'b', 'c', 'd']) void starts.track(name, limiter.wait());
      await settle(clock);
      assertStarts(starts.log, [
        ['a', t.t3],
        ['b', t.t3],
        ['c', t.t3],
        ['d', t.t3 + 100],
      ]);
    });

    it('counts a start of weight w as w starts at once', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      await tryTakeTable(clock, limiter, [
        [0, 3, true],
        [0, 1, false],
        [after(100), 2, false],
        [after(100), 1, true],
        [after(300), 2, true],
        [after(300), 1, false],
      ]);
    });

    it('never admits more than limit + burst − 1 in any window of interval, and reaches it', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      const starts: { at: number; weight: number }[] = [];
      for (let i = 0; i < 40; i++) {
        void limiter.wait().then(() => starts.push({ at: clock.now(), weight: 1 }));
      }
      await settle(clock);
      assert.equal(starts.length, 40);
      assert.equal(busiestWindow(starts, 1000), 10 + 3 - 1);
    });

    it('keeps the bound however the spacing rounds: 5/ms never fits six starts into one ms', async () => {
      for (const rate of [{ limit: 5, interval: 1 }, { limit: 3, interval: 1000 / 3 }, '7/0.7ms']) {
        const clock = new ManualClock();
        const limiter = new RateLimiter({ rate, clock });
        const { limit, interval } = parseRate('rate', rate);
        const starts: { at: number; weight: number }[] = [];
        for (let i = 0; i < 60; i++) {
          void limiter.wait().then(() => starts.push({ at: clock.now(), weight: 1 }));
        }
        await settle(clock);
        assert.equal(busiestWindow(starts, interval), limit, `rate ${JSON.stringify(rate)}`);
      }
    });
  });

  describe('starts counted from when their code runs', () => {
    it('counts a start from when the code awaiting wait() runs, not from the booking', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/100ms', window: 'sliding', clock });
      const starts = new Starts(clock);
      // Eleven waits in one synchronous loop: ten are booked at t=0, but the loop (or a
      // preemption) holds the thread until t=3, so their code runs at t=3.
      for (let i = 0; i < 11; i++) void starts.track(`w${i}`, limiter.wait());
      clock.jumpTo(3);
      await settle(clock);
      assert.deepEqual(
        starts.log.map(([, at]) => at),
        [...Array.from({ length: 10 }, () => 3), 103],
        'the eleventh waits until the first ten, as they really ran, have left the window',
      );
    });

    it('counts a tryTake from when the code that follows it has run', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '1/100ms', clock });
      assert.equal(limiter.tryTake(), true);
      clock.jumpTo(7); // the caller's synchronous work after the start
      await flush();
      await clock.advanceTo(106);
      assert.equal(limiter.tryTake(), false, 'at 106: only 99 ms after the start really ran');
      await clock.advanceTo(107 + HAIR);
      assert.equal(limiter.tryTake(), true);
    });
  });

  describe('a sliding window', () => {
    it("admits '10/s' ten at t0=0 and the eleventh at t1=1000", async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', window: 'sliding', clock });
      const t = { t0: 0, t1: 1000, t2: 1500 };
      await tryTakeTable(clock, limiter, [
        ...Array.from({ length: 10 }, (): Row => [t.t0, 1, true]),
        [t.t0, 1, false],
        [before(t.t1), 1, false],
        ...Array.from({ length: 10 }, (): Row => [t.t1, 1, true]),
        [t.t1, 1, false],
        [t.t2, 1, false],
      ]);
    });

    it('hands waiters the whole limit at once, then the next limit one interval later', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '3/s', window: 'sliding', clock });
      assertStarts(await waitAll(clock, limiter, 7), [
        ['w0', 0],
        ['w1', 0],
        ['w2', 0],
        ['w3', 1000],
        ['w4', 1000],
        ['w5', 1000],
        ['w6', 2000],
      ]);
    });

    it('admits a start of weight w once the w-th oldest start in the window has left it', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', window: 'sliding', clock });
      const t = { t0: 0, t1: 500, t2: 1000, t3: 1500 };
      await tryTakeTable(clock, limiter, [
        [t.t0, 4, true],
        [t.t1, 6, true],
        [t.t1, 1, false],
        [before(t.t2), 1, false],
        // Four starts (those of t0) have left the window, the six of t1 have not.
        [t.t2, 5, false],
        [t.t2, 4, true],
        [t.t2, 1, false],
        [before(t.t3), 1, false],
        [t.t3, 7, false],
        [t.t3, 6, true],
      ]);
    });
  });

  describe('several rates at once', () => {
    it('admits a start only when every window allows it', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: ['2/s', '3/10s'], window: 'sliding', clock });
      const t = { t0: 0, t1: 1000, t2: 2000, t3: 10_000, t4: 11_000 };
      await tryTakeTable(clock, limiter, [
        [t.t0, 1, true],
        [t.t0, 1, true],
        [t.t0, 1, false], // 2/s is full; 3/10s would allow it
        [before(t.t1), 1, false],
        [t.t1, 1, true],
        [t.t1, 1, false], // 3/10s is full; 2/s would allow it
        [t.t2, 1, false],
        [before(t.t3), 1, false],
        [t.t3, 1, true],
        [t.t3, 1, true],
        [t.t3, 1, false],
        [t.t4, 1, true],
        [t.t4, 1, false],
      ]);
    });

    it('consumes nothing in one window when another refuses', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: ['2/s', '3/10s'], window: 'sliding', clock });
      assert.equal(limiter.tryTake(), true);
      assert.equal(limiter.tryTake(), true);
      // Refused by 2/s: if 3/10s counted these, it would be full and refuse the start at t=1000.
      for (let i = 0; i < 5; i++) assert.equal(limiter.tryTake(), false);
      await clock.advanceTo(1000);
      assert.equal(limiter.tryTake(), true);
      // Refused by 3/10s: if 2/s counted these, it would refuse the second start at t=10000.
      await clock.advanceTo(9500);
      for (let i = 0; i < 5; i++) assert.equal(limiter.tryTake(), false);
      await clock.advanceTo(10_000);
      assert.equal(limiter.tryTake(), true);
      assert.equal(limiter.tryTake(), true);
      assert.equal(limiter.tryTake(), false);
    });

    it('spaces waiters by the strictest of several spaced windows', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: ['10/s', '20/10s'], burst: 5, clock });
      assertStarts(await waitAll(clock, limiter, 8), [
        ['w0', 0],
        ['w1', 0],
        ['w2', 0],
        ['w3', 0],
        ['w4', 0],
        ['w5', 500], // 10/s would allow it at 100; 20/10s spaces starts 500 ms apart
        ['w6', 1000],
        ['w7', 1500],
      ]);
      // reserve() books by the strictest window too.
      const booking = new RateLimiter({
        rate: ['10/s', '20/10s'],
        burst: 5,
        clock: new ManualClock(),
      });
      const ats = Array.from({ length: 8 }, () => booking.reserve().at);
      assertStarts(
        ats.map((at, i) => [`r${i}`, at]),
        [0, 0, 0, 0, 0, 500, 1000, 1500].map((at, i) => [`r${i}`, at]),
      );
    });
  });

  describe('a weight above what the rate admits at once', () => {
    it('is rejected at once by wait(), tryTake() and reserve(), and consumes nothing', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      const error = {
        name: 'RangeError',
        message:
          'Expected `weight` to be at most 3, the most the rate admits at once, got `4` (number): it could never be admitted',
      };
      await assert.rejects(limiter.wait({ weight: 4 }), error);
      assert.throws(() => limiter.tryTake(4), error);
      assert.throws(() => limiter.reserve(4), error);
      assert.equal(limiter.waiting, 0);
      assert.equal(clock.pending, 0);
      assert.equal(limiter.tryTake(3), true, 'nothing was consumed');
    });

    it('is rejected at once even while others wait', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      limiter.tryTake();
      const waiting = limiter.wait();
      await assert.rejects(limiter.wait({ weight: 2 }), /at most 1, the most the rate admits/);
      assert.equal(limiter.waiting, 1);
      await settle(clock);
      await waiting;
    });

    it('is above the limit for a sliding window, and above the smallest limit for several', async () => {
      const sliding = new RateLimiter({ rate: '10/s', window: 'sliding' });
      await assert.rejects(
        sliding.wait({ weight: 11 }),
        /^RangeError: Expected `weight` to be at most 10,/,
      );
      assert.equal(sliding.tryTake(10), true);
      const several = new RateLimiter({ rate: ['5/s', '3/min'], window: 'sliding' });
      assert.throws(() => several.tryTake(4), /^RangeError: Expected `weight` to be at most 3,/);
      assert.throws(() => several.reserve(4), /at most 3,.*got `4`/);
      assert.equal(several.tryTake(3), true);
    });
  });

  describe('on a clock whose timers fire early', () => {
    it('still admits every start exactly at its instant, never before', async () => {
      const clock = new ManualClock(0, { early: 1 });
      const limiter = new RateLimiter({ rate: '10/s', burst: 2, clock });
      assertStarts(await waitAll(clock, limiter, 6), [
        ['w0', 0],
        ['w1', 0],
        ['w2', 100],
        ['w3', 200],
        ['w4', 300],
        ['w5', 400],
      ]);
    });

    it('still admits a sliding window’s next starts exactly one interval later', async () => {
      const clock = new ManualClock(0, { early: 1 });
      const limiter = new RateLimiter({ rate: '2/10ms', window: 'sliding', clock });
      assertStarts(await waitAll(clock, limiter, 5), [
        ['w0', 0],
        ['w1', 0],
        ['w2', 10],
        ['w3', 10],
        ['w4', 20],
      ]);
    });

    it('still admits exactly when the timer fires a fraction of a millisecond early', async () => {
      const clock = new EarlyClock(0.25);
      const limiter = new RateLimiter({ rate: '10/s', burst: 2, clock });
      assertStarts(await waitAll(clock, limiter, 4), [
        ['w0', 0],
        ['w1', 0],
        ['w2', 100],
        ['w3', 200],
      ]);
    });

    it('still admits exactly when the timer fires far earlier than the wait', async () => {
      const clock = new ManualClock(0, { early: 40 });
      const limiter = new RateLimiter({ rate: ['10/s', '20/5s'], clock });
      assertStarts(await waitAll(clock, limiter, 4), [
        ['w0', 0],
        ['w1', 250],
        ['w2', 500],
        ['w3', 750],
      ]);
    });
  });

  describe('fairness', () => {
    it('lets a waiting heavy request block a later light one (no barging)', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      assert.equal(limiter.tryTake(3), true);
      const starts = new Starts(clock);
      void starts.track('heavy', limiter.wait({ weight: 3 }));
      void starts.track('light', limiter.wait());
      await clock.advanceTo(after(100));
      assert.equal(limiter.retryAfter, 0, 'a light start would be allowed now…');
      assert.deepEqual(starts.names, [], '…but the light request waits behind the heavy one');
      assert.equal(limiter.tryTake(), false, 'tryTake does not barge either');
      await settle(clock);
      assertStarts(starts.log, [
        ['heavy', 300],
        ['light', 400],
      ]);
    });

    it('serves waiters in the order they came', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '100/s', burst: 4, clock });
      const starts = new Starts(clock);
      const weights = [2, 4, 1, 3, 1, 1, 4];
      for (const [i, weight] of weights.entries()) {
        void starts.track(`w${i}`, limiter.wait({ weight }));
      }
      await settle(clock);
      assert.deepEqual(starts.names, ['w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6']);
    });

    it('refuses tryTake while anyone waits, even when the rate would allow it', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', window: 'sliding', clock });
      assert.equal(limiter.tryTake(9), true);
      const heavy = limiter.wait({ weight: 2 });
      assert.equal(limiter.waiting, 1);
      assert.equal(limiter.tryTake(), false);
      await clock.advanceTo(1000);
      await heavy;
      assert.equal(limiter.tryTake(), true);
    });
  });

  describe('cancellation', () => {
    it('rejects an aborted or timed-out wait, consuming nothing: the next starts when it would have', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      assert.equal(limiter.tryTake(), true);
      const controller = new AbortController();
      const starts = new Starts(clock);
      const aborted = starts.track('aborted', limiter.wait({ signal: controller.signal }));
      const timedOut = starts.track('timedOut', limiter.wait({ timeout: 50 }));
      void starts.track('next', limiter.wait());
      void starts.track('then', limiter.wait());
      const t = { t1: 10, t2: 50 };
      await clock.advanceTo(t.t1);
      const reason = new Error('changed my mind');
      controller.abort(reason);
      await assert.rejects(aborted, (error) => error === reason);
      assert.equal(limiter.waiting, 3);
      await clock.advanceTo(t.t2);
      await assert.rejects(timedOut, (error) => {
        assert.ok(error instanceof TimeoutError);
        assert.equal(error.timeout, 50);
        assert.match(error.message, /^wait timed out after 50ms\b/);
        return true;
      });
      assert.equal(limiter.waiting, 2);
      await settle(clock);
      assertStarts(starts.log, [
        ['aborted!', 10],
        ['timedOut!', 50],
        ['next', 100],
        ['then', 200],
      ]);
    });

    it('rejects a wait whose signal is already aborted, even when a start is free, and consumes nothing', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      const reason = new Error('too late');
      await assert.rejects(
        limiter.wait({ signal: AbortSignal.abort(reason) }),
        (e) => e === reason,
      );
      assert.equal(limiter.retryAfter, 0);
      assert.equal(limiter.tryTake(), true);
    });

    it('with a timeout of 0 takes a free start, and otherwise rejects at once', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      await limiter.wait({ timeout: 0 });
      await assert.rejects(limiter.wait({ timeout: 0 }), {
        name: 'TimeoutError',
        message: /^wait timed out after 0ms\b/,
      });
      assert.equal(limiter.waiting, 0);
      assert.equal(clock.pending, 0);
      await clock.advanceTo(after(100));
      assert.equal(limiter.tryTake(), true, 'the timed-out wait consumed nothing');
    });

    it('lets the waiter behind an aborted front start at once when it could', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      assert.equal(limiter.tryTake(2), true);
      const controller = new AbortController();
      const starts = new Starts(clock);
      void starts.track('heavy', limiter.wait({ weight: 3, signal: controller.signal }));
      void starts.track('light', limiter.wait());
      await clock.advanceTo(20);
      assert.deepEqual(starts.names, []);
      controller.abort();
      await flush();
      assertStarts(starts.log, [
        ['heavy!', 20],
        ['light', 20],
      ]);
    });
  });

  describe('reserve()', () => {
    it('never books a start before a window ends, at instants binary fractions cannot hold', async () => {
      // Found by test/rate-change.test.ts: `now + (end - now)` may round below `end`, and then a
      // second start fell inside the window of the first, by 1e-14 ms.
      const instants = [11.999999999999098, 0.1 + 0.2, 1e6 / 3, 2 ** 40 + 0.7];
      for (const first of instants) {
        for (const after of [2.0000000000023688, 0.1, 7 / 3]) {
          for (const window of ['sliding', 'spaced'] as const) {
            const clock = new ManualClock();
            await clock.advanceTo(first);
            const limiter = new RateLimiter({ rate: { limit: 1, interval: 50 }, window, clock });
            assert.ok(limiter.tryTake());
            await clock.advanceTo(first + after);
            const { at } = limiter.reserve();
            assert.ok(at >= first + 50, `${window}: booked at ${at}, before ${first} + 50`);
          }
        }
      }
    });

    it('books the earliest start the rate allows and says when it is', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 2, clock });
      const booked = (r: Reservation): [number, number] => [r.delay, r.at];
      const table: [at: number, weight: number, delay: number, start: number][] = [
        [0, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 1, 100, 100],
        [50, 2, 250, 300],
        [50, 1, 350, 400],
      ];
      for (const [i, [at, weight, delay, start]] of table.entries()) {
        await clock.advanceTo(at);
        const [d, s] = booked(limiter.reserve(weight));
        assert.ok(d >= delay && d < delay + HAIR, `row ${i}: delay ${d}, expected ${delay}`);
        assert.ok(s >= start && s < start + HAIR, `row ${i}: at ${s}, expected ${start}`);
      }
      assert.equal(clock.pending, 0, 'a reservation arms no timer');
      const starts = new Starts(clock);
      void starts.track('waiter', limiter.wait());
      await settle(clock);
      assertStarts(starts.log, [['waiter', 500]]);
    });

    it('books a sliding window’s starts one interval after the ones they displace', () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '2/s', window: 'sliding', clock });
      const ats = Array.from({ length: 5 }, () => limiter.reserve().at);
      assert.deepEqual(ats, [0, 0, 1000, 1000, 2000]);
    });

    it('goes ahead of callers of wait() (it does not queue)', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      limiter.tryTake();
      const starts = new Starts(clock);
      void starts.track('waiter', limiter.wait());
      const reservation = limiter.reserve();
      assert.ok(reservation.at >= 100 && reservation.at < 100 + HAIR);
      await settle(clock);
      assertStarts(starts.log, [['waiter', 200]]);
    });

    it('cancel() gives the last booked slot back before its instant, to whoever comes next', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      const [r0, r1, r2] = [limiter.reserve(), limiter.reserve(), limiter.reserve()];
      const starts = new Starts(clock);
      void starts.track('waiter', limiter.wait());
      await clock.advanceTo(50);
      assert.equal(r1.cancel(), false, 'r2 was booked after r1: r1 stays used');
      assert.equal(r2.cancel(), true);
      assert.equal(r2.cancel(), false, 'a slot is given back once');
      assert.equal(r0.cancel(), false, 'r0’s instant has come');
      await settle(clock);
      // r0 at 0 and r1 at 100 stay booked; the waiter takes r2’s slot at 200.
      assertStarts(starts.log, [['waiter', 200]]);
    });

    it('cancel() returns false once the instant has come, and the slot stays used', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', window: 'sliding', clock });
      limiter.tryTake(9);
      const reservation = limiter.reserve(1);
      assert.equal(reservation.delay, 0);
      const late = limiter.reserve(1);
      assert.equal(late.at, 1000);
      await clock.advanceTo(1000);
      assert.equal(late.cancel(), false);
      // The starts at 0 have left the window; the one booked at 1000 has not.
      assert.equal(limiter.tryTake(10), false);
      assert.equal(limiter.tryTake(9), true);
    });

    it('cancel() gives back a booked weight whole, and keeps the limit when it cannot', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '4/s', window: 'sliding', clock });
      assert.equal(limiter.tryTake(4), true);
      const heavy = limiter.reserve(3);
      const light = limiter.reserve(1);
      assert.deepEqual([heavy.at, light.at], [1000, 1000]);
      assert.equal(heavy.cancel(), false, 'light was booked after it');
      assert.equal(light.cancel(), true);
      await clock.advanceTo(1000);
      assert.equal(limiter.tryTake(2), false, 'heavy’s three starts at 1000 still count');
      assert.equal(limiter.tryTake(1), true);
    });

    it('cancel() tells the truth about giving the slot back after the rate was changed', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      limiter.tryTake();
      const reservation = limiter.reserve();
      limiter.rate = '10/s';
      await clock.advanceTo(50);
      const gaveBack = reservation.cancel();
      // Given back, the next start is due at 100 (50 from now); kept, at 200.
      const expected = gaveBack ? 50 : 150;
      assert.ok(
        Math.abs(limiter.retryAfter - expected) < HAIR,
        `cancel() returned ${gaveBack}, but the next start is due in ${limiter.retryAfter} ms`,
      );
    });
  });

  describe('retryAfter', () => {
    it('says how long until a start of weight 1 would be admitted, ignoring the line', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      const near = (expected: number): void => {
        assert.ok(
          Math.abs(limiter.retryAfter - expected) < HAIR,
          `retryAfter is ${limiter.retryAfter}, expected ${expected}`,
        );
      };
      near(0);
      limiter.tryTake();
      near(100);
      const waiters = [limiter.wait(), limiter.wait()];
      near(100);
      await clock.advanceTo(30);
      near(70);
      // The first waiter starts at 100; the next start is due at 200.
      await clock.advanceTo(150);
      near(50);
      await settle(clock);
      await Promise.all(waiters);
    });

    it('counts from the oldest start that must leave a sliding window', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '2/s', window: 'sliding', clock });
      limiter.tryTake();
      assert.equal(limiter.retryAfter, 0);
      await clock.advanceTo(300);
      limiter.tryTake();
      assert.equal(limiter.retryAfter, 700);
      await clock.advanceTo(1000);
      assert.equal(limiter.retryAfter, 0);
      limiter.tryTake();
      assert.equal(limiter.retryAfter, 300);
    });
  });

  describe('changing the rate', () => {
    it('serves the line again under the new rate', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '1/s', clock });
      limiter.tryTake();
      const starts = new Starts(clock);
      for (const name of ['a', 'b', 'c']) void starts.track(name, limiter.wait());
      await clock.advanceTo(150);
      assert.deepEqual(starts.names, []);
      limiter.rate = '10/s';
      assert.deepEqual(limiter.rate, ['10/s']);
      assert.equal(clock.pending, 1);
      await settle(clock);
      // The last start was at 0: under 10/s the next is due at 100, so a starts at once.
      assertStarts(starts.log, [
        ['a', 150],
        ['b', 250],
        ['c', 350],
      ]);
    });

    it('carries the history over: the next start is one new interval after the last', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      await tryTakeTable(clock, limiter, [[0, 1, true]]);
      await clock.advanceTo(50);
      limiter.rate = '1/s';
      const t = { t1: after(1000) };
      await tryTakeTable(clock, limiter, [
        [50, 1, false],
        [before(1000), 1, false],
        [t.t1, 1, true],
        [t.t1, 1, false],
      ]);
      limiter.rate = '100/s';
      await tryTakeTable(clock, limiter, [
        [before(t.t1 + 10), 1, false],
        [after(t.t1 + 10), 1, true],
      ]);
    });

    it('keeps the new bound in the window of the change, counting the starts before it', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', burst: 3, clock });
      const starts: { at: number; weight: number }[] = [];
      for (let i = 0; i < 3; i++) {
        assert.equal(limiter.tryTake(), true);
        starts.push({ at: 0, weight: 1 });
      }
      limiter.rate = '3/s';
      for (let i = 0; i < 6; i++) {
        void limiter.wait().then(() => starts.push({ at: clock.now(), weight: 1 }));
      }
      await settle(clock);
      // Under 3/s with burst 3, no second may hold more than 3 + 3 − 1 starts.
      assert.ok(
        busiestWindow(starts, 1000) <= 5,
        `starts at ${starts.map((s) => s.at.toFixed(1)).join(', ')}`,
      );
    });

    it('can be changed on a sliding window', () => {
      const limiter = new RateLimiter({ rate: '10/s', window: 'sliding' });
      limiter.rate = ['5/s', '100/min'];
      assert.deepEqual(limiter.rate, ['5/s', '100/min']);
    });

    it('rejects waiters heavier than a lowered sliding limit, as a lowered capacity does', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', window: 'sliding', clock });
      limiter.tryTake(10);
      const heavy = limiter.wait({ weight: 5 });
      const starts = new Starts(clock);
      void starts.track('heavy', heavy);
      limiter.rate = '2/s';
      await settle(clock);
      assert.deepEqual(starts.names, ['heavy!'], 'five starts can never fit in a limit of 2');
      await assert.rejects(heavy, RangeError);
    });

    it('keeps each rate’s history when the rates are listed in another order', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: ['2/s', '3/min'], window: 'sliding', clock });
      await tryTakeTable(clock, limiter, [
        [0, 1, true],
        [0, 1, true],
        [1000, 1, true],
        [1000, 1, false],
      ]);
      limiter.rate = ['3/min', '2/s'];
      await tryTakeTable(clock, limiter, [
        [1000, 1, false],
        [30_000, 1, false],
        [60_000, 1, true],
      ]);
    });

    it('refuses a bad rate and keeps the old one', () => {
      const limiter = new RateLimiter({ rate: '10/s', burst: 3 });
      assert.throws(() => (limiter.rate = '0/s'), {
        name: 'RangeError',
        message: `Expected \`rate\` to be ${EXPECTED_RATE}, got \`"0/s"\` (string)`,
      });
      assert.throws(() => (limiter.rate = []), {
        name: 'RangeError',
        message: 'Expected `rate` to hold at least one rate, got `[array]` (array)',
      });
      assert.throws(() => (limiter.rate = ['10/s', '2/s']), {
        name: 'RangeError',
        message: 'Expected `burst` to be at most the limit of every rate, got `3` (number) for 2/s',
      });
      assert.deepEqual(limiter.rate, ['10/s']);
      assert.equal(limiter.tryTake(3), true);
    });
  });

  describe('timers', () => {
    it('arms no timer while nobody waits, and exactly one while anyone does', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '10/s', clock });
      assert.equal(clock.pending, 0);
      await limiter.wait();
      limiter.reserve();
      assert.equal(clock.pending, 0, 'idle after a start and a reservation');
      const waiters = Array.from({ length: 5 }, () => limiter.wait());
      assert.equal(clock.pending, 1, 'one timer for the whole line');
      await clock.advanceTo(after(300));
      assert.equal(limiter.waiting, 3);
      assert.equal(clock.pending, 1);
      await settle(clock);
      await Promise.all(waiters);
      assert.equal(clock.pending, 0, 'idle once the line is served');
    });

    it('disarms the timer when the last waiter leaves by abort, timeout or close', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '1/s', clock });
      limiter.tryTake();
      const controller = new AbortController();
      const aborted = limiter.wait({ signal: controller.signal });
      assert.equal(clock.pending, 1);
      controller.abort();
      await assert.rejects(aborted, { name: 'AbortError' });
      assert.equal(clock.pending, 0);

      const timedOut = assert.rejects(limiter.wait({ timeout: 10 }), TimeoutError);
      assert.equal(clock.pending, 2, 'the pacer timer and the timeout');
      await clock.advance(10);
      await timedOut;
      assert.equal(clock.pending, 0);

      const closed = limiter.wait();
      assert.equal(clock.pending, 1);
      limiter.close();
      await assert.rejects(closed, ClosedError);
      assert.equal(clock.pending, 0);
    });
  });

  describe('close()', () => {
    it('rejects every waiter and every later call', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: '1/s', clock });
      limiter.tryTake();
      const waiters = [limiter.wait(), limiter.wait({ weight: 1 })];
      limiter.close();
      for (const waiter of waiters) {
        await assert.rejects(waiter, {
          name: 'ClosedError',
          message: 'the rate limiter is closed',
        });
      }
      await assert.rejects(limiter.wait(), ClosedError);
      assert.throws(() => limiter.tryTake(), ClosedError);
      assert.throws(() => limiter.reserve(), ClosedError);
    });

    it('rejects with the reason given', async () => {
      const limiter = new RateLimiter('1/s');
      limiter.tryTake();
      const waiter = limiter.wait();
      const reason = new Error('shutting down');
      limiter.close(reason);
      await assert.rejects(waiter, (error) => error === reason);
    });

    it('describes itself like RateLimiter(10/s and 500/min, 2 waiting)', async () => {
      const clock = new ManualClock();
      const limiter = new RateLimiter({ rate: ['10/s', '500/min'], clock });
      limiter.tryTake();
      const waiters = [limiter.wait(), limiter.wait()];
      assert.equal(String(limiter), 'RateLimiter(10/s and 500/min, 2 waiting)');
      limiter.close();
      assert.equal(String(limiter), 'RateLimiter(10/s and 500/min, 0 waiting, closed)');
      await Promise.allSettled(waiters);
    });
  });
});

// Properties ------------------------------------------------------------------------------------

interface Scenario {
  window: 'spaced' | 'sliding';
  rates: { limit: number; interval: number }[];
  /** For a spaced window; at most the smallest limit. */
  burst: number;
  /** How early the clock's timers fire (0: on time). */
  early: number;
}

/** Random rates, a window kind, a burst that fits, and an exact or early clock. */
const scenarioArb: fc.Arbitrary<Scenario> = fc
  .record({
    window: fc.constantFrom('spaced' as const, 'sliding' as const),
    rates: fc.array(
      fc.record({
        limit: fc.integer({ min: 1, max: 8 }),
        interval: fc.oneof(fc.integer({ min: 1, max: 400 }), fc.constantFrom(1000 / 3, 0.7, 100.5)),
      }),
      { minLength: 1, maxLength: 3 },
    ),
    burstSeed: fc.nat(),
    early: fc.oneof(fc.constantFrom(0, 1, 25), fc.double({ min: 1e-4, max: 2, noNaN: true })),
  })
  .map(({ window, rates, burstSeed, early }) => {
    const smallest = Math.min(...rates.map((rate) => rate.limit));
    return { window, rates, burst: window === 'spaced' ? 1 + (burstSeed % smallest) : 1, early };
  });

function limiterFor(scenario: Scenario, clock: EarlyClock): RateLimiter {
  return new RateLimiter({
    rate: scenario.rates,
    clock,
    ...(scenario.window === 'spaced' ? { burst: scenario.burst } : { window: 'sliding' }),
  });
}

/** The most weight a window of a rate may ever hold. */
function bound(scenario: Scenario, limit: number): number {
  return scenario.window === 'sliding' ? limit : limit + scenario.burst - 1;
}

/** The heaviest start the scenario's rates admit at once. */
function maxWeight(scenario: Scenario): number {
  return scenario.window === 'sliding'
    ? Math.min(...scenario.rates.map((rate) => rate.limit))
    : scenario.burst;
}

interface Arrival {
  at: number;
  kind: 'wait' | 'tryTake' | 'reserve';
  /** Scaled to the scenario's heaviest admissible start. */
  weightSeed: number;
  /** A wait's abort, a reservation's cancel: this long after it arrives (undefined: never). */
  cancelAfter: number | undefined;
  /** A wait's timeout. */
  timeout: number | undefined;
}

const arrivalArb: fc.Arbitrary<Arrival> = fc.record({
  at: fc.oneof(fc.integer({ min: 0, max: 800 }), fc.double({ min: 0, max: 800, noNaN: true })),
  kind: fc.constantFrom('wait' as const, 'wait' as const, 'tryTake' as const, 'reserve' as const),
  weightSeed: fc.nat(),
  cancelAfter: fc.option(fc.integer({ min: 0, max: 300 }), { nil: undefined }),
  timeout: fc.option(fc.integer({ min: 0, max: 300 }), { nil: undefined }),
});

describe('RateLimiter properties', () => {
  it('never admits more than a window’s bound, under random arrivals, weights, aborts, timeouts and reservations', async () => {
    await fc.assert(
      fc.asyncProperty(
        scenarioArb,
        fc.array(arrivalArb, { minLength: 1, maxLength: 40, size: 'max' }),
        async (scenario, arrivals) => {
          const clock = new EarlyClock(scenario.early);
          const limiter = limiterFor(scenario, clock);
          const heaviest = maxWeight(scenario);
          const starts: { at: number; weight: number }[] = [];
          const waits: Promise<void>[] = [];
          const events: { at: number; run: () => void }[] = [];
          for (const arrival of arrivals) {
            const weight = 1 + (arrival.weightSeed % heaviest);
            events.push({
              at: arrival.at,
              run: () => {
                const now = clock.now();
                if (arrival.kind === 'tryTake') {
                  if (limiter.tryTake(weight)) starts.push({ at: now, weight });
                } else if (arrival.kind === 'reserve') {
                  const reservation = limiter.reserve(weight);
                  assert.equal(reservation.at, now + reservation.delay);
                  const start = { at: reservation.at, weight };
                  starts.push(start);
                  if (arrival.cancelAfter !== undefined) {
                    events.push({
                      at: now + arrival.cancelAfter,
                      run: () => {
                        const early = clock.now() < reservation.at;
                        if (reservation.cancel()) {
                          assert.ok(early, 'a reservation is cancelled only before its instant');
                          starts.splice(starts.indexOf(start), 1);
                        }
                      },
                    });
                  }
                } else {
                  const controller = new AbortController();
                  const reason = new Error('aborted');
                  const wait = limiter.wait({
                    weight,
                    signal: controller.signal,
                    ...(arrival.timeout === undefined ? {} : { timeout: arrival.timeout }),
                  });
                  waits.push(
                    wait.then(
                      () => {
                        starts.push({ at: clock.now(), weight });
                      },
                      (error: unknown) => {
                        assert.ok(
                          error === reason || error instanceof TimeoutError,
                          `a wait failed with ${String(error)}`,
                        );
                      },
                    ),
                  );
                  if (arrival.cancelAfter !== undefined) {
                    events.push({
                      at: now + arrival.cancelAfter,
                      run: () => {
                        controller.abort(reason);
                      },
                    });
                  }
                }
              },
            });
          }
          // Play the events in time order (events added while playing join the queue).
          for (;;) {
            let next = -1;
            for (const [i, event] of events.entries()) {
              if (next === -1 || event.at < events[next]!.at) next = i;
            }
            if (next === -1) break;
            const [event] = events.splice(next, 1);
            await clock.advanceTo(event!.at);
            event!.run();
            await flush();
          }
          await settle(clock);
          await Promise.all(waits);
          assert.equal(limiter.waiting, 0);
          assert.equal(clock.pending, 0, 'no timer once nobody waits');
          for (const rate of scenario.rates) {
            const most = busiestWindow(starts, rate.interval);
            assert.ok(
              most <= bound(scenario, rate.limit),
              `${most} starts in one window of ${rate.interval} ms, limit ${rate.limit}`,
            );
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('loses no throughput under saturating demand: at least what the strictest rate allows, minus a burst', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, fc.integer({ min: 5, max: 120 }), async (scenario, slots) => {
        const clock = new EarlyClock(scenario.early);
        const limiter = limiterFor(scenario, clock);
        // The strictest even spacing that every rate allows.
        const spacing = Math.max(...scenario.rates.map((rate) => rate.interval / rate.limit));
        const horizon = slots * spacing + spacing / 2;
        const allowed = Math.floor(horizon / spacing) + scenario.burst;
        const starts: number[] = [];
        const waits = Array.from({ length: allowed + 8 * scenario.rates.length }, () =>
          limiter.wait().then(
            () => {
              starts.push(clock.now());
            },
            () => undefined,
          ),
        );
        await flush(); // the first starts are recorded at t=0, before the clock moves
        await clock.advanceTo(horizon);
        limiter.close();
        await Promise.all(waits);
        assert.ok(
          starts.length >= allowed - scenario.burst,
          `${starts.length} starts by t=${horizon}, expected at least ${allowed - scenario.burst}`,
        );
        for (const rate of scenario.rates) {
          const most = busiestWindow(
            starts.map((at) => ({ at, weight: 1 })),
            rate.interval,
          );
          assert.ok(
            most <= bound(scenario, rate.limit),
            `${most} starts in one window of ${rate.interval} ms, limit ${rate.limit}`,
          );
        }
      }),
      { numRuns: 60 },
    );
  });
});
