/**
 * The gate contract, as one suite that every gate runs: `gateContract('Semaphore', factory)`.
 * What it pins: mutual exclusion, FIFO within a priority, no barging, cancellation that leaves the
 * gate as it was, idempotent permits released by `using`, resizing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Permit, SyncGate as Gate } from '../../src/gate.ts';
import { TimeoutError } from '../../src/errors.ts';
import { deferred, flush, ManualClock, state } from '../_helpers/clock.ts';

/** A gate under test, with the probes the suite needs. */
export interface GateUnderTest {
  gate: Gate;
  /** Permits out now. */
  held(): number;
  /** Requests in line now. */
  waiting(): number;
  setCapacity(capacity: number): void;
}

export type GateFactory = (capacity: number, clock: ManualClock) => GateUnderTest;

export interface ContractOptions {
  /** The most permits the gate can have (a Mutex: 1); tests that need more are skipped. */
  maxCapacity?: number;
  /** Whether the capacity can be changed; the resizing tests are skipped if not. @default true */
  resizable?: boolean;
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
  const resizable = options.resizable ?? true;
  /** Skips a test that needs `capacity` permits (or resizing) when the gate cannot have them. */
  const needs = (capacity: number, resize = false) => ({
    skip:
      capacity > maxCapacity
        ? `${name} has at most ${maxCapacity} permit(s)`
        : resize && !resizable
          ? `${name} cannot be resized`
          : false,
  });
  describe(`${name} meets the gate contract`, () => {
    it('never lets more than its capacity through at once', async () => {
      const capacity = Math.min(3, maxCapacity);
      const { gate } = make(capacity, new ManualClock());
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
        await flush();
        assert.ok(inside <= capacity, `${inside} inside at once`);
        finishers.splice(0, 2).forEach((finish) => {
          finish();
        });
        await flush();
      }
      await Promise.all(jobs);
      assert.equal(peak, capacity);
    });

    it('serves waiters in the order they asked', async () => {
      const { gate } = make(1, new ManualClock());
      const first = await gate.acquire();
      const log: string[] = [];
      const waiters = ['a', 'b', 'c', 'd'].map((n) => track(log, n, gate.acquire()));
      first.release();
      for (const waiter of waiters) (await waiter).release();
      await flush();
      assert.deepEqual(log, ['a', 'b', 'c', 'd']);
    });

    it('lets a waiting heavy request block a later light one (no barging)', needs(4), async () => {
      const t = make(4, new ManualClock());
      const held = await t.gate.acquire({ weight: 2 });
      const log: string[] = [];
      const heavy = track(log, 'heavy', t.gate.acquire({ weight: 3 }));
      const light = track(log, 'light', t.gate.acquire({ weight: 1 }));
      await flush();
      assert.deepEqual(log, [], 'the light request would fit, but waits behind the heavy one');
      assert.equal(t.gate.tryAcquire(1), undefined, 'tryAcquire does not barge either');
      held.release();
      await flush();
      assert.deepEqual(log, ['heavy', 'light']);
      (await heavy).release();
      (await light).release();
      assert.equal(t.held(), 0);
    });

    it('serves higher priorities first and is FIFO within one', async () => {
      const { gate } = make(1, new ManualClock());
      const first = await gate.acquire();
      const log: string[] = [];
      const waiters = [
        track(log, 'low1', gate.acquire({ priority: -1 })),
        track(log, 'mid1', gate.acquire()),
        track(log, 'high1', gate.acquire({ priority: 5 })),
        track(log, 'mid2', gate.acquire({ priority: 0 })),
        track(log, 'high2', gate.acquire({ priority: 5 })),
        track(log, 'low2', gate.acquire({ priority: -1 })),
      ];
      first.release();
      for (let i = 0; i < waiters.length; i++) {
        await flush();
        const granted = log.at(-1);
        const index = ['low1', 'mid1', 'high1', 'mid2', 'high2', 'low2'].indexOf(granted!);
        (await waiters[index]!).release();
      }
      await flush();
      assert.deepEqual(log, ['high1', 'high2', 'mid1', 'mid2', 'low1', 'low2']);
    });

    it('rejects an aborted acquire with the reason and leaves the gate as it was', async () => {
      const t = make(1, new ManualClock());
      const holder = await t.gate.acquire();
      const controller = new AbortController();
      const log: string[] = [];
      const aborted = track(log, 'aborted', t.gate.acquire({ signal: controller.signal }));
      const next = track(log, 'next', t.gate.acquire());
      assert.equal(t.waiting(), 2);
      const reason = new Error('changed my mind');
      controller.abort(reason);
      await assert.rejects(aborted, (error) => error === reason);
      assert.equal(t.waiting(), 1);
      assert.equal(t.held(), 1);
      holder.release();
      (await next).release();
      assert.deepEqual(log, ['aborted!', 'next']);
      assert.equal(t.held(), 0);
      assert.equal(t.waiting(), 0);
    });

    it('rejects at once when the signal has already aborted, even with permits free', async () => {
      const t = make(1, new ManualClock());
      const reason = new Error('too late');
      await assert.rejects(
        t.gate.acquire({ signal: AbortSignal.abort(reason) }),
        (e) => e === reason,
      );
      assert.equal(t.held(), 0);
    });

    it('rejects a timed-out acquire with a TimeoutError and leaves the gate as it was', async () => {
      const clock = new ManualClock();
      const t = make(1, clock);
      const holder = await t.gate.acquire();
      const timed = t.gate.acquire({ timeout: 500 });
      const rejected = assert.rejects(
        timed,
        (error) => error instanceof TimeoutError && /after 500ms/.test(error.message),
      );
      const next = t.gate.acquire();
      await clock.advance(499);
      assert.equal(await state(timed), 'pending', 't=499: still waiting');
      await clock.advance(1);
      await rejected;
      assert.equal(t.waiting(), 1);
      holder.release();
      (await next).release();
      assert.equal(t.held(), 0);
    });

    it('serves the waiters behind a cancelled front waiter that fit now', needs(3), async () => {
      const t = make(3, new ManualClock());
      const holder = await t.gate.acquire({ weight: 2 });
      const controller = new AbortController();
      const heavy = t.gate.acquire({ weight: 3, signal: controller.signal });
      const rejected = assert.rejects(heavy);
      const light = t.gate.acquire({ weight: 1 });
      await flush();
      assert.equal(await state(light), 'pending');
      controller.abort();
      await rejected;
      (await light).release();
      holder.release();
      assert.equal(t.held(), 0);
    });

    it('releases a permit once, however often release() is called', async () => {
      const t = make(1, new ManualClock());
      const a = await t.gate.acquire();
      const waiter = t.gate.acquire();
      a.release();
      const b = await waiter;
      a.release();
      assert.equal(t.held(), 1, "the second release() of a did not free b's permit");
      b.release();
      assert.equal(t.held(), 0);
    });

    it('releases at the end of a `using` block, and of an `await using` block', async () => {
      const t = make(1, new ManualClock());
      {
        using permit = await t.gate.acquire();
        assert.equal(permit.weight, 1);
        assert.equal(t.held(), 1);
      }
      assert.equal(t.held(), 0);
      {
        await using _permit = await t.gate.acquire();
        assert.equal(t.held(), 1);
      }
      assert.equal(t.held(), 0);
    });

    it('takes a permit with tryAcquire only when one is free', async () => {
      const t = make(1, new ManualClock());
      const permit = t.gate.tryAcquire();
      assert.ok(permit);
      assert.equal(t.gate.tryAcquire(), undefined);
      permit.release();
      assert.ok(t.gate.tryAcquire());
      await flush();
    });

    it('rejects at once a weight above the capacity', async () => {
      const capacity = Math.min(2, maxCapacity);
      const t = make(capacity, new ManualClock());
      await assert.rejects(t.gate.acquire({ weight: capacity + 1 }), RangeError);
      assert.equal(t.waiting(), 0);
    });

    it('wakes waiters at once when the capacity is raised', needs(1, true), async () => {
      const t = make(1, new ManualClock());
      const holder = await t.gate.acquire();
      const log: string[] = [];
      const waiters = ['a', 'b'].map((n) => track(log, n, t.gate.acquire()));
      t.setCapacity(3);
      await flush();
      assert.deepEqual(log, ['a', 'b']);
      for (const waiter of waiters) (await waiter).release();
      holder.release();
    });

    it(
      'lets holders finish when the capacity is lowered, and grants below it only',
      needs(3, true),
      async () => {
        const t = make(3, new ManualClock());
        const holders = [await t.gate.acquire(), await t.gate.acquire(), await t.gate.acquire()];
        const log: string[] = [];
        const waiter = track(log, 'waiter', t.gate.acquire());
        t.setCapacity(1);
        assert.equal(t.held(), 3, 'the holders keep their permits');
        holders[0]!.release();
        holders[1]!.release();
        await flush();
        assert.deepEqual(log, [], 'one still held: that is the new capacity');
        holders[2]!.release();
        await flush();
        assert.deepEqual(log, ['waiter']);
        (await waiter).release();
      },
    );
  });
}
