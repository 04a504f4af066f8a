/**
 * Waits longer than a timer can be armed for (2^31 - 1 ms, about 24.8 days): Node turns such a
 * delay into 1 ms, so a limiter that armed one would spin, waking a thousand times a second. Each
 * case waits past that limit on a clock that overflows as Node's timers do, and counts how many
 * timers were armed on the way: a handful, not millions.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Limiter, RateLimiter, retry, Semaphore, TimeoutError, type Clock } from '../src/index.ts';
import { createFetch } from '../src/http/index.ts';
import { every, later, MAX_TIMER_DELAY, systemClock, Timer } from '../src/_clock.ts';
import { ManualClock, state } from './_helpers/clock.ts';
import { stepWallClock } from './_helpers/wall-clock.ts';

const DAY = 86_400_000;
/** Past the longest timer Node can arm. */
const LONG = 30 * DAY;
/** Timers a wait of LONG may arm: one per step of MAX_TIMER_DELAY, and a little slack. */
const FEW = 5;

/**
 * A clock whose timers overflow like Node's, at a start instant that is not 0. It refuses to arm
 * more than 1 000 timers, so that code that spins fails at once instead of walking 30 days a
 * millisecond at a time.
 */
class OverflowingClock extends ManualClock {
  constructor() {
    super(1_000, { nodeOverflow: true });
  }

  override setTimeout(callback: () => void, ms: number): unknown {
    if (this.armed >= 1_000) throw new Error(`spinning: ${this.armed} timers armed`);
    return super.setTimeout(callback, ms);
  }
}

function overflowingClock(): ManualClock {
  return new OverflowingClock();
}

/** Advances `clock` in `steps` equal steps up to `to`, so that a spinning timer would show. */
async function walk(clock: ManualClock, to: number, steps = 20): Promise<void> {
  const from = clock.now();
  for (let i = 1; i <= steps; i++) await clock.advanceTo(from + ((to - from) * i) / steps);
}

describe('waits longer than a timer can be armed for', () => {
  it('the helper clock spins on an overflowing delay as Node does (the cases below could fail)', async () => {
    const clock = overflowingClock();
    let fired = 0;
    clock.setTimeout(() => fired++, LONG);
    await clock.advance(10);
    assert.equal(fired, 1, 'a delay past 2^31 - 1 ms fires after 1 ms');
  });

  it('a Timer of 30 days fires at its instant, in steps of at most MAX_TIMER_DELAY', async () => {
    const clock = overflowingClock();
    const t0 = clock.now();
    let firedAt: number | undefined;
    new Timer(clock, LONG, () => (firedAt = clock.now()));
    await walk(clock, t0 + LONG - 1);
    assert.equal(firedAt, undefined, 'not before its time');
    await clock.advanceTo(t0 + LONG);
    assert.equal(firedAt, t0 + LONG);
    assert.ok(clock.armed <= FEW, `${clock.armed} timers armed`);
    assert.equal(Math.ceil(LONG / MAX_TIMER_DELAY), 2);
  });

  it("a semaphore's acquire timeout of 30 days", async () => {
    const clock = overflowingClock();
    const t0 = clock.now();
    const sem = new Semaphore(1, { clock });
    const held = await sem.acquire();
    const waiting = sem.acquire({ timeout: LONG });
    waiting.catch(() => undefined);
    await walk(clock, t0 + LONG - 1);
    assert.equal(await state(waiting), 'pending');
    await clock.advanceTo(t0 + LONG);
    await assert.rejects(waiting, TimeoutError);
    assert.equal(sem.stats().waiting, 0);
    assert.ok(clock.armed <= FEW, `${clock.armed} timers armed`);
    held.release();
  });

  it("an exhausted '10000/30d' sliding quota", async () => {
    const clock = overflowingClock();
    const t0 = clock.now();
    const rate = new RateLimiter({ rate: '10000/30d', window: 'sliding', clock });
    await rate.wait({ weight: 10_000 });
    let admittedAt: number | undefined;
    void rate.wait().then(() => (admittedAt = clock.now()));
    await walk(clock, t0 + LONG - 1);
    assert.equal(admittedAt, undefined);
    await clock.advanceTo(t0 + LONG);
    assert.equal(admittedAt, t0 + LONG);
    assert.ok(clock.armed <= FEW, `${clock.armed} timers armed`);
  });

  it('pauseFor(30 days) holds a Limiter for that long, and no longer', async () => {
    const clock = overflowingClock();
    const t0 = clock.now();
    const limiter = new Limiter({ clock });
    limiter.pauseFor(LONG);
    let startedAt: number | undefined;
    const done = limiter.schedule(() => (startedAt = clock.now()));
    await walk(clock, t0 + LONG - 1);
    assert.equal(startedAt, undefined);
    await clock.advanceTo(t0 + LONG);
    await done;
    assert.equal(startedAt, t0 + LONG);
    assert.ok(clock.armed <= FEW, `${clock.armed} timers armed`);
  });

  it("retry() honours a server's wait of 30 days", async () => {
    const clock = overflowingClock();
    const t0 = clock.now();
    const calls: number[] = [];
    const result = retry(
      () => {
        calls.push(clock.now());
        if (calls.length === 1) throw Object.assign(new Error('busy'), { retryAfterMs: LONG });
        return 'ok';
      },
      { retries: 1, clock },
    );
    await walk(clock, t0 + LONG - 1);
    assert.deepEqual(calls, [t0]);
    await clock.advanceTo(t0 + LONG);
    assert.equal(await result, 'ok');
    assert.deepEqual(calls, [t0, t0 + LONG]);
    assert.ok(clock.armed <= FEW, `${clock.armed} timers armed`);
  });

  it('an HTTP Retry-After of 30 days with maxRetryAfter: Infinity', async () => {
    let requests = 0;
    const server = createServer((_req, res) => {
      requests++;
      if (requests === 1) res.writeHead(503, { 'retry-after': String(LONG / 1000) }).end();
      else res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const clock = overflowingClock();
    const t0 = clock.now();
    const fetch = createFetch({
      retry: { retries: 1, jitter: 'none', minDelay: 0 },
      maxRetryAfter: Infinity,
      clock,
    });
    try {
      const response = fetch(`http://127.0.0.1:${port}/`);
      while (requests === 0 || clock.pending === 0) await new Promise((r) => setTimeout(r, 5));
      await walk(clock, t0 + LONG - 1);
      assert.equal(requests, 1, 'no retry before the wait is over');
      await clock.advanceTo(t0 + LONG);
      const received = await response;
      assert.equal(received.status, 200);
      assert.equal(await received.text(), 'ok');
      assert.equal(requests, 2);
      assert.ok(clock.armed <= FEW, `${clock.armed} timers armed`);
    } finally {
      await fetch.close();
      server.close();
    }
  });

  it('the system clock, later() and every() arm a 30-day timer without a TimeoutOverflowWarning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning.name);
    };
    process.on('warning', onWarning);
    const clocks: Clock[] = [systemClock];
    try {
      for (const clock of clocks) {
        const timer = new Timer(clock, LONG, () => assert.fail('fired early'));
        const raw = clock.setTimeout(() => assert.fail('fired early'), LONG);
        const coarse = later(LONG, () => assert.fail('fired early'));
        const repeated = every(LONG, () => assert.fail('fired early'));
        await new Promise((resolve) => setTimeout(resolve, 30));
        timer.cancel();
        clock.clearTimeout(raw);
        coarse();
        repeated();
      }
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings, []);
  });
});

describe('housekeeping timers against a wall clock that steps', () => {
  // later() and every() time the renewals and deadlines of shared gates: a day's step of the wall
  // clock must move none of them. Real timers (the subject), with room for a loaded machine.
  for (const step of [-DAY, DAY]) {
    it(`later() fires on time when the wall clock steps ${step < 0 ? 'back' : 'forward'} a day`, async () => {
      const armedAt = performance.now();
      let restore: (() => void) | undefined;
      let cancel: (() => void) | undefined;
      try {
        const fired = new Promise<number>((resolve) => {
          cancel = later(50, () => {
            resolve(performance.now());
          });
          restore = stepWallClock(step);
        });
        const firedAt = await Promise.race([fired, sleep(5_000).then(() => Infinity)]);
        assert.ok(firedAt - armedAt >= 49, `fired after ${firedAt - armedAt}ms`);
        assert.ok(firedAt !== Infinity, 'fired within 5 s, not a day late');
      } finally {
        restore?.();
        cancel?.();
      }
    });
  }

  it('every() keeps its period when the wall clock steps back a day', async () => {
    let ticks = 0;
    const cancel = every(20, () => ticks++);
    const restore = stepWallClock(-DAY);
    try {
      await sleep(1_000);
      assert.ok(ticks >= 3, `${ticks} ticks`);
    } finally {
      restore();
      cancel();
    }
  });
});
