/**
 * The task life cycle under real gates: every attempt, the first and every retry, passes every
 * gate of the limiter that runs it — its own concurrency and rate, a gate it was given in their
 * place, a keyed limiter's global concurrency and rate — and gives their permits back with what
 * happened. No attempt starts after close(). Tables over named instants on a ManualClock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ClosedError,
  KeyedLimiter,
  Limiter,
  RateLimiter,
  Semaphore,
  TimeoutError,
} from '../src/index.ts';
import { flush, ManualClock, state } from './_helpers/clock.ts';
import { RecordingGate } from './_helpers/recording-gate.ts';
import { asyncOnly } from './contract/gate.ts';

/** Records the instants attempts start, by name. */
class Starts {
  readonly log: [string, number][] = [];
  readonly #clock: ManualClock;

  constructor(clock: ManualClock) {
    this.#clock = clock;
  }

  /** A task that fails its first `failures` attempts, then returns `name`. */
  task(name: string, failures = 0): () => string {
    let attempts = 0;
    return () => {
      this.log.push([name, Math.round(this.#clock.now() * 1000) / 1000]);
      if (attempts++ < failures) throw new Error(`${name} failed`);
      return name;
    };
  }

  /** The shortest time between two starts. */
  get closest(): number {
    const instants = this.log.map(([, at]) => at).sort((a, b) => a - b);
    let closest = Infinity;
    for (let i = 1; i < instants.length; i++)
      closest = Math.min(closest, instants[i]! - instants[i - 1]!);
    return closest;
  }
}

/** Fires every timer, in order, until none is left. */
async function settle(clock: ManualClock): Promise<void> {
  await flush();
  while (clock.nextAt !== undefined) await clock.advanceTo(clock.nextAt);
}

/** Moves time on (timer by timer) until every promise has settled; resolves to their values. */
async function runAll<T>(clock: ManualClock, promises: Promise<T>[]): Promise<T[]> {
  const progress = { done: false };
  const all = Promise.all(promises).finally(() => {
    progress.done = true;
  });
  all.catch(() => undefined);
  for (let i = 0; !progress.done; i++) {
    if (i > 10_000) throw new Error('the promises never settle');
    await flush();
    if (clock.nextAt !== undefined) await clock.advanceTo(clock.nextAt);
  }
  return all;
}

const retryNow = { retries: 2, minDelay: 0, jitter: 'none' } as const;

describe('every attempt passes every gate', () => {
  it('a Limiter passes the concurrency gate it was given on every attempt, retries included', async () => {
    const clock = new ManualClock();
    const gate = new RecordingGate(1, clock);
    const limiter = new Limiter({ concurrency: gate, retry: retryNow, clock });
    const starts = new Starts(clock);
    const results = [
      limiter.schedule(starts.task('a', 2), { priority: 3 }),
      limiter.schedule(starts.task('b')),
    ];
    assert.deepEqual(await runAll(clock, results), ['a', 'b']);
    assert.equal(gate.acquired.length, 4, 'a: three attempts, b: one');
    assert.deepEqual(
      gate.acquired.map((options) => [options.weight, options.priority]),
      [
        [1, 3],
        [1, 0],
        [1, 3],
        [1, 3],
      ],
    );
    assert.deepEqual(
      gate.released.map((outcome) => outcome?.ok),
      [false, true, false, true],
      'each attempt gives its permit back with how it went',
    );
    assert.equal(gate.sem.held, 0);
    assert.equal(limiter.stats().concurrency, 1, "the gate's capacity");
    assert.throws(() => (limiter.concurrency = 2), TypeError);
  });

  it('a Limiter passes the rate gate it was given on every attempt, after its own concurrency', async () => {
    const clock = new ManualClock();
    const rate = new RateLimiter({ rate: '1/100ms', clock });
    const limiter = new Limiter({ concurrency: 1, rate, retry: retryNow, clock });
    const starts = new Starts(clock);
    const results = [limiter.schedule(starts.task('a', 1)), limiter.schedule(starts.task('b', 1))];
    assert.deepEqual(await runAll(clock, results), ['a', 'b']);
    assert.deepEqual(starts.log, [
      ['a', 0],
      ['b', 100],
      ['a', 200],
      ['b', 300],
    ]);
  });

  it('a gate with only an asynchronous path is passed the same way', async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(1, { clock });
    const limiter = new Limiter({ concurrency: asyncOnly(sem), retry: retryNow, clock });
    const starts = new Starts(clock);
    let peak = 0;
    const tasks = ['a', 'b', 'c'].map((name, i) =>
      limiter.schedule(async () => {
        starts.task(name)();
        peak = Math.max(peak, sem.held);
        await flush();
        if (i === 0 && starts.log.length === 1) throw new Error('once');
        return name;
      }),
    );
    assert.deepEqual(await runAll(clock, tasks), ['a', 'b', 'c']);
    assert.equal(peak, 1);
    assert.equal(sem.held, 0);
    assert.equal(starts.log.length, 4);
  });

  it('retries through Limiter({ rate, retry }) wait for the rate as first attempts do', async () => {
    const clock = new ManualClock();
    const limiter = new Limiter({ rate: '5/s', retry: retryNow, clock });
    const starts = new Starts(clock);
    const results = ['a', 'b', 'c', 'd'].map((name) => limiter.schedule(starts.task(name, 2)));
    assert.deepEqual(await runAll(clock, results), ['a', 'b', 'c', 'd']);
    assert.equal(starts.log.length, 12);
    assert.ok(starts.closest >= 200 - 1e-3, `starts ${starts.closest} ms apart`);
  });

  it("a KeyedLimiter's global rate holds every attempt of every key, retries included", async () => {
    const clock = new ManualClock();
    const keyed = new KeyedLimiter({ rate: '10/s', perKey: { retry: retryNow }, clock });
    const starts = new Starts(clock);
    const results = [
      keyed.schedule('a', starts.task('a1', 1)),
      keyed.schedule('a', starts.task('a2', 2)),
      keyed.schedule('b', starts.task('b1', 1)),
    ];
    assert.deepEqual(await runAll(clock, results), ['a1', 'a2', 'b1']);
    assert.equal(starts.log.length, 7);
    assert.ok(starts.closest >= 100 - 1e-3, `starts ${starts.closest} ms apart`);
  });

  it("a KeyedLimiter's global rate serves the keys round-robin", async () => {
    const clock = new ManualClock();
    const keyed = new KeyedLimiter({ rate: '10/s', clock });
    const starts = new Starts(clock);
    const results = ['a1', 'a2', 'a3', 'a4'].map((name) => keyed.schedule('a', starts.task(name)));
    await clock.advanceTo(50);
    results.push(keyed.schedule('b', starts.task('b1')));
    await runAll(clock, results);
    assert.deepEqual(starts.log, [
      ['a1', 0],
      ['a2', 100],
      ['b1', 200],
      ['a3', 300],
      ['a4', 400],
    ]);
  });

  it("a KeyedLimiter's global gates are passed by each key's attempts", async () => {
    const clock = new ManualClock();
    const global = new RecordingGate(1, clock);
    const keyed = new KeyedLimiter({ concurrency: global, perKey: { retry: retryNow }, clock });
    const starts = new Starts(clock);
    const results = [
      keyed.schedule('a', starts.task('a', 1)),
      keyed.schedule('b', starts.task('b')),
    ];
    assert.deepEqual(await runAll(clock, results), ['a', 'b']);
    assert.equal(global.acquired.length, 3);
    assert.equal(global.sem.held, 0);
  });
});

describe('what a gate does to an attempt', () => {
  it('a lost permit aborts the attempt that holds it', async () => {
    const clock = new ManualClock();
    const gate = new RecordingGate(1, clock);
    const limiter = new Limiter({ concurrency: gate, clock });
    let seen: AbortSignal | undefined;
    const result = limiter.schedule(
      ({ signal }) =>
        new Promise((_resolve, reject) => {
          seen = signal;
          signal.addEventListener('abort', () => {
            reject(signal.reason as Error);
          });
        }),
    );
    await flush();
    assert.equal(seen?.aborted, false);
    const lost = new Error('lease lost');
    gate.lose.abort(lost);
    await assert.rejects(result, (error) => error === lost);
    assert.equal(gate.sem.held, 0);
  });

  it('tells the gate of drops: a 429 or 503 status, and a timeout', async () => {
    const clock = new ManualClock();
    const gate = new RecordingGate(5, clock);
    const limiter = new Limiter({ concurrency: gate, clock, timeout: 100 });
    const refused = Object.assign(new Error('too many'), { status: 429 });
    await assert.rejects(limiter.schedule(() => Promise.reject(refused)));
    await assert.rejects(limiter.schedule(() => Promise.reject(new Error('bug'))));
    const slow = limiter.schedule(
      ({ signal }) =>
        new Promise((_resolve, reject) => {
          signal.addEventListener('abort', () => {
            clock.jumpTo(clock.now() + 1);
            reject(signal.reason as Error);
          });
        }),
    );
    const timedOut = assert.rejects(slow, TimeoutError);
    await clock.advance(100);
    await timedOut;
    assert.deepEqual(
      gate.released.map((outcome) => [outcome?.ok, outcome?.dropped === true]),
      [
        [false, true],
        [false, false],
        [false, true],
      ],
    );
    assert.equal(gate.released[2]?.latencyMs, 101);
  });

  it('tells the gate nothing of a cancelled attempt: aborted by its caller, or by close()', async () => {
    const clock = new ManualClock();
    const gate = new RecordingGate(5, clock);
    const limiter = new Limiter({ concurrency: gate, clock });
    // Tasks that ignore their signal and end as they would have: what they end with is no
    // evidence of the other side's state once nobody waits for them.
    const ending: (() => void)[] = [];
    const stubborn = (ok: boolean) => () =>
      new Promise((resolve, reject) => {
        ending.push(() => {
          if (ok) resolve('late');
          else reject(Object.assign(new Error('too many'), { status: 429 }));
        });
      });
    const controller = new AbortController();
    const aborted = limiter.schedule(stubborn(true), { signal: controller.signal });
    const abortedDrop = limiter.schedule(stubborn(false), { signal: controller.signal });
    const closed = limiter.schedule(stubborn(true));
    await flush();
    controller.abort(new Error('never mind'));
    await assert.rejects(aborted, /never mind/);
    await assert.rejects(abortedDrop, /never mind/);
    const closedRejects = assert.rejects(closed, ClosedError);
    const closing = limiter.close({ deadline: 10 });
    await clock.advance(10);
    await closedRejects;
    await closing;
    for (const end of ending) end();
    await flush();
    assert.deepEqual(gate.released, [undefined, undefined, undefined]);
    assert.equal(gate.sem.held, 0);
  });

  it('tells the gate of a drop when an attempt that timed out ends well later', async () => {
    const clock = new ManualClock();
    const gate = new RecordingGate(5, clock);
    const limiter = new Limiter({ concurrency: gate, clock, timeout: 100 });
    const late = limiter.schedule(
      () =>
        new Promise((resolve) => {
          clock.setTimeout(() => {
            resolve('late');
          }, 150);
        }),
    );
    const timedOut = assert.rejects(late, TimeoutError);
    await clock.advance(100);
    await timedOut;
    await clock.advance(50);
    assert.deepEqual(gate.released, [{ ok: false, dropped: true, latencyMs: 150 }]);
  });

  it('a task waiting for a gate is withdrawn by its signal, and by close()', async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(1, { clock });
    const limiter = new Limiter({ concurrency: sem, clock });
    const holder = await sem.acquire();
    const controller = new AbortController();
    const reason = new Error('never mind');
    const aborted = limiter.schedule(() => 'a', { signal: controller.signal });
    const closed = limiter.schedule(() => 'b');
    await flush();
    assert.equal(sem.waiting, 2);
    assert.equal(limiter.pendingCount, 2);
    controller.abort(reason);
    await assert.rejects(aborted, (error) => error === reason);
    await flush();
    assert.equal(sem.waiting, 1);
    await limiter.close();
    await assert.rejects(closed, ClosedError);
    await flush();
    assert.equal(sem.waiting, 0);
    assert.equal(limiter.pendingCount, 0);
    holder.release();
    assert.equal(sem.held, 0);
  });

  it('a gate that refuses fails the task and keeps nothing', async () => {
    const clock = new ManualClock();
    const sem = new Semaphore(2, { clock });
    const limiter = new Limiter({ concurrency: sem, retry: retryNow, clock });
    await assert.rejects(
      limiter.schedule(() => 'heavy', { weight: 3 }),
      RangeError,
    );
    assert.equal(sem.held, 0);
    assert.equal(limiter.held, 0);
    assert.ok(limiter.isIdle);
  });
});

describe('no attempt starts after close()', () => {
  const backoff = { retries: 2, minDelay: 5, maxDelay: 5, jitter: 'none' } as const;

  it('a Limiter: a task backing off is rejected, its fn not called again', async () => {
    const clock = new ManualClock();
    const limiter = new Limiter({ concurrency: 1, retry: backoff, clock });
    const attempts: number[] = [];
    const result = limiter.schedule(({ attempt }) => {
      attempts.push(attempt);
      throw new Error('fail');
    });
    await clock.advance(1);
    await limiter.close();
    await assert.rejects(result, ClosedError);
    await settle(clock);
    assert.deepEqual(attempts, [1]);
  });

  it('a KeyedLimiter: the same, whatever the key', async () => {
    const clock = new ManualClock();
    const keyed = new KeyedLimiter({ perKey: { retry: backoff }, clock });
    const attempts: string[] = [];
    const results = ['a', 'b'].map((key) =>
      keyed.schedule(key, ({ attempt }) => {
        attempts.push(`${key}${attempt}`);
        throw new Error('fail');
      }),
    );
    await clock.advance(1);
    await keyed.close();
    for (const result of results) await assert.rejects(result, ClosedError);
    await settle(clock);
    assert.deepEqual(attempts, ['a1', 'b1']);
  });

  it('with drain, the retries still run', async () => {
    const clock = new ManualClock();
    const limiter = new Limiter({ retry: backoff, clock });
    const attempts: number[] = [];
    const result = limiter.schedule(({ attempt }) => {
      attempts.push(attempt);
      if (attempt < 3) throw new Error('fail');
      return 'ok';
    });
    await clock.advance(1);
    const closed = limiter.close({ drain: true });
    await settle(clock);
    await closed;
    assert.equal(await result, 'ok');
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.equal(await state(closed), 'fulfilled');
  });
});
