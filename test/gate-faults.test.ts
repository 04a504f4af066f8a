/**
 * A gate given to a limiter that breaks the gate contract (any object with `acquire()` may be
 * given): its `acquire()` throws instead of rejecting, returns no promise, or resolves to no
 * permit; its `tryAcquire()` throws or answers with no permit; a permit's `release()` throws; it
 * ignores the signal and the timeout it is given and answers long after its caller gave up.
 * Whatever it does, at whatever step, every permit already taken of the gates before it (and the
 * limiter's own) comes back, every promise settles with a clear error, and no task starts.
 * In-memory gates, on a ManualClock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Limiter, Semaphore, TimeoutError, type Gate, type Permit } from '../src/index.ts';
import { flush, ManualClock, state } from './_helpers/clock.ts';
import { catchUncaught } from './_helpers/uncaught.ts';
import { asyncOnly } from './contract/gate.ts';

/** A permit that holds nothing: what a broken gate hands out where it hands one out. */
function freePermit(): Permit {
  return {
    weight: 1,
    signal: new AbortController().signal,
    release() {},
    [Symbol.dispose]() {},
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

const broke = new TypeError('the gate broke');

/** A gate breaking the contract, and what the caller is told. */
interface Fault {
  name: string;
  gate: () => Gate;
  told: (error: unknown) => boolean;
}

const faults: Fault[] = [
  {
    name: 'acquire() throws instead of rejecting',
    gate: () => ({
      acquire() {
        throw broke;
      },
    }),
    told: (error) => error === broke,
  },
  {
    name: 'acquire() rejects',
    gate: () => ({ acquire: () => Promise.reject(broke) }),
    told: (error) => error === broke,
  },
  {
    name: 'acquire() returns nothing',
    gate: () => ({ acquire: () => undefined as unknown as Promise<Permit> }),
    told: (error) =>
      error instanceof TypeError &&
      /^Expected `acquire\(\)` of gate 2 of 2 to return a promise of a permit, got `undefined` \(undefined\)$/.test(
        error.message,
      ),
  },
  {
    name: 'acquire() returns a permit, not a promise of one',
    gate: () => ({ acquire: () => freePermit() as unknown as Promise<Permit> }),
    told: (error) =>
      error instanceof TypeError &&
      /^Expected `acquire\(\)` of gate 2 of 2 to return a promise of a permit, got `\[object\]`/.test(
        error.message,
      ),
  },
  {
    name: 'acquire() resolves to no permit',
    gate: () => ({ acquire: () => Promise.resolve(undefined as unknown as Permit) }),
    told: (error) =>
      error instanceof TypeError &&
      /^Expected `acquire\(\)` of gate 2 of 2 to resolve to a permit/.test(error.message),
  },
  {
    name: 'acquire() resolves to a permit with no signal',
    gate: () => ({
      acquire: () => {
        const { signal: _, ...permit } = freePermit();
        return Promise.resolve(permit as Permit);
      },
    }),
    told: (error) =>
      error instanceof TypeError &&
      /^Expected `acquire\(\)` of gate 2 of 2 to resolve to a permit \(release\(\) and an AbortSignal `signal`\), got `\[object\]` \(object\)$/.test(
        error.message,
      ),
  },
  {
    name: 'tryAcquire() throws',
    gate: () => ({
      acquire: () => Promise.resolve(freePermit()),
      tryAcquire() {
        throw broke;
      },
    }),
    told: (error) => error === broke,
  },
  {
    name: 'tryAcquire() answers with no permit (null)',
    gate: () => ({
      acquire: () => Promise.resolve(freePermit()),
      tryAcquire: () => null as unknown as Permit,
    }),
    told: (error) =>
      error instanceof TypeError &&
      /^Expected `tryAcquire\(\)` of gate 2 of 2 to return a permit \(release\(\) and an AbortSignal `signal`\) or undefined, got `null` \(null\)$/.test(
        error.message,
      ),
  },
];

/** The gate before the broken one: a semaphore, answering synchronously or not. */
const befores = [
  { name: 'after a gate that answered at once', wrap: (sem: Semaphore): Gate => sem },
  { name: 'after a gate that was waited for', wrap: (sem: Semaphore): Gate => asyncOnly(sem) },
];

/** A limiter whose concurrency is `sem` (as `wrap` gives it) and whose rate is `broken`. */
function setup(wrap: (sem: Semaphore) => Gate, broken: Gate) {
  const clock = new ManualClock();
  const sem = new Semaphore(2, { clock });
  const limiter = new Limiter({ concurrency: wrap(sem), rate: [broken], clock });
  return { sem, limiter, clock };
}

/** Nothing is held, waits or runs: the permits taken before the fault all came back. */
async function assertNothingHeld(sem: Semaphore, limiter: Limiter): Promise<void> {
  await flush();
  assert.equal(sem.held, 0, 'the first gate has its permit back');
  assert.equal(sem.waiting, 0);
  assert.equal(limiter.held, 0, "the limiter's own permits are back");
  assert.ok(limiter.isIdle);
}

describe('a gate that breaks the contract leaves nothing held', () => {
  for (const fault of faults) {
    for (const before of befores) {
      it(`schedule(): ${fault.name}, ${before.name}`, async () => {
        const { sem, limiter } = setup(before.wrap, fault.gate());
        let started = 0;
        await assert.rejects(
          limiter.schedule(() => started++),
          fault.told,
        );
        assert.equal(started, 0);
        await assertNothingHeld(sem, limiter);
      });

      it(`acquire(): ${fault.name}, ${before.name}`, async () => {
        const { sem, limiter } = setup(before.wrap, fault.gate());
        await assert.rejects(limiter.acquire(), fault.told);
        await assertNothingHeld(sem, limiter);
      });
    }

    it(`tryAcquire(): ${fault.name}`, async () => {
      const { sem, limiter } = setup((s) => s, fault.gate());
      let permit: Permit | undefined;
      try {
        permit = limiter.tryAcquire();
      } catch (error) {
        assert.ok(fault.told(error), `told ${String(error)}`);
      }
      // A gate with no synchronous path is not asked: none is taken, nothing is told.
      assert.equal(permit, undefined);
      await assertNothingHeld(sem, limiter);
    });
  }

  // The release of the last permit taken is the first made: one that throws must not keep the
  // others. Its error is the gate's fault, not the task's: it is thrown on its own.
  const failingRelease: Gate = {
    acquire: () => Promise.resolve(failingRelease.tryAcquire!()!),
    tryAcquire: () => ({
      ...freePermit(),
      release() {
        throw broke;
      },
    }),
  };

  it('a permit whose release() throws: the task settles, the other permits come back', async (t) => {
    const thrown = catchUncaught(t);
    for (const before of befores) {
      const { sem, limiter } = setup(before.wrap, failingRelease);
      assert.equal(await limiter.schedule(() => 'done'), 'done');
      await assertNothingHeld(sem, limiter);
    }
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(thrown, [broke, broke]);
  });

  it('a permit whose release() throws, in a group from acquire(): the others come back', async (t) => {
    const thrown = catchUncaught(t);
    const { sem, limiter } = setup((s) => s, failingRelease);
    const permit = await limiter.acquire();
    assert.equal(sem.held, 1);
    permit.release();
    await assertNothingHeld(sem, limiter);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(thrown, [broke]);
  });
});

/** A gate that answers only when told, whatever its callers do: it ignores their signals. */
class Deaf implements Gate {
  readonly #asked: ((permit: Permit) => void)[] = [];
  /** How many of its permits were given back. */
  released = 0;

  acquire(): Promise<Permit> {
    return new Promise((resolve) => this.#asked.push(resolve));
  }

  grantAll(): void {
    for (const grant of this.#asked.splice(0)) {
      grant({
        ...freePermit(),
        release: () => {
          this.released++;
        },
      });
    }
  }
}

describe('a gate that ignores the signal of a caller who gave up', () => {
  const reason = new Error('never mind');

  for (const before of befores) {
    it(`schedule(): the task fails at once and nothing is held, ${before.name}`, async () => {
      const deaf = new Deaf();
      const { sem, limiter } = setup(before.wrap, deaf);
      const controller = new AbortController();
      let started = 0;
      const result = limiter.schedule(() => started++, { signal: controller.signal });
      result.catch(() => undefined);
      await flush();
      assert.equal(sem.held, 1, 'through the first gate');
      controller.abort(reason);
      await assert.rejects(result, (error) => error === reason);
      await assertNothingHeld(sem, limiter);
      deaf.grantAll(); // long after: given back at once, nothing starts
      await flush();
      assert.equal(deaf.released, 1);
      assert.equal(started, 0);
      await assertNothingHeld(sem, limiter);
    });

    it(`acquire(): it rejects at once and nothing is held, ${before.name}`, async () => {
      const deaf = new Deaf();
      const { sem, limiter } = setup(before.wrap, deaf);
      const controller = new AbortController();
      const acquiring = limiter.acquire({ signal: controller.signal });
      acquiring.catch(() => undefined);
      await flush();
      assert.equal(sem.held, 1, 'through the first gate');
      controller.abort(reason);
      await flush();
      assert.equal(await state(acquiring), 'rejected');
      await assert.rejects(acquiring, (error) => error === reason);
      await assertNothingHeld(sem, limiter);
      deaf.grantAll();
      await flush();
      assert.equal(deaf.released, 1);
      await assertNothingHeld(sem, limiter);
    });
  }
});

describe('a gate that ignores the timeout of its caller', () => {
  for (const before of befores) {
    it(`acquire(): it rejects a second after the timeout and nothing is held, ${before.name}`, async () => {
      const deaf = new Deaf();
      const { sem, limiter, clock } = setup(before.wrap, deaf);
      const acquiring = limiter.acquire({ timeout: 100 });
      acquiring.catch(() => undefined);
      await clock.advanceTo(60);
      assert.equal(sem.held, 1, 'through the first gate');
      // The gate was given the whole 100 ms (the one before answered at once), and a second more
      // to answer for itself.
      await clock.advanceTo(1099);
      assert.equal(await state(acquiring), 'pending');
      await clock.advanceTo(1100);
      await assert.rejects(
        acquiring,
        (error) =>
          error instanceof TimeoutError &&
          error.timeout === 100 &&
          error.message ===
            'acquire timed out after 100ms (at gate 2 of 2: it did not answer within its timeout of 100ms, nor 1000ms after)',
      );
      await assertNothingHeld(sem, limiter);
      deaf.grantAll(); // long after: given back at once
      await flush();
      assert.equal(deaf.released, 1);
      await assertNothingHeld(sem, limiter);
    });
  }
});
