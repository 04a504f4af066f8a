/**
 * `adaptive()`: its options, and what it learns from each outcome, step by step on a ManualClock
 * (the permits are taken and given back by hand, with the outcome each reports). How the
 * algorithms behave against a simulated resource over minutes is test/adaptive-scenarios.test.ts;
 * against a real HTTP server, test/adaptive-http.test.ts; the gate contract, test/gates.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  adaptive,
  KeyedLimiter,
  Limiter,
  ThrottledError,
  type AdaptiveLimit,
  type LimitChangeEvent,
  type Permit,
} from '../src/index.ts';
import { AdaptiveLimit as AdaptiveClass } from '../src/adaptive.ts';
import type { LimitChange, LimitState, LimitStore, StoreUser } from '../src/_limit-store.ts';
import { flush, ManualClock } from './_helpers/clock.ts';
import { catchUncaught } from './_helpers/uncaught.ts';

/** Takes `n` permits at once (each must be granted at once). */
function take(gate: AdaptiveLimit, n: number): Permit[] {
  return Array.from({ length: n }, () => {
    const permit = gate.tryAcquire();
    assert.ok(permit, `a permit free at ${gate.toString()}`);
    return permit;
  });
}

/**
 * One round trip at full use: takes every permit, lets `ms` pass, and gives them back with
 * `latencyMs` (a window closes on the last, begun after the window opened).
 */
async function roundTrip(
  gate: AdaptiveLimit,
  clock: ManualClock,
  latencyMs: number,
  ms = latencyMs,
): Promise<void> {
  const permits = take(gate, gate.limit);
  assert.equal(gate.tryAcquire(), undefined, 'the limit is reached');
  await clock.advance(ms);
  for (const permit of permits) permit.release({ ok: true, latencyMs });
}

describe('adaptive(): options', () => {
  it('has documented defaults', () => {
    const gate = adaptive();
    assert.deepEqual(
      [gate.algorithm, gate.min, gate.max, gate.limit, gate.capacity],
      ['gradient2', 1, 200, 10, 10],
    );
    assert.equal(adaptive({ max: 5 }).limit, 5, 'initial within max');
    assert.equal(adaptive({ min: 30 }).limit, 30, 'initial within min');
    assert.equal(
      String(adaptive({ algorithm: 'vegas', initial: 3 })),
      'AdaptiveLimit(vegas, 0/3 held, 0 waiting)',
    );
  });

  const bad: [string, unknown, ErrorConstructor, RegExp][] = [
    ['min 0', { min: 0 }, RangeError, /^Expected `min` to be an integer >= 1, got `0` \(number\)$/],
    [
      'min above max',
      { min: 10, max: 5 },
      RangeError,
      /^Expected `min` to be at most `max` \(5\), got `10` \(number\)$/,
    ],
    [
      'an unknown algorithm',
      { algorithm: 'bbr' },
      TypeError,
      /^Expected `algorithm` to be one of 'aimd', 'vegas', 'gradient2', got `"bbr"` \(string\)$/,
    ],
    [
      'initial out of range',
      { initial: 300 },
      RangeError,
      /^Expected `initial` to be an integer from `min` \(1\) to `max` \(200\), got `300` \(number\)$/,
    ],
    ['a fractional max', { max: 2.5 }, RangeError, /^Expected `max` to be an integer >= 1/],
    [
      'a backoff of 1',
      { backoff: 1 },
      RangeError,
      /^Expected `backoff` to be a number > 0 and < 1, got `1` \(number\)$/,
    ],
    ['a string backoff', { backoff: '0.5' }, TypeError, /^Expected `backoff`/],
    [
      'a tolerance below 1',
      { tolerance: 0.9 },
      RangeError,
      /^Expected `tolerance` to be a number >= 1 or Infinity/,
    ],
    [
      'an option of another algorithm',
      { algorithm: 'aimd', smoothing: 0.5 },
      TypeError,
      /^Expected `smoothing` to be absent: it is an option of 'gradient2', not of 'aimd'/,
    ],
    [
      'beta below alpha',
      { algorithm: 'vegas', alpha: 4, beta: 2 },
      RangeError,
      /^Expected `beta` to be at least `alpha` \(4\), got `2` \(number\)$/,
    ],
    [
      'a throttle of another kind',
      { throttle: 2 },
      TypeError,
      /^Expected `throttle` to be a boolean or an object, got `2` \(number\)$/,
    ],
    [
      'a throttle k below 1',
      { throttle: { k: 0.5 } },
      RangeError,
      /^Expected `throttle.k` to be a number >= 1/,
    ],
    ['options that are not an object', 'fast', TypeError, /^Expected `options` to be an object/],
  ];
  for (const [what, options, Kind, message] of bad) {
    it(`refuses ${what}, naming the option`, () => {
      assert.throws(
        () => adaptive(options as never),
        (error: unknown) => error instanceof Kind && message.test(error.message),
      );
    });
  }
});

describe('adaptive(): what it learns', () => {
  it('grows after a round trip in use with the latency holding, one step per round trip', async () => {
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'aimd', initial: 10, clock });
    const changes: LimitChangeEvent[] = [];
    gate.on('limit', (change) => changes.push(change));
    await roundTrip(gate, clock, 100); // the first window sets the baseline: 100 ms
    await roundTrip(gate, clock, 100);
    assert.deepEqual(
      changes.map((c) => [c.previous, c.limit, c.reason, c.at]),
      [
        [10, 11, 'growth', 100],
        [11, 12, 'growth', 200],
      ],
    );
    assert.deepEqual(gate.stats().history, [
      { at: 100, limit: 11 },
      { at: 200, limit: 12 },
    ]);
    assert.equal(gate.stats().baselineMs, 100);
  });

  it('does not grow while it is not in use (the work is starved of input)', async () => {
    const clock = new ManualClock();
    for (const algorithm of ['aimd', 'vegas', 'gradient2'] as const) {
      const gate = adaptive({ algorithm, initial: 10, clock });
      for (let i = 0; i < 50; i++) {
        const permits = take(gate, 9); // one short of the limit, every time
        await clock.advance(100);
        for (const permit of permits) permit.release({ ok: true, latencyMs: 100 });
      }
      assert.equal(gate.limit, 10, algorithm);
      assert.equal(gate.stats().increases, 0, algorithm);
    }
  });

  it('backs off by `backoff` at once on a drop, once for all the work begun before it', async () => {
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'aimd', initial: 20, backoff: 0.5, clock });
    const permits = take(gate, 20);
    await clock.advance(10);
    // A burst of 429s for work sent at the same time: one cut, not twenty.
    for (const permit of permits) permit.release({ ok: false, dropped: true, latencyMs: 10 });
    assert.equal(gate.limit, 10);
    // Work begun after the cut that is dropped cuts again.
    const later = take(gate, 10);
    await clock.advance(10);
    later[0]!.release({ ok: false, dropped: true, latencyMs: 10 });
    assert.equal(gate.limit, 5);
    assert.deepEqual([gate.stats().drops, gate.stats().decreases], [21, 2]);
    for (const permit of later) permit.release({ ok: true, latencyMs: 10 });
    assert.equal(gate.held, 0);
  });

  it('backs off on drops in every algorithm', async () => {
    for (const algorithm of ['aimd', 'vegas', 'gradient2'] as const) {
      const clock = new ManualClock();
      const gate = adaptive({ algorithm, initial: 20, clock });
      const permit = take(gate, 1)[0]!;
      await clock.advance(5);
      permit.release({ ok: false, dropped: true, latencyMs: 5 });
      assert.equal(gate.limit, 18, algorithm);
    }
  });

  it('learns nothing from a cancelled task (no outcome) or a failure that is not a drop', async () => {
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'aimd', initial: 4, clock });
    for (let i = 0; i < 20; i++) {
      const permits = take(gate, 4);
      await clock.advance(100);
      permits[0]!.release();
      permits[1]!.release({ ok: false, latencyMs: 100 });
      permits[2]![Symbol.dispose]();
      permits[3]!.release({ ok: false, latencyMs: 1 });
    }
    assert.equal(gate.limit, 4);
    assert.equal(gate.stats().baselineMs, undefined, 'no window closed');
    assert.equal(gate.stats().samples, 40, 'the two failures of each round');
  });

  it('leaves out the latencies of work begun before a decrease', async () => {
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'gradient2', initial: 10, clock });
    await roundTrip(gate, clock, 100);
    const crowded = take(gate, gate.limit);
    const dropped = crowded.pop()!;
    dropped.release({ ok: false, dropped: true, latencyMs: 1 }); // a cut, at t = 100
    const cut = gate.limit;
    await clock.advance(900);
    // Their latency (10× the baseline) measured the crowd the cut answered: no further cut.
    for (const permit of crowded) permit.release({ ok: true, latencyMs: 1000 });
    assert.equal(gate.limit, cut);
  });

  it('keeps the limit within min and max', async () => {
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'aimd', min: 3, max: 6, initial: 5, clock });
    for (let i = 0; i < 5; i++) await roundTrip(gate, clock, 100);
    assert.equal(gate.limit, 6);
    for (let i = 0; i < 10; i++) {
      const permit = take(gate, 1)[0]!;
      await clock.advance(1);
      permit.release({ ok: false, dropped: true, latencyMs: 1 });
    }
    assert.equal(gate.limit, 3);
  });

  it('refuses a request heavier than min, on both paths: the limit may fall that low', async () => {
    const gate = adaptive({ min: 2, initial: 10 });
    await assert.rejects(gate.acquire({ weight: 3 }), /at most `min` \(2\)/);
    assert.throws(() => gate.tryAcquire(3), RangeError);
    (await gate.acquire({ weight: 2 })).release();
  });

  it('goes on when a listener throws, and throws that again on its own', async (t) => {
    const thrown = catchUncaught(t);
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'aimd', initial: 10, clock });
    gate.on('limit', () => {
      throw new Error('listener');
    });
    await roundTrip(gate, clock, 100);
    assert.equal(gate.limit, 11);
    assert.equal(gate.held, 0);
    await flush();
    assert.deepEqual(
      thrown.map((e) => (e as Error).message),
      ['listener'],
    );
  });
});

describe('adaptive(): in a limiter', () => {
  it("is a Limiter's concurrency: stats().concurrency reads the limit as it moves", async () => {
    const clock = new ManualClock();
    const gate = adaptive({ algorithm: 'aimd', initial: 2, clock });
    const limiter = new Limiter({ concurrency: gate, clock });
    const tasks = Array.from({ length: 4 }, () =>
      limiter.schedule(
        () =>
          new Promise<void>((resolve) => {
            clock.setTimeout(resolve, 50);
          }),
      ),
    );
    await flush();
    assert.deepEqual([limiter.stats().active, limiter.stats().pending], [2, 2]);
    await clock.advance(50);
    assert.equal(limiter.stats().concurrency, 3, 'a round trip in use');
    await clock.advance(50);
    await Promise.all(tasks);
    assert.equal(limiter.concurrency, gate.limit);
  });

  it('is forked for each key of a KeyedLimiter: each key learns on its own', async () => {
    const clock = new ManualClock();
    const template = adaptive({ algorithm: 'aimd', initial: 4, backoff: 0.5, clock });
    const keyed = new KeyedLimiter({ perKey: { concurrency: template }, clock });
    const heard: [unknown, number][] = [];
    template.on('limit', (change) => heard.push([change.key, change.limit]));
    const refused = Object.assign(new Error('too many'), { status: 429 });
    await assert.rejects(keyed.schedule('a', () => Promise.reject(refused)));
    await keyed.schedule('b', () => 'ok');
    assert.deepEqual(heard, [['a', 2]]);
    assert.equal(keyed.limiterFor('a').stats().concurrency, 2);
    assert.equal(keyed.limiterFor('b').stats().concurrency, 4);
    assert.equal(template.limit, 4, 'the template itself is not used');
    // The same from a function of the key that returns the one template each time.
    const perFunction = new KeyedLimiter({ perKey: () => ({ concurrency: template }), clock });
    await assert.rejects(perFunction.schedule('c', () => Promise.reject(refused)));
    assert.equal(perFunction.limiterFor('c').stats().concurrency, 2);
    assert.equal(perFunction.limiterFor('d').stats().concurrency, 4);
  });
});

describe('adaptive({ throttle }): client-side throttling', () => {
  it('refuses nothing while the server accepts at least half, then refuses with odds (requests − 2 × accepts) / (requests + 1)', async () => {
    const clock = new ManualClock();
    let draw = 0.5;
    const gate = adaptive({
      algorithm: 'aimd',
      initial: 50,
      throttle: true,
      clock,
      random: () => draw,
    });
    const answer = async (accepted: number, refused: number): Promise<void> => {
      const permits = take(gate, accepted + refused);
      await clock.advance(1);
      permits.forEach((permit, i) => {
        permit.release({ ok: i < accepted, dropped: i >= accepted, latencyMs: 1 });
      });
    };
    await answer(10, 10); // half accepted: (20 − 2 × 10) / 21 = 0
    draw = 0; // refused with any odds above 0
    const allowed = gate.tryAcquire();
    assert.ok(allowed);
    allowed.release();
    assert.equal(gate.stats().throttled, 0);
    await answer(0, 20); // 40 requests, 10 accepted: (40 − 20) / 41
    draw = 20 / 41 - 1e-9; // just under the odds
    await assert.rejects(gate.acquire(), (error: unknown) => {
      assert.ok(error instanceof ThrottledError);
      assert.equal(error.code, 'ERR_SLUICE_THROTTLED');
      assert.equal(error.probability, 21 / 42, 'the refusal counts: 41 requests now');
      return true;
    });
    assert.deepEqual([gate.stats().throttled, gate.held], [1, 0]);
    draw = 21 / 42; // not under the odds
    (await gate.acquire()).release();
    draw = 0;
    assert.throws(() => gate.tryAcquire(), ThrottledError);
  });

  it('counts only the last `window` ms', async () => {
    const clock = new ManualClock();
    const gate = adaptive({
      algorithm: 'aimd',
      initial: 50,
      throttle: { window: 1000 },
      clock,
      random: () => 0,
    });
    const permits = take(gate, 20);
    await clock.advance(1);
    for (const permit of permits) permit.release({ ok: false, dropped: true, latencyMs: 1 });
    assert.throws(() => gate.tryAcquire(), ThrottledError);
    await clock.advance(1000);
    const permit = gate.tryAcquire();
    assert.ok(permit, 'the refusals have aged out');
    permit.release();
  });
});

describe('adaptive(): where its state lives', () => {
  /** A store that answers each proposal later, as a shared one would: when `answer()` is called. */
  class LaterStore implements LimitStore {
    state: LimitState = { limit: 10, increasedAt: -Infinity, decreasedAt: -Infinity };
    readonly proposed: LimitChange[] = [];
    readonly #pending: (() => void)[] = [];

    change(change: LimitChange): Promise<LimitState> {
      this.proposed.push(change);
      return new Promise((resolve) => {
        this.#pending.push(() => {
          this.state = { ...this.state, limit: change.to };
          resolve(this.state);
        });
      });
    }

    answer(): void {
      for (const answer of this.#pending.splice(0)) answer();
    }
  }

  /**
   * A shared store as a fleet of 4 would answer: a total of 40, this client's share 10; it takes
   * each proposal and adds the change of the proposer's part to the total.
   */
  class SharedStore implements LimitStore {
    state: LimitState = {
      limit: 40,
      increasedAt: -Infinity,
      decreasedAt: -Infinity,
      share: 10,
      clients: 4,
    };
    readonly proposed: LimitChange[] = [];

    attach(user: StoreUser): void {
      queueMicrotask(() => {
        user.update(this.state);
      });
    }

    change(change: LimitChange): LimitState {
      this.proposed.push(change);
      const limit = this.state.limit + change.to - change.from;
      this.state = { ...this.state, limit, share: Math.floor(limit / 4) };
      return this.state;
    }
  }

  it('of a shared limit, moves its own share, as a limit of its own would (the store adds the change to the total)', async () => {
    for (const [algorithm, rise] of [
      ['aimd', 1],
      ['gradient2', 0.2 * 3 * Math.log10(10)],
      ['vegas', 1],
    ] as const) {
      const clock = new ManualClock();
      const store = new SharedStore();
      const gate = new AdaptiveClass({ algorithm, initial: 10, max: 100, clock }, { store });
      await flush();
      assert.equal(gate.limit, 10, 'it admits its share');
      await roundTrip(gate, clock, 50);
      const [growth] = store.proposed;
      assert.equal(growth?.reason, 'growth', algorithm);
      assert.equal(growth.from, 10, `${algorithm} grows its share, not the total`);
      assert.ok(Math.abs(growth.to - 10 - rise) < 1e-9, `${algorithm}: ${growth.to}`);
      assert.equal(store.state.limit, 40 + growth.to - 10);
    }
    // A queue: aimd backs off its share by `backoff`, and the total by as much.
    const clock = new ManualClock();
    const store = new SharedStore();
    const gate = new AdaptiveClass({ algorithm: 'aimd', initial: 10, clock }, { store });
    await flush();
    await roundTrip(gate, clock, 50);
    const share = store.state.share!; // 41 for 4: 10
    await roundTrip(gate, clock, 100);
    const shrink = store.proposed.at(-1);
    assert.deepEqual([shrink?.reason, shrink?.from, shrink?.to], ['latency', share, share * 0.9]);
    assert.equal(store.state.limit, 41 - share * 0.1);
  });

  it('of a shared limit, vegas keeps its part of the queue the whole limit would keep, not a whole one of its own', async () => {
    // A round trip at the no-load latency, then one at which 18% of the requests wait (1.8 of a
    // part of 10). A limit of 10 of its own keeps 2 to 4 waiting: it grows. A part of 10 of a
    // total of 41 keeps its part of what 41 keeps (3.2 to 6.5): 0.8 to 1.6: it shrinks.
    const waiting = 50 / (1 - 0.18);
    const clock = new ManualClock();
    const alone = new AdaptiveClass({ algorithm: 'vegas', initial: 10, clock });
    await roundTrip(alone, clock, 50);
    const grown = alone.limit;
    await roundTrip(alone, clock, waiting);
    assert.ok(alone.limit > grown, `alone: ${grown} to ${alone.limit}`);

    const store = new SharedStore();
    const shared = new AdaptiveClass({ algorithm: 'vegas', initial: 10, clock }, { store });
    await flush();
    await roundTrip(shared, clock, 50);
    assert.deepEqual([store.state.limit, shared.limit], [41, 10]);
    await roundTrip(shared, clock, waiting);
    const change = store.proposed.at(-1)!;
    assert.deepEqual([change.reason, change.from], ['latency', 10]);
    assert.ok(Math.abs(change.to - (10 - 1.8 + 1.5 * 2 * Math.log10(41) * (10 / 41))) < 1e-9);
  });

  it('of a shared limit, closes a window at as many samples as its share, as a limit of its own would', async () => {
    const clock = new ManualClock();
    const store = new SharedStore();
    store.state = { ...store.state, limit: 12, share: 3 };
    const gate = new AdaptiveClass({ algorithm: 'aimd', initial: 10, clock }, { store });
    await flush();
    assert.equal(gate.limit, 3);
    await roundTrip(gate, clock, 50);
    assert.deepEqual(
      store.proposed.map((change) => [change.from, change.to]),
      [[3, 4]],
      'a round trip of its 3 samples closes a window: it grows its share',
    );
  });

  it('proposes each change to its store, and admits by the answer once it comes', async () => {
    const clock = new ManualClock();
    const store = new LaterStore();
    const gate = new AdaptiveClass(
      { algorithm: 'aimd', initial: 10, backoff: 0.5, clock },
      { store },
    );
    const permit = take(gate, 1)[0]!;
    await clock.advance(1);
    permit.release({ ok: false, dropped: true, latencyMs: 1 });
    assert.deepEqual(store.proposed, [
      { kind: 'decrease', reason: 'drop', from: 10, to: 5, at: 1 },
    ]);
    assert.equal(gate.limit, 10, 'not before the store answers');
    store.answer();
    await flush();
    assert.equal(gate.limit, 5);
  });
});
