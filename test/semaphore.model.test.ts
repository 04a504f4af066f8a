/**
 * Model-based tests for Semaphore. fast-check generates random sequences of operations — acquire
 * (weighted, prioritised, with a signal, with a timeout), tryAcquire, release (and release again),
 * run() of tasks the test finishes later, abort, time passing, resize, close — and applies each to
 * a Semaphore on a ManualClock and to a small reference model: a capacity, the permits out, and a
 * line ordered by priority, then arrival. After every step the two must agree on everything that
 * can be observed: the counts and stats, which requests were granted and in what order, how each
 * rejected one failed, the timers still armed and the abort listeners still attached.
 *
 * Each sequence ends by closing the semaphore or by releasing everything, then moving the clock
 * past every timeout; by then every promise made during the run must have settled as the model
 * says.
 *
 * CI runs a moderate number of sequences. `SLUICE_SOAK=1` runs batches until at least 100 000
 * operations have been checked. A failure prints fast-check's seed, path and shrunk
 * counterexample (a list of commands ending in a `replayPath` comment). To replay it:
 *
 *   SLUICE_SEED=<seed> SLUICE_PATH=<path> SLUICE_REPLAY_PATH=<replayPath> \
 *     node scripts/test.mjs --test-name-pattern='<test name>' test/semaphore.model.test.ts
 */
import assert from 'node:assert/strict';
import { getEventListeners, setMaxListeners } from 'node:events';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ClosedError, Semaphore, TimeoutError, type Permit } from '../src/index.ts';
import { flush, ManualClock } from './_helpers/clock.ts';

const SOAK = process.env.SLUICE_SOAK === '1';
const SOAK_OPERATIONS = 100_000;
const SEED = process.env.SLUICE_SEED === undefined ? undefined : Number(process.env.SLUICE_SEED);
const PATH = process.env.SLUICE_PATH;
const COMMANDS_PATH = process.env.SLUICE_REPLAY_PATH;
/** fast-check's options: `numRuns`, or the failure to replay. */
function runs(numRuns: number): fc.Parameters<unknown> {
  return SEED === undefined ? { numRuns } : { seed: SEED, path: PATH, numRuns };
}

/** Commands executed (teardown steps not included), and how often each outcome was reached. */
let executed = 0;
const reached = {
  granted: 0,
  aborted: 0,
  timedOut: 0,
  tooHeavyAtOnce: 0,
  tooHeavyOnResize: 0,
  closed: 0,
  tryRefused: 0,
};

// The reference model ------------------------------------------------------------------------

/** acquire(), tryAcquire(), run(fn), run(fn, options). */
type Kind = 'acquire' | 'try' | 'run' | 'runWith';

/** How a task ends: when the test says so, or at once (a value, a synchronous throw). */
type TaskEnd = 'later' | 'returns' | 'throws';

type Fault =
  | { kind: 'aborted'; controller: number }
  | { kind: 'closed' }
  | { kind: 'timedOut'; timeout: number; message: string }
  | { kind: 'tooHeavy'; message: string };

interface Request {
  readonly id: number;
  readonly kind: Kind;
  readonly weight: number;
  readonly priority: number;
  /** Index of its AbortController, if it has a signal. */
  readonly controller: number | undefined;
  readonly timeout: number;
  readonly end: TaskEnd;
  /**
   * waiting: in line. holding: a permit out, or a task running. done: released, or the task
   * ended (`failed` if it threw or rejected). rejected: never granted (`fault` says why).
   */
  status: 'waiting' | 'holding' | 'done' | 'rejected';
  failed: boolean;
  fault: Fault | undefined;
  /** Creation order of its timer (0 if none) and when it fires. */
  timer: number;
  deadline: number;
}

function tooHeavy(weight: number, capacity: number): Fault {
  return {
    kind: 'tooHeavy',
    message: `Expected \`weight\` to be at most the capacity ${capacity}, got \`${weight}\` (number): it could never be granted`,
  };
}

class Model {
  capacity: number;
  held = 0;
  /** Waiting requests: higher priority first, FIFO among equals. The front blocks the rest. */
  readonly line: Request[] = [];
  readonly requests: Request[] = [];
  /** Per AbortController: whether it has aborted. */
  readonly aborted: boolean[] = [];
  closed = false;
  now = 0;
  timers = 0;
  granted = 0;
  abortedCount = 0;
  timedOutCount = 0;
  peakHeld = 0;
  steps = 0;
  /** In this step: acquire() promises settled, in order (`+id` granted, `-id` rejected). */
  settled: string[] = [];
  /** In this step: tasks started, in order, of run(fn) and of run(fn, options). */
  started: number[] = [];
  startedWith: number[] = [];

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  beginStep(): void {
    this.steps++;
    this.settled = [];
    this.started = [];
    this.startedWith = [];
  }

  add(
    kind: Kind,
    weight: number,
    priority = 0,
    controller?: number,
    timeout = Infinity,
    end: TaskEnd = 'later',
  ): Request {
    const request: Request = {
      id: this.requests.length,
      kind,
      weight,
      priority,
      controller,
      timeout,
      end,
      status: 'waiting',
      failed: false,
      fault: undefined,
      timer: 0,
      deadline: Infinity,
    };
    this.requests.push(request);
    return request;
  }

  describe(): string {
    return `${this.held}/${this.capacity} held, ${this.line.length} waiting${this.closed ? ', closed' : ''}`;
  }

  fits(request: Request): boolean {
    return request.weight <= this.capacity - this.held;
  }

  /** acquire(), and the acquire inside run(fn, options). */
  acquire(request: Request): void {
    const now = this.#atOnce(request);
    if (now === 'granted') {
      this.#grant(request);
    } else if (now !== undefined) {
      this.#reject(request, now);
    } else {
      request.timer = request.timeout === Infinity ? 0 : ++this.timers;
      request.deadline = this.now + request.timeout;
      this.#enqueue(request);
      // Its priority may have put it at the front, where it may fit.
      this.#serve();
    }
  }

  /** How an acquire() settles without waiting, if it does. */
  #atOnce(request: Request): Fault | 'granted' | undefined {
    if (this.closed) return { kind: 'closed' };
    const { controller } = request;
    if (controller !== undefined && this.aborted[controller] === true) {
      return { kind: 'aborted', controller };
    }
    if (request.weight > this.capacity) {
      reached.tooHeavyAtOnce++;
      return tooHeavy(request.weight, this.capacity);
    }
    const front = this.line[0];
    if (front === undefined && this.fits(request)) return 'granted';
    if (request.timeout !== 0) return undefined;
    // A timeout of 0 does not wait: granted if it would be served the moment it joined the
    // line (nobody waits, or everyone waiting has a lower priority), else timed out at once.
    if ((front === undefined || front.priority < request.priority) && this.fits(request)) {
      return 'granted';
    }
    const message = `acquire timed out after 0ms (${this.describe()})`;
    this.timedOutCount++;
    return { kind: 'timedOut', timeout: 0, message };
  }

  /** run(fn): weight 1, priority 0. */
  run(request: Request): void {
    if (this.closed) {
      this.#reject(request, { kind: 'closed' });
      return;
    }
    this.#enqueue(request);
    this.#serve();
  }

  /** The granted request, or why not. */
  tryAcquire(weight: number): Request | 'refused' | 'closed' | 'tooHeavy' {
    if (this.closed) return 'closed';
    // A weight that could never be granted throws, as acquire() rejects.
    if (weight > this.capacity) return 'tooHeavy';
    if (this.line.length > 0 || weight > this.capacity - this.held) {
      reached.tryRefused++;
      return 'refused';
    }
    const request = this.add('try', weight);
    this.#grant(request);
    return request;
  }

  /** A permit released, or a task ended. */
  release(request: Request, failed = false): void {
    assert.equal(request.status, 'holding');
    request.status = 'done';
    request.failed = failed;
    this.held -= request.weight;
    this.#serve();
  }

  abort(controller: number): void {
    this.aborted[controller] = true;
    // Each waiter's listener runs in the order it was added; one that an earlier one's
    // cancellation got served has left the line (and removed its listener) by then.
    for (const request of this.requests) {
      if (request.controller === controller && request.status === 'waiting') {
        this.abortedCount++;
        this.#withdraw(request, { kind: 'aborted', controller });
        this.#serve();
      }
    }
  }

  advance(ms: number): void {
    const target = this.now + ms;
    for (;;) {
      let due: Request | undefined;
      for (const request of this.line) {
        if (request.timer === 0 || request.deadline > target) continue;
        if (
          due === undefined ||
          request.deadline < due.deadline ||
          (request.deadline === due.deadline && request.timer < due.timer)
        ) {
          due = request;
        }
      }
      if (due === undefined) break;
      this.now = Math.max(this.now, due.deadline);
      const message = `acquire timed out after ${due.timeout}ms (${this.describe()})`;
      this.timedOutCount++;
      this.#withdraw(due, { kind: 'timedOut', timeout: due.timeout, message });
      this.#serve();
    }
    this.now = target;
  }

  resize(capacity: number): void {
    this.capacity = capacity;
    for (const request of [...this.line]) {
      if (request.weight > capacity) {
        reached.tooHeavyOnResize++;
        this.#withdraw(request, tooHeavy(request.weight, capacity));
      }
    }
    this.#serve();
  }

  close(): void {
    this.closed = true;
    for (const request of this.line) this.#reject(request, { kind: 'closed' });
    this.line.length = 0;
  }

  #enqueue(request: Request): void {
    let i = this.line.findIndex((other) => other.priority < request.priority);
    if (i === -1) i = this.line.length;
    this.line.splice(i, 0, request);
  }

  /** Serves the line from the front while the front fits. */
  #serve(): void {
    for (let front = this.line[0]; front !== undefined && this.fits(front); front = this.line[0]) {
      this.line.shift();
      this.#grant(front);
    }
  }

  #grant(request: Request): void {
    reached.granted++;
    request.status = 'holding';
    this.held += request.weight;
    this.granted++;
    this.peakHeld = Math.max(this.peakHeld, this.held);
    if (request.kind === 'acquire') this.settled.push(`+${request.id}`);
    if (request.kind === 'runWith') this.startedWith.push(request.id);
    if (request.kind === 'run') {
      this.started.push(request.id);
      // A task that ends at once gives its permit back before the line is served further.
      if (request.end !== 'later') this.release(request, request.end === 'throws');
    }
  }

  #withdraw(request: Request, fault: Fault): void {
    this.line.splice(this.line.indexOf(request), 1);
    this.#reject(request, fault);
  }

  #reject(request: Request, fault: Fault): void {
    if (fault.kind === 'aborted') reached.aborted++;
    if (fault.kind === 'timedOut') reached.timedOut++;
    if (fault.kind === 'closed') reached.closed++;
    request.status = 'rejected';
    request.fault = fault;
    if (request.kind === 'acquire') this.settled.push(`-${request.id}`);
  }
}

// The system under test ----------------------------------------------------------------------

interface Tracked {
  outcome: { ok: true; value: unknown } | { ok: false; error: unknown } | undefined;
  permit: Permit | undefined;
  started: boolean;
  finish: ((ok: boolean) => void) | undefined;
  /** What the task returns, or throws. */
  readonly value: object;
  readonly error: Error;
}

class Real {
  readonly clock = new ManualClock();
  readonly sem: Semaphore;
  readonly controllers: AbortController[] = [];
  /** By request id, as in the model. */
  readonly tracked: Tracked[] = [];
  settled: string[] = [];
  started: number[] = [];
  startedWith: number[] = [];
  /** The reason given to close(), or the ClosedError it made when none was given. */
  closeReason: unknown = undefined;
  customClose = false;
  /** How high `held` may be: the capacity, or what was held when the capacity was lowered. */
  ceiling: number;
  lastGranted = 0;

  constructor(capacity: number) {
    this.sem = new Semaphore(capacity, { clock: this.clock });
    this.ceiling = capacity;
  }

  beginStep(): void {
    this.settled = [];
    this.started = [];
    this.startedWith = [];
  }

  add(id: number): Tracked {
    assert.equal(id, this.tracked.length);
    const tracked: Tracked = {
      outcome: undefined,
      permit: undefined,
      started: false,
      finish: undefined,
      value: { result: id },
      error: new Error(`task ${id} failed`),
    };
    this.tracked.push(tracked);
    return tracked;
  }

  /** Records how the promise of request `id` settles (and, for an acquire, in which order). */
  track(id: number, promise: Promise<unknown>, ordered: boolean): void {
    const tracked = this.tracked[id]!;
    void promise.then(
      (value) => {
        tracked.outcome = { ok: true, value };
        if (ordered) {
          tracked.permit = value as Permit;
          this.settled.push(`+${id}`);
        }
      },
      (error: unknown) => {
        tracked.outcome = { ok: false, error };
        if (ordered) this.settled.push(`-${id}`);
      },
    );
  }

  /** A task for run(): notes that it started, then ends as told. */
  task(id: number, end: TaskEnd, withOptions: boolean): () => unknown {
    return () => {
      const tracked = this.tracked[id]!;
      tracked.started = true;
      (withOptions ? this.startedWith : this.started).push(id);
      if (end === 'returns') return tracked.value;
      if (end === 'throws') throw tracked.error;
      return new Promise((resolve, reject) => {
        tracked.finish = (ok) => {
          if (ok) resolve(tracked.value);
          else reject(tracked.error);
        };
      });
    };
  }
}

// Checks -------------------------------------------------------------------------------------

function verifyFault(real: Real, what: string, error: unknown, fault: Fault): void {
  switch (fault.kind) {
    case 'aborted':
      assert.equal(
        error,
        real.controllers[fault.controller]!.signal.reason,
        `${what}: signal.reason`,
      );
      break;
    case 'closed':
      if (real.customClose) {
        assert.equal(error, real.closeReason, `${what}: the close reason`);
      } else {
        assert.ok(error instanceof ClosedError, `${what}: a ClosedError`);
        assert.equal(error.message, 'the semaphore is closed');
        real.closeReason ??= error;
        assert.equal(error, real.closeReason, `${what}: the same ClosedError for everyone`);
      }
      break;
    case 'timedOut':
      assert.ok(error instanceof TimeoutError, `${what}: a TimeoutError, got ${String(error)}`);
      assert.equal(error.timeout, fault.timeout);
      assert.equal(error.code, 'ERR_SLUICE_TIMEOUT');
      assert.equal(error.message, fault.message, `${what}: the timeout message`);
      break;
    case 'tooHeavy':
      assert.ok(error instanceof RangeError, `${what}: a RangeError, got ${String(error)}`);
      assert.equal(error.message, fault.message, `${what}: the RangeError message`);
      break;
  }
}

function verifyRequest(model: Model, real: Real, request: Request): void {
  const tracked = real.tracked[request.id]!;
  const what = `request #${request.id} (${request.kind}, weight ${request.weight}, priority ${request.priority})`;
  const isPermit = request.kind === 'acquire' || request.kind === 'try';
  switch (request.status) {
    case 'waiting':
      assert.equal(tracked.outcome, undefined, `${what} waits in line, but settled`);
      assert.equal(tracked.started, false, `${what} waits in line, but its task started`);
      break;
    case 'holding':
    case 'done':
      if (isPermit) {
        const permit = tracked.permit;
        assert.ok(permit !== undefined, `${what} was granted, but has no permit`);
        if (request.kind === 'acquire') {
          assert.deepEqual(tracked.outcome, { ok: true, value: permit }, `${what} resolved`);
        }
        assert.equal(permit.weight, request.weight, `${what}: the permit's weight`);
        assert.equal(permit.signal.aborted, false);
        assert.equal(
          (permit as Permit & { released: boolean }).released,
          request.status === 'done',
          `${what}: permit.released`,
        );
      } else {
        assert.equal(tracked.started, true, `${what} was granted, but its task did not start`);
        if (request.status === 'holding') {
          assert.equal(tracked.outcome, undefined, `${what} still runs, but settled`);
        } else {
          const expected = request.failed
            ? { ok: false, error: tracked.error }
            : { ok: true, value: tracked.value };
          assert.deepEqual(tracked.outcome, expected, `${what} settled as its task did`);
        }
      }
      break;
    case 'rejected':
      assert.equal(tracked.started, false, `${what} was rejected, but its task started`);
      assert.ok(tracked.outcome !== undefined, `${what} was rejected, but is still pending`);
      assert.equal(tracked.outcome.ok, false, `${what} was rejected, but fulfilled`);
      verifyFault(real, what, tracked.outcome.error, request.fault!);
      break;
  }
  if (request.status !== 'waiting') assert.ok(!model.line.includes(request));
}

/** Everything observable must match the model. */
function verify(model: Model, real: Real): void {
  const { sem, clock } = real;
  const waitingWeight = model.line.reduce((sum, request) => sum + request.weight, 0);
  assert.deepEqual(sem.stats(), {
    capacity: model.capacity,
    held: model.held,
    available: Math.max(0, model.capacity - model.held),
    waiting: model.line.length,
    waitingWeight,
    peakHeld: model.peakHeld,
    granted: model.granted,
    aborted: model.abortedCount,
    timedOut: model.timedOutCount,
    closed: model.closed,
  });
  assert.equal(sem.capacity, model.capacity);
  assert.equal(sem.held, model.held, 'held');
  assert.equal(sem.waiting, model.line.length, 'waiting');
  assert.equal(sem.available, Math.max(0, model.capacity - model.held), 'available');
  assert.equal(sem.closed, model.closed);
  assert.equal(sem.toString(), `Semaphore(${model.describe()})`);

  // Checked on the semaphore alone: never above the capacity, except with permits granted
  // before it was lowered; and a step that granted anything leaves `held` within it.
  if (sem.held <= sem.capacity) real.ceiling = sem.capacity;
  assert.ok(sem.held <= real.ceiling, `${sem.held} held, above ${real.ceiling}`);
  const granted = sem.stats().granted;
  if (granted > real.lastGranted) {
    assert.ok(sem.held <= sem.capacity, `granted while ${sem.held}/${sem.capacity} held`);
  }
  real.lastGranted = granted;
  // The model's own invariant: whoever is at the front does not fit.
  const front = model.line[0];
  assert.ok(front === undefined || !model.fits(front), 'the model left a front waiter that fits');

  assert.deepEqual(real.settled, model.settled, 'acquire() promises settled in this order');
  assert.deepEqual(real.started, model.started, 'run(fn) tasks started in this order');
  assert.deepEqual(
    real.startedWith,
    model.startedWith,
    'run(fn, options) tasks started in this order',
  );
  assert.equal(real.tracked.length, model.requests.length);
  for (const request of model.requests) verifyRequest(model, real, request);

  // Nothing left behind by a waiter that left the line: no timer, no abort listener. Waiters
  // sharing a signal share one listener on it.
  const timed = model.line.filter((request) => request.timer !== 0).length;
  assert.equal(clock.pending, timed, 'timers armed: one per waiter with a timeout');
  real.controllers.forEach((controller, i) => {
    const listening = model.line.some((request) => request.controller === i) ? 1 : 0;
    assert.equal(
      getEventListeners(controller.signal, 'abort').length,
      listening,
      `abort listeners on signal ${i}: one while any waiter uses it`,
    );
  });
}

// Commands -----------------------------------------------------------------------------------

type SignalChoice = 'none' | 'new' | 'shared';

interface AcquireSpec {
  weight: number;
  priority: number;
  signal: SignalChoice;
  timeout: number | undefined;
}

function controllerFor(model: Model, real: Real, choice: SignalChoice): number | undefined {
  if (choice === 'none') return undefined;
  if (choice === 'shared' && real.controllers.length > 0) return real.controllers.length - 1;
  const controller = new AbortController();
  // A burst of waiters may share one signal: more listeners than Node's default warning limit.
  setMaxListeners(Infinity, controller.signal);
  real.controllers.push(controller);
  model.aborted.push(false);
  return real.controllers.length - 1;
}

function acquireOptions(real: Real, spec: AcquireSpec, controller: number | undefined) {
  const options: { weight?: number; priority?: number; signal?: AbortSignal; timeout?: number } =
    {};
  if (spec.weight !== 1) options.weight = spec.weight;
  if (spec.priority !== 0) options.priority = spec.priority;
  if (controller !== undefined) options.signal = real.controllers[controller]!.signal;
  if (spec.timeout !== undefined) options.timeout = spec.timeout;
  return Object.keys(options).length === 0 ? undefined : options;
}

function describeSpec(spec: AcquireSpec): string {
  const parts = [`weight: ${spec.weight}`];
  if (spec.priority !== 0) parts.push(`priority: ${spec.priority}`);
  if (spec.signal !== 'none') parts.push(`signal: ${spec.signal}`);
  if (spec.timeout !== undefined) parts.push(`timeout: ${spec.timeout}`);
  return `{ ${parts.join(', ')} }`;
}

/** One operation: applied to the model and the semaphore, then everything is compared. */
abstract class Step implements fc.AsyncCommand<Model, Real> {
  check(_model: Readonly<Model>): boolean {
    return true;
  }

  async run(model: Model, real: Real): Promise<void> {
    executed++;
    await perform(this, model, real);
  }

  abstract apply(model: Model, real: Real): void | Promise<void>;
  abstract toString(): string;
}

/** `inspect` checks something of its own before the comparison with the model. */
async function perform(step: Step, model: Model, real: Real, inspect?: () => void): Promise<void> {
  model.beginStep();
  real.beginStep();
  await step.apply(model, real);
  await flush();
  inspect?.();
  verify(model, real);
}

/** The nth of `list`, for commands generated before anyone knows what the list will hold. */
function nth<T>(list: readonly T[], pick: number): T {
  return list[pick % list.length]!;
}

function heldPermits(model: Readonly<Model>): Request[] {
  return model.requests.filter(
    (r) => (r.kind === 'acquire' || r.kind === 'try') && r.status === 'holding',
  );
}

function runningTasks(model: Readonly<Model>): Request[] {
  return model.requests.filter(
    (r) => (r.kind === 'run' || r.kind === 'runWith') && r.status === 'holding',
  );
}

class Acquire extends Step {
  constructor(
    readonly spec: AcquireSpec,
    readonly count: number,
  ) {
    super();
  }

  apply(model: Model, real: Real): void {
    // A burst shares one signal: aborting it cancels many waiters at once.
    const controller = controllerFor(model, real, this.spec.signal);
    for (let i = 0; i < this.count; i++) {
      const { weight, priority, timeout } = this.spec;
      const request = model.add('acquire', weight, priority, controller, timeout ?? Infinity);
      real.add(request.id);
      real.track(request.id, real.sem.acquire(acquireOptions(real, this.spec, controller)), true);
      model.acquire(request);
    }
  }

  toString(): string {
    const times = this.count === 1 ? '' : ` x${this.count}`;
    return `acquire(${describeSpec(this.spec)})${times}`;
  }
}

class Run extends Step {
  /** With `spec`, run(fn, options); without, run(fn). */
  constructor(
    readonly spec: AcquireSpec | undefined,
    readonly end: TaskEnd,
  ) {
    super();
  }

  apply(model: Model, real: Real): void {
    const spec = this.spec;
    if (spec === undefined) {
      const request = model.add('run', 1, 0, undefined, Infinity, this.end);
      real.add(request.id);
      real.track(request.id, real.sem.run(real.task(request.id, this.end, false)), false);
      model.run(request);
      return;
    }
    const controller = controllerFor(model, real, spec.signal);
    const { weight, priority, timeout } = spec;
    const request = model.add('runWith', weight, priority, controller, timeout ?? Infinity);
    real.add(request.id);
    const options = acquireOptions(real, spec, controller) ?? {};
    real.track(request.id, real.sem.run(real.task(request.id, 'later', true), options), false);
    model.acquire(request);
  }

  toString(): string {
    const options = this.spec === undefined ? '' : `, ${describeSpec(this.spec)}`;
    return `run(task that ends ${this.end}${options})`;
  }
}

class TryAcquire extends Step {
  constructor(readonly weight: number) {
    super();
  }

  apply(model: Model, real: Real): void {
    const { sem } = real;
    const free = sem.waiting === 0 && sem.held + this.weight <= sem.capacity;
    const expected = model.tryAcquire(this.weight);
    let permit: Permit | undefined;
    try {
      permit = sem.tryAcquire(this.weight);
    } catch (error) {
      if (expected === 'closed') {
        verifyFault(real, 'tryAcquire', error, { kind: 'closed' });
        return;
      }
      assert.equal(expected, 'tooHeavy', `tryAcquire threw ${String(error)}`);
      verifyFault(real, 'tryAcquire', error, tooHeavy(this.weight, model.capacity));
      return;
    }
    if (expected === 'closed') assert.fail('tryAcquire after close() must throw');
    if (expected === 'tooHeavy') {
      assert.fail(`tryAcquire(${this.weight}) must throw: it could never be granted`);
    }
    assert.equal(
      permit !== undefined,
      free,
      'tryAcquire succeeds exactly when none wait and it fits',
    );
    if (expected === 'refused') {
      assert.equal(permit, undefined, 'tryAcquire barged or overran the capacity');
    } else {
      assert.ok(permit !== undefined, 'tryAcquire refused, but nobody waits and it fits');
      real.add(expected.id).permit = permit;
    }
  }

  toString(): string {
    return `tryAcquire(${this.weight})`;
  }
}

type ReleaseHow = 'release' | 'dispose' | 'asyncDispose';

class Release extends Step {
  constructor(
    readonly pick: number,
    readonly how: ReleaseHow,
    readonly twice: boolean,
  ) {
    super();
  }

  override check(model: Readonly<Model>): boolean {
    return heldPermits(model).length > 0;
  }

  async apply(model: Model, real: Real): Promise<void> {
    const request = nth(heldPermits(model), this.pick);
    const permit = real.tracked[request.id]!.permit;
    assert.ok(permit !== undefined, `request #${request.id} holds no permit`);
    if (this.how === 'release') permit.release({ ok: true });
    else if (this.how === 'dispose') permit[Symbol.dispose]();
    else await permit[Symbol.asyncDispose]();
    // Releasing twice is a no-op: it must not free the permits of whoever was served next.
    if (this.twice) permit.release();
    model.release(request);
  }

  toString(): string {
    return `release(permit ${this.pick}, by ${this.how}${this.twice ? ', twice' : ''})`;
  }
}

class ReleaseAgain extends Step {
  constructor(readonly pick: number) {
    super();
  }

  override check(model: Readonly<Model>): boolean {
    return model.requests.some(
      (r) => r.kind !== 'run' && r.kind !== 'runWith' && r.status === 'done',
    );
  }

  apply(model: Model, real: Real): void {
    const released = model.requests.filter(
      (r) => r.kind !== 'run' && r.kind !== 'runWith' && r.status === 'done',
    );
    const request = nth(released, this.pick);
    real.tracked[request.id]!.permit!.release();
  }

  toString(): string {
    return `releaseAgain(released permit ${this.pick})`;
  }
}

class Finish extends Step {
  constructor(
    readonly pick: number,
    readonly ok: boolean,
  ) {
    super();
  }

  override check(model: Readonly<Model>): boolean {
    return runningTasks(model).length > 0;
  }

  apply(model: Model, real: Real): void {
    const request = nth(runningTasks(model), this.pick);
    const finish = real.tracked[request.id]!.finish;
    assert.ok(finish !== undefined, `the task of request #${request.id} did not start`);
    finish(this.ok);
    model.release(request, !this.ok);
  }

  toString(): string {
    return `finish(task ${this.pick}, ${this.ok ? 'resolving' : 'rejecting'})`;
  }
}

class Abort extends Step {
  constructor(
    readonly pick: number,
    readonly withReason: boolean,
  ) {
    super();
  }

  override check(model: Readonly<Model>): boolean {
    return model.aborted.includes(false);
  }

  apply(model: Model, real: Real): void {
    // Newest first: the signal of the latest burst of waiters is the likeliest pick.
    const live = [...model.aborted.keys()].filter((i) => !model.aborted[i]).reverse();
    const i = nth(live, this.pick);
    real.controllers[i]!.abort(this.withReason ? new Error(`signal ${i} aborted`) : undefined);
    model.abort(i);
  }

  toString(): string {
    const why = this.withReason ? ', with a reason' : '';
    return `abort(live signal ${this.pick} counting from the newest${why})`;
  }
}

class Advance extends Step {
  /** `ms`, or 0 for: to the next timer exactly. */
  constructor(readonly ms: number) {
    super();
  }

  async apply(model: Model, real: Real): Promise<void> {
    let ms = this.ms;
    if (ms === 0) {
      const next = real.clock.nextAt;
      ms = next === undefined ? 1 : Math.max(0, next - real.clock.now());
    }
    await real.clock.advance(ms);
    model.advance(ms);
  }

  toString(): string {
    return this.ms === 0 ? 'advance(to the next timer)' : `advance(${this.ms})`;
  }
}

class Resize extends Step {
  constructor(readonly capacity: number) {
    super();
  }

  apply(model: Model, real: Real): void {
    if (this.capacity < real.sem.capacity) {
      real.ceiling = Math.max(this.capacity, real.sem.held);
    }
    real.sem.capacity = this.capacity;
    model.resize(this.capacity);
  }

  toString(): string {
    return `resize(${this.capacity})`;
  }
}

class Close extends Step {
  constructor(readonly withReason: boolean) {
    super();
  }

  override check(model: Readonly<Model>): boolean {
    // Rare, and late: the rest of the run exercises a closed semaphore.
    return !model.closed && model.steps >= 8;
  }

  apply(model: Model, real: Real): void {
    real.customClose = this.withReason;
    if (this.withReason) {
      real.closeReason = new Error('shutting down');
      real.sem.close(real.closeReason);
    } else {
      real.sem.close();
    }
    model.close();
  }

  toString(): string {
    return `close(${this.withReason ? 'with a reason' : ''})`;
  }
}

// Arbitraries --------------------------------------------------------------------------------

const capacityArb = fc.oneof(
  { weight: 9, arbitrary: fc.integer({ min: 1, max: 5 }) },
  { weight: 1, arbitrary: fc.constant(Infinity) },
);
/** Mostly light, sometimes up to 7 against capacities up to 6: now and then too heavy. */
const weightArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 2 }) },
  { weight: 3, arbitrary: fc.integer({ min: 3, max: 4 }) },
  { weight: 1, arbitrary: fc.integer({ min: 5, max: 7 }) },
);
const timeoutArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 40 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, Infinity) },
);
/** Which of the permits held, tasks running or signals live: often the first. */
const pickArb = fc.oneof(fc.constant(0), fc.nat({ max: 50 }));

/**
 * How often each operation comes up. `mixed` exercises everything; `cancelling` piles waiters
 * up behind a blocked front, all at priority 0, and cancels them in bulk, which is what it
 * takes to reach the cleanup of many cancelled waiters at once.
 */
interface Profile {
  priority: fc.Arbitrary<number>;
  signal: fc.Arbitrary<SignalChoice>;
  count: fc.Arbitrary<number>;
  weights: Record<
    'acquire' | 'run' | 'release' | 'finish' | 'abort' | 'advance' | 'resize',
    number
  >;
}

const profiles: Record<'mixed' | 'cancelling', Profile> = {
  mixed: {
    priority: fc.constantFrom(0, 0, -1, 1, 5),
    signal: fc.constantFrom<SignalChoice>('none', 'none', 'new', 'shared'),
    count: fc.oneof(
      { weight: 15, arbitrary: fc.constant(1) },
      { weight: 1, arbitrary: fc.integer({ min: 2, max: 40 }) },
    ),
    weights: { acquire: 16, run: 6, release: 14, finish: 6, abort: 4, advance: 6, resize: 4 },
  },
  cancelling: {
    priority: fc.constant(0),
    signal: fc.constantFrom<SignalChoice>('none', 'new', 'shared'),
    // Bursts around the sizes at which the semaphore sweeps cancelled waiters out of its line
    // (more than 32, and more than are still waiting), and at twice that.
    count: fc.oneof(
      { weight: 3, arbitrary: fc.constant(1) },
      { weight: 1, arbitrary: fc.integer({ min: 30, max: 80 }) },
      { weight: 2, arbitrary: fc.constantFrom(32, 33, 34, 65, 66, 67) },
    ),
    weights: { acquire: 10, run: 2, release: 6, finish: 2, abort: 8, advance: 6, resize: 1 },
  },
};

function stepArb(profile: Profile): fc.Arbitrary<Step> {
  const spec = fc.record({
    weight: weightArb,
    priority: profile.priority,
    signal: profile.signal,
    timeout: timeoutArb,
  });
  const { weights } = profile;
  return fc.oneof(
    {
      weight: weights.acquire,
      arbitrary: fc.tuple(spec, profile.count).map(([s, n]) => new Acquire(s, n)),
    },
    {
      weight: weights.run,
      arbitrary: fc
        .tuple(fc.option(spec), fc.constantFrom<TaskEnd>('later', 'later', 'returns', 'throws'))
        .map(([s, end]) => new Run(s ?? undefined, s === null ? end : 'later')),
    },
    { weight: 4, arbitrary: weightArb.map((w) => new TryAcquire(w)) },
    {
      weight: weights.release,
      arbitrary: fc
        .tuple(
          pickArb,
          fc.constantFrom<ReleaseHow>('release', 'dispose', 'asyncDispose'),
          fc.boolean(),
        )
        .map(([pick, how, twice]) => new Release(pick, how, twice)),
    },
    { weight: 2, arbitrary: pickArb.map((pick) => new ReleaseAgain(pick)) },
    {
      weight: weights.finish,
      arbitrary: fc.tuple(pickArb, fc.boolean()).map(([pick, ok]) => new Finish(pick, ok)),
    },
    {
      weight: weights.abort,
      arbitrary: fc.tuple(pickArb, fc.boolean()).map(([pick, why]) => new Abort(pick, why)),
    },
    {
      weight: weights.advance,
      arbitrary: fc.integer({ min: 0, max: 30 }).map((ms) => new Advance(ms)),
    },
    {
      weight: weights.resize,
      arbitrary: fc
        .oneof(
          { weight: 9, arbitrary: fc.integer({ min: 1, max: 6 }) },
          { weight: 1, arbitrary: fc.constant(Infinity) },
        )
        .map((n) => new Resize(n)),
    },
    { weight: 1, arbitrary: fc.boolean().map((why) => new Close(why)) },
  );
}

/**
 * Ends a run: closes the semaphore (or not), then releases every permit and ends every task
 * until nothing holds or waits, then moves the clock past every timeout. Each is a step, checked
 * like the others; at the end every promise made during the run has settled.
 */
async function settle(model: Model, real: Real, close: boolean): Promise<void> {
  if (close && !model.closed) await perform(new Close(false), model, real);
  for (;;) {
    const permits = heldPermits(model);
    const tasks = runningTasks(model);
    if (permits.length === 0 && tasks.length === 0) break;
    // Newest first, so that the indexes of the others hold while those served meanwhile join.
    for (let i = permits.length - 1; i >= 0; i--) {
      await perform(new Release(i, 'release', false), model, real);
    }
    for (let i = tasks.length - 1; i >= 0; i--) {
      await perform(new Finish(i, true), model, real);
    }
  }
  assert.equal(model.line.length, 0, 'nothing holds, so nobody can still be waiting');
  if (!model.closed && model.capacity !== Infinity) {
    // Emptied, it serves a holder and a waiter as a new one would: nothing the run left in its
    // line (cancelled waiters, say) is taken for a live one.
    const whole = { weight: model.capacity, priority: 0, signal: 'none' as const, timeout: 5 };
    await perform(new Acquire(whole, 1), model, real);
    await perform(new Acquire({ ...whole, weight: 1 }, 2), model, real);
    await perform(new Release(0, 'release', false), model, real);
    for (let i = 1; i >= 0; i--) await perform(new Release(i, 'release', false), model, real);
  }
  await perform(new Advance(1_000_000), model, real);
  assert.equal(real.sem.held, 0);
  assert.equal(real.sem.waiting, 0);
  assert.equal(real.clock.pending, 0);
  for (const request of model.requests) {
    assert.ok(request.status === 'done' || request.status === 'rejected');
    if (request.kind !== 'try') {
      assert.ok(real.tracked[request.id]!.outcome !== undefined, `request #${request.id} settled`);
    }
  }
}

function modelProperty(profile: Profile, maxCommands: number) {
  return fc.asyncProperty(
    capacityArb,
    fc.boolean(),
    fc.commands([stepArb(profile)], { maxCommands, size: 'max', replayPath: COMMANDS_PATH }),
    async (capacity, closeAtEnd, steps) => {
      const world = { model: new Model(capacity), real: new Real(capacity) };
      await fc.asyncModelRun(() => world, steps);
      await settle(world.model, world.real, closeAtEnd);
    },
  );
}

/** Runs the model-based property until `quota` commands of it have run (once, in CI). */
async function checkAgainstModel(profile: Profile, quota: number): Promise<number> {
  const before = executed;
  const property = modelProperty(profile, SOAK ? 100 : 50);
  do {
    await fc.assert(property, runs(SOAK ? 500 : 200));
  } while (SEED === undefined && executed - before < quota);
  return executed - before;
}

describe('Semaphore against a reference model', () => {
  const began = performance.now();
  const minimum = SOAK ? SOAK_OPERATIONS : 2_000;

  it('agrees with the model after every step of random sequences of operations', async (t) => {
    const count = await checkAgainstModel(profiles.mixed, SOAK ? 80_000 : 0);
    t.diagnostic(`${count} operations`);
  });

  it('agrees with the model when many waiters behind a blocked front are cancelled', async (t) => {
    const count = await checkAgainstModel(profiles.cancelling, SOAK ? 20_000 : 0);
    t.diagnostic(`${count} operations`);
  });

  it('serves at once a new request that leads the line and fits, whichever way it asks', async () => {
    const scenario = fc.integer({ min: 2, max: 6 }).chain((capacity) =>
      fc.record({
        capacity: fc.constant(capacity),
        holding: fc.integer({ min: 1, max: capacity }),
        // Half the time everyone waiting is at priority -1, below any newcomer but one.
        below: fc.boolean(),
        waiters: fc.array(
          fc.record({
            weight: fc.integer({ min: 1, max: capacity }),
            priority: fc.constantFrom(-1, 0, 1, 5),
            signal: fc.constant<SignalChoice>('none'),
            timeout: fc.constant(undefined),
          }),
          { maxLength: 4 },
        ),
        how: fc.constantFrom('acquire', 'acquire with timeout 0', 'run', 'run with options'),
        weight: fc.integer({ min: 1, max: capacity }),
        priority: fc.constantFrom(-1, 0, 1, 5),
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        scenario,
        async ({ capacity, holding, below, how, weight, priority, ...rest }) => {
          const waiters = below ? rest.waiters.map((w) => ({ ...w, priority: -1 })) : rest.waiters;
          const model = new Model(capacity);
          const real = new Real(capacity);
          const first = {
            weight: holding,
            priority: 0,
            signal: 'none' as const,
            timeout: undefined,
          };
          await perform(new Acquire(first, 1), model, real);
          for (const spec of waiters) await perform(new Acquire(spec, 1), model, real);
          // run(fn) asks for 1 permit at priority 0, whatever was generated.
          const spec =
            how === 'run'
              ? { weight: 1, priority: 0, signal: 'none' as const, timeout: undefined }
              : { weight, priority, signal: 'none' as const, timeout: undefined };
          const step =
            how === 'run'
              ? new Run(undefined, 'later')
              : how === 'run with options'
                ? new Run(spec, 'later')
                : new Acquire({ ...spec, timeout: how === 'acquire' ? undefined : 0 }, 1);
          // Checked here without the model too.
          const { sem } = real;
          const leads = model.line.every((request) => request.priority < spec.priority);
          const fits = spec.weight <= sem.capacity - sem.held;
          await perform(step, model, real, () => {
            const tracked = real.tracked.at(-1)!;
            const served = tracked.started || tracked.outcome?.ok === true;
            const where = leads ? 'leads the line' : 'is behind others';
            assert.equal(
              served,
              leads && fits,
              `it ${where} and ${fits ? 'fits' : 'does not fit'}`,
            );
          });
          await settle(model, real, false);
        },
      ),
      runs(SOAK ? 2_000 : 200),
    );
  });

  it('rejects with a RangeError exactly the waiters heavier than a lowered capacity', async () => {
    const scenario = fc.integer({ min: 2, max: 6 }).chain((capacity) =>
      fc.record({
        capacity: fc.constant(capacity),
        lowered: fc.integer({ min: 1, max: capacity - 1 }),
        waiters: fc.array(
          fc.record({
            weight: fc.integer({ min: 1, max: capacity }),
            priority: fc.constantFrom(-1, 0, 1, 5),
            signal: fc.constantFrom<SignalChoice>('none', 'new'),
            timeout: fc.constantFrom(undefined, 10),
          }),
          { minLength: 1, maxLength: 10 },
        ),
        asRuns: fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(scenario, async ({ capacity, lowered, waiters, asRuns }) => {
        const model = new Model(capacity);
        const real = new Real(capacity);
        const all = { weight: capacity, priority: 0, signal: 'none' as const, timeout: undefined };
        await perform(new Acquire(all, 1), model, real);
        for (const [i, spec] of waiters.entries()) {
          const step = asRuns[i] === true ? new Run(spec, 'later') : new Acquire(spec, 1);
          await perform(step, model, real);
        }
        await perform(new Resize(lowered), model, real);
        // Checked here without the model too: the heavy ones failed, the others still wait.
        for (const [i, spec] of waiters.entries()) {
          const { outcome } = real.tracked[i + 1]!;
          if (spec.weight > lowered) {
            assert.ok(outcome !== undefined && !outcome.ok, `waiter ${i} (weight ${spec.weight})`);
            assert.ok(outcome.error instanceof RangeError);
            assert.match(outcome.error.message, new RegExp(`at most the capacity ${lowered}, `));
          } else {
            assert.equal(outcome, undefined, `waiter ${i} (weight ${spec.weight}) still waits`);
          }
        }
        await settle(model, real, false);
      }),
      runs(SOAK ? 2_000 : 100),
    );
  });

  it(`checks at least ${minimum} operations, reaching every outcome`, (t) => {
    const seconds = ((performance.now() - began) / 1000).toFixed(1);
    t.diagnostic(`${executed} operations checked in ${seconds}s`);
    t.diagnostic(`outcomes reached: ${JSON.stringify(reached)}`);
    if (SOAK) console.log(`soak: ${executed} operations checked in ${seconds}s`);
    if (SEED !== undefined) return;
    assert.ok(executed >= minimum, `${executed} operations, expected at least ${minimum}`);
    for (const [outcome, count] of Object.entries(reached)) {
      assert.ok(count > 0, `no run reached ${outcome}`);
    }
  });
});
