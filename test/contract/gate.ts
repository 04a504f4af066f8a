/**
 * The gate contract, as one suite that every gate runs: `gateContract('Semaphore', factory)`.
 * What it pins: admission within the capacity, FIFO within a priority, no barging, cancellation
 * that leaves the gate as it was, idempotent permits released by `using`, the same error for a
 * request too heavy on both paths, and (for gates of permits) resizing.
 *
 * Two kinds of gate meet it. A gate of permits (a semaphore, a limiter's concurrency) has room
 * again when a permit is released. A rate gate (`RateLimiter`) admits `capacity` starts per
 * window, and a release gives nothing back: its room comes back when the window passes. The
 * suite frees room through `free(permit)`, which does whichever the gate needs, so the same tests
 * hold both to the same promises.
 *
 * A gate without `tryAcquire` (one that cannot answer synchronously, as a shared one in Redis)
 * runs every test but those of the synchronous path; one with `tryAcquireAsync` (the non-waiting
 * try of such a gate) runs that path's tests too. A shared gate answers after round trips: where
 * the suite lets the gate act, it waits for the factory's `settle()` (the gate's calls answered),
 * which is one turn of the event loop for an in-memory gate. Timeouts run on the test's clock for
 * every gate (a shared gate's timeouts are its process's own).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Gate, Permit } from '../../src/gate.ts';
import { TimeoutError } from '../../src/errors.ts';
import { deferred, flush as flushReactions, ManualClock, state } from '../_helpers/clock.ts';

/** A gate under test, with the probes the suite needs. */
export interface GateUnderTest {
  gate: Gate;
  /** Permits out now; absent for a rate gate (a start holds nothing). */
  held?: () => number;
  /** Requests in line now. */
  waiting(): number;
  /** Absent when the capacity cannot be changed. */
  setCapacity?: (capacity: number) => void;
  /**
   * Resolves once the gate has done what it was asked so far (a shared gate: every call to its
   * backend answered, and what the answers caused). @default one turn of the event loop
   */
  settle?: () => Promise<void>;
}

/** A gate's non-waiting try through its asynchronous path (a shared gate's `tryAcquireAsync`). */
type TryAsync = (weight?: number) => Promise<Permit | undefined>;

function tryAsyncOf(gate: Gate): TryAsync | undefined {
  return gate.tryAcquireAsync === undefined ? undefined : (weight) => gate.tryAcquireAsync!(weight);
}

export type GateFactory = (capacity: number, clock: ManualClock) => GateUnderTest;

export interface ContractOptions {
  /** The most permits the gate can have (a Mutex: 1); tests that need more are skipped. */
  maxCapacity?: number;
  /**
   * `'permits'`: a release makes room (the default). `'rate'`: room comes back when the window,
   * `window` ms on the test's clock, has passed since a start.
   */
  kind?: 'permits' | 'rate';
  /** A rate gate's window, in ms. @default 1000 */
  window?: number;
  /**
   * For a gate on real time (a shared one, in Redis: its windows and timeouts run on the wall
   * clock, and it answers after a round trip): the suite sleeps where it would advance its clock,
   * and lets `settle` ms pass where it would only let pending reactions run.
   */
  realTime?: { settle: number };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Starts an acquire and records when it settles, in `log`. */
function track(log: string[], name: string, promise: Promise<Permit>): Promise<Permit> {
  promise.then(
    () => log.push(name),
    () => log.push(`${name}!`),
  );
  return promise;
}

export function gateContract(name: string, make: GateFactory, options: ContractOptions = {}): void {
  const maxCapacity = options.maxCapacity ?? Infinity;
  const rate = options.kind === 'rate';
  const window = options.window ?? 1000;
  const realTime = options.realTime;
  /** Lets what is pending happen: promise reactions, and a real-time gate's round trips. */
  const flush = realTime === undefined ? flushReactions : () => sleep(realTime.settle);

  /** Builds the gate, with `free(permit)`: makes room for one more after `permit`. */
  const build = (capacity: number, manual = new ManualClock()) => {
    const t = make(capacity, manual);
    const clock: Pick<ManualClock, 'advance'> =
      realTime === undefined ? manual : { advance: sleep };
    const settle = t.settle ?? flush;
    const free = async (permit: Permit): Promise<void> => {
      permit.release();
      // A spaced window's next start is due a hair after the window (see test/rate.test.ts).
      if (rate) await clock.advance(window + (realTime?.settle ?? 1));
      await settle();
    };
    /** Checks the permits out now, where the gate can tell. */
    const assertHeld = (expected: number, message?: string): void => {
      if (t.held !== undefined) assert.equal(t.held(), expected, message);
    };
    return { ...t, clock, free, assertHeld, settle };
  };

  /** Skips a test the gate cannot run. */
  const needs = (
    capacity: number,
    what: { resize?: boolean; sync?: boolean; tryAsync?: boolean } = {},
  ) => ({
    skip:
      capacity > maxCapacity
        ? `${name} has at most ${maxCapacity} permit(s)`
        : what.resize === true && (rate || make(1, new ManualClock()).setCapacity === undefined)
          ? `${name} cannot be resized`
          : what.sync === true && make(1, new ManualClock()).gate.tryAcquire === undefined
            ? `${name} has no synchronous path`
            : what.tryAsync === true && tryAsyncOf(make(1, new ManualClock()).gate) === undefined
              ? `${name} has no tryAcquireAsync`
              : false,
  });

  describe(`${name} meets the gate contract`, () => {
    it('admits at most its capacity until room is made, then the next in line', async () => {
      const capacity = Math.min(3, maxCapacity);
      const t = build(capacity);
      const log: string[] = [];
      const permits = Array.from({ length: 2 * capacity + 1 }, (_, i) =>
        track(log, String(i), t.gate.acquire()),
      );
      await t.settle();
      assert.equal(log.length, capacity, 'admitted before any room is made');
      assert.equal(t.waiting(), capacity + 1);
      await t.free(await permits[0]!);
      await t.settle();
      const admitted = rate ? 2 * capacity : capacity + 1;
      assert.deepEqual(
        log,
        permits.slice(0, admitted).map((_, i) => String(i)),
        'in the order they asked',
      );
      for (const permit of permits) await t.free(await permit);
      t.assertHeld(0);
    });

    it('never lets more than its capacity hold permits at once', needs(1), async () => {
      if (rate) return; // a start holds nothing: the previous test pins a rate gate's bound
      const capacity = Math.min(3, maxCapacity);
      const { gate, settle } = build(capacity);
      let inside = 0;
      let peak = 0;
      let finished = 0;
      const finishers: (() => void)[] = [];
      const jobs = Array.from({ length: 20 }, async () => {
        const permit = await gate.acquire();
        inside++;
        peak = Math.max(peak, inside);
        const { promise, resolve } = deferred();
        finishers.push(resolve);
        await promise;
        inside--;
        permit.release();
        finished++;
      });
      while (finished < jobs.length) {
        await settle();
        assert.ok(inside <= capacity, `${inside} inside at once`);
        finishers.splice(0, 2).forEach((finish) => {
          finish();
        });
        await settle();
      }
      await Promise.all(jobs);
      assert.equal(peak, capacity);
    });

    it('serves waiters in the order they asked', async () => {
      const t = build(1);
      const first = await t.gate.acquire();
      const log: string[] = [];
      const waiters = ['a', 'b', 'c', 'd'].map((n) => track(log, n, t.gate.acquire()));
      await t.free(first);
      for (const waiter of waiters) await t.free(await waiter);
      await t.settle();
      assert.deepEqual(log, ['a', 'b', 'c', 'd']);
    });

    it('lets a waiting heavy request block a later light one (no barging)', needs(4), async () => {
      const t = build(4);
      const held = await t.gate.acquire({ weight: 2 });
      const log: string[] = [];
      const heavy = track(log, 'heavy', t.gate.acquire({ weight: 3 }));
      const light = track(log, 'light', t.gate.acquire({ weight: 1 }));
      await t.settle();
      assert.deepEqual(log, [], 'the light request would fit, but waits behind the heavy one');
      if (t.gate.tryAcquire !== undefined) {
        assert.equal(t.gate.tryAcquire(1), undefined, 'tryAcquire does not barge either');
      }
      const tryAsync = tryAsyncOf(t.gate);
      if (tryAsync !== undefined) {
        assert.equal(await tryAsync(1), undefined, 'tryAcquireAsync does not barge either');
      }
      await t.free(held);
      await t.settle();
      assert.deepEqual(log, ['heavy', 'light']);
      (await heavy).release();
      (await light).release();
      t.assertHeld(0);
    });

    it('serves higher priorities first and is FIFO within one', async () => {
      const t = build(1);
      const first = await t.gate.acquire();
      const log: string[] = [];
      const waiters = [
        track(log, 'low1', t.gate.acquire({ priority: -1 })),
        track(log, 'mid1', t.gate.acquire()),
        track(log, 'high1', t.gate.acquire({ priority: 5 })),
        track(log, 'mid2', t.gate.acquire({ priority: 0 })),
        track(log, 'high2', t.gate.acquire({ priority: 5 })),
        track(log, 'low2', t.gate.acquire({ priority: -1 })),
      ];
      await t.settle(); // a gate with an asynchronous path has them in line only now
      await t.free(first);
      for (let i = 0; i < waiters.length; i++) {
        await t.settle();
        // A gate on real time may grant later than one settle on a busy machine: wait for the
        // grant (bounded), so that the order is what is checked, not the machine's speed.
        for (let tries = 0; realTime !== undefined && log.length <= i && tries < 40; tries++) {
          await t.settle();
        }
        const granted = log.at(-1);
        const index = ['low1', 'mid1', 'high1', 'mid2', 'high2', 'low2'].indexOf(granted!);
        await t.free(await waiters[index]!);
      }
      await t.settle();
      assert.deepEqual(log, ['high1', 'high2', 'mid1', 'mid2', 'low1', 'low2']);
    });

    it('rejects an aborted acquire with the reason and leaves the gate as it was', async () => {
      const t = build(1);
      const holder = await t.gate.acquire();
      const controller = new AbortController();
      const log: string[] = [];
      const aborted = track(log, 'aborted', t.gate.acquire({ signal: controller.signal }));
      const next = track(log, 'next', t.gate.acquire());
      await t.settle();
      assert.equal(t.waiting(), 2);
      const reason = new Error('changed my mind');
      controller.abort(reason);
      await assert.rejects(aborted, (error) => error === reason);
      assert.equal(t.waiting(), 1);
      t.assertHeld(1);
      await t.free(holder);
      await t.free(await next);
      assert.deepEqual(log, ['aborted!', 'next']);
      t.assertHeld(0);
      assert.equal(t.waiting(), 0);
    });

    it('rejects at once when the signal has already aborted, even with room free', async () => {
      const t = build(1);
      const reason = new Error('too late');
      await assert.rejects(
        t.gate.acquire({ signal: AbortSignal.abort(reason) }),
        (e) => e === reason,
      );
      t.assertHeld(0);
      const permit = await t.gate.acquire({ timeout: 0 });
      assert.equal(permit.weight, 1, 'the rejected request used no room');
      permit.release();
    });

    it('rejects a timed-out acquire with a TimeoutError and leaves the gate as it was', async () => {
      const t = build(1);
      const holder = await t.gate.acquire();
      const timed = t.gate.acquire({ timeout: rate ? window / 2 : 500 });
      const after = rate ? window / 2 : 500;
      const rejected = assert.rejects(
        timed,
        (error) =>
          error instanceof TimeoutError && new RegExp(`after ${after}ms`).test(error.message),
      );
      const next = t.gate.acquire();
      // Real time is only as precise as a timer: "just before" is a settle early.
      const early = realTime?.settle ?? 1;
      await t.clock.advance(after - early);
      assert.equal(await state(timed), 'pending', 'still waiting just before its timeout');
      await t.clock.advance(early);
      await rejected;
      assert.equal(t.waiting(), 1);
      await t.free(holder);
      await t.free(await next);
      t.assertHeld(0);
    });

    it('serves the waiters behind a cancelled front waiter that fit now', needs(3), async () => {
      const t = build(3);
      const holder = await t.gate.acquire({ weight: 2 });
      const controller = new AbortController();
      const heavy = t.gate.acquire({ weight: 3, signal: controller.signal });
      const rejected = assert.rejects(heavy);
      const light = t.gate.acquire({ weight: 1 });
      await t.settle();
      assert.equal(await state(light), 'pending');
      controller.abort();
      await rejected;
      (await light).release();
      holder.release();
      t.assertHeld(0);
    });

    it('releases a permit once, however often release() is called', async () => {
      if (rate) return; // a rate gate's release gives nothing back, once or twice
      const t = build(1);
      const a = await t.gate.acquire();
      const waiter = t.gate.acquire();
      a.release();
      const b = await waiter;
      a.release();
      t.assertHeld(1, "the second release() of a did not free b's permit");
      b.release();
      t.assertHeld(0);
    });

    it('releases at the end of a `using` block, and of an `await using` block', async () => {
      const t = build(1);
      {
        using permit = await t.gate.acquire();
        assert.equal(permit.weight, 1);
        t.assertHeld(1);
      }
      t.assertHeld(0);
      if (rate) await t.clock.advance(window + 1);
      {
        await using _permit = await t.gate.acquire();
        t.assertHeld(1);
      }
      t.assertHeld(0);
    });

    it(
      'takes a permit with tryAcquire only when one is free',
      needs(1, { sync: true }),
      async () => {
        const t = build(1);
        const tryAcquire = (): Permit | undefined => t.gate.tryAcquire?.();
        const permit = tryAcquire();
        assert.ok(permit);
        assert.equal(tryAcquire(), undefined);
        await t.free(permit);
        assert.ok(tryAcquire());
        await flush();
      },
    );

    it(
      'takes a permit with tryAcquireAsync only when one is free',
      needs(1, { tryAsync: true }),
      async () => {
        const t = build(1);
        const tryAsync = tryAsyncOf(t.gate)!;
        const permit = await tryAsync();
        assert.ok(permit);
        assert.equal(await tryAsync(), undefined);
        t.assertHeld(1);
        await t.free(permit);
        const again = await tryAsync();
        assert.ok(again);
        await t.free(again);
        t.assertHeld(0);
        await assert.rejects(tryAsync(2), RangeError);
      },
    );

    it('rejects at once a weight above the capacity, with the same error on both paths', async () => {
      const capacity = Math.min(2, maxCapacity);
      const t = build(capacity);
      await assert.rejects(t.gate.acquire({ weight: capacity + 1 }), RangeError);
      assert.equal(t.waiting(), 0);
      if (t.gate.tryAcquire !== undefined) {
        assert.throws(() => t.gate.tryAcquire?.(capacity + 1), RangeError);
      }
      t.assertHeld(0);
    });

    it(
      'wakes waiters at once when the capacity is raised',
      needs(1, { resize: true }),
      async () => {
        const t = build(1);
        const holder = await t.gate.acquire();
        const log: string[] = [];
        const waiters = ['a', 'b'].map((n) => track(log, n, t.gate.acquire()));
        t.setCapacity?.(3);
        await t.settle();
        assert.deepEqual(log, ['a', 'b']);
        for (const waiter of waiters) (await waiter).release();
        holder.release();
      },
    );

    it(
      'lets holders finish when the capacity is lowered, and grants below it only',
      needs(3, { resize: true }),
      async () => {
        const t = build(3);
        const holders = [await t.gate.acquire(), await t.gate.acquire(), await t.gate.acquire()];
        const log: string[] = [];
        const waiter = track(log, 'waiter', t.gate.acquire());
        t.setCapacity?.(1);
        t.assertHeld(3, 'the holders keep their permits');
        holders[0]!.release();
        holders[1]!.release();
        await t.settle();
        assert.deepEqual(log, [], 'one still held: that is the new capacity');
        holders[2]!.release();
        await t.settle();
        assert.deepEqual(log, ['waiter']);
        (await waiter).release();
      },
    );
  });
}

/**
 * The same gate seen only through its asynchronous path (no `tryAcquire`), as a gate whose
 * backend cannot answer synchronously is: what the layers above must handle too.
 */
export function asyncOnly(gate: Gate): Gate {
  return {
    acquire: (options) => gate.acquire(options),
  };
}
