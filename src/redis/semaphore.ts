/**
 * `RedisSemaphore`: one weighted, FIFO semaphore shared by every process that names it in one
 * Redis. Redis decides everything, in one Lua script (`scripts/semaphore-4.lua`) run on its own
 * clock (`TIME`): a grant is a lease with its own expiry; the line is ordered by an arrival ticket
 * (and priority); a release hands the freed permits to the head of the line in the same script and
 * announces each grant on the sharded channel of the process it went to (so it wakes that process,
 * not every process with a request in line). This file is a process's side: it sends requests,
 * keeps its leases renewed, listens for grants, and checks for them on a timer too, since pub/sub
 * may lose a message.
 *
 * A process's requests travel in one outbox, sent a microtask later in the order they were made,
 * consecutive ones of a kind batched into one call: `acquire()` in a loop costs one script call,
 * and a cancellation is always sent after the request it cancels.
 *
 * Invariants:
 * - Redis alone grants: the total weight of unexpired leases never exceeds `permits`;
 * - a request of this process is in `#waiters` from `acquire()` until it is granted (then its lease
 *   is in `#leases` until released or lost) or given up; a given-up request that reached Redis is
 *   released there (withdrawn from the line, or its late grant given back);
 * - a lease's local deadline is never later than its expiry in Redis (it counts from before the
 *   call that set it was sent); past it, the lease is lost for good: its signal aborts, `leaseLost`
 *   is emitted, it is never renewed again, and it is given back in Redis (where a renewal already
 *   on its way may have renewed it);
 * - every promise settles: granted, cancelled, closed, or failed with what Redis (or its silence)
 *   said; waiting on a Redis that does not answer is bounded by `commandTimeoutMs` for a request not
 *   yet in line, and by `leaseMs` for one in line.
 *
 * Its size (about 750 lines, a third of them comments): the requests in flight, the leases, the
 * outbox, the timers and the wake-ups share one state, and split, each part would reach into the
 * others' fields; what holds no such state (a request, a lease, the alarm) is in _requests.ts.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { aboveCapacity, parseRequest } from '../_acquire.ts';
import { later, systemClock, Timer, type Cancel, type Clock } from '../_clock.ts';
import { onAbort } from '../_signals.ts';
import * as v from '../_validate.ts';
import { ClosedError, LeaseLostError, TimeoutError } from '../errors.ts';
import type { AcquireOptions, Gate } from '../gate.ts';
import {
  checkName,
  redisClient,
  type RedisClient,
  type Reply,
  type Subscription,
} from './_client.ts';
import {
  Alarm,
  BATCH,
  Lease,
  now,
  Waiter,
  type Item,
  type Op,
  type RedisPermit,
} from './_requests.ts';
import { SEMAPHORE_SCRIPT } from './_scripts.ts';
import { answerWithin, silenceOf, type Silence } from './_timeout.ts';

export type { RedisPermit } from './_requests.ts';

/** Options for the {@link RedisSemaphore} constructor. */
export interface RedisSemaphoreOptions {
  /** How many permits the semaphore has. Every process using the name must give the same. */
  permits: number;
  /**
   * How long a lease lives in Redis without renewal, in ms: a crashed holder's permits come back
   * within it. Leases are renewed every `leaseMs / 3`. @default 10_000
   */
  leaseMs?: number;
  /**
   * While this process has requests in line, how often it asks Redis for grants it was not told
   * of (the announcement on the channel can be lost), in ms. It also asks when the earliest lease
   * in Redis ends (a crashed holder's permits come back then, with nobody to announce them).
   * @default 150
   */
  pollMs?: number;
  /**
   * How long to wait for Redis to answer one call, in ms, before failing it: at most the renewal
   * margin, two thirds of `leaseMs` (a grant then arrives with a third of its lease left, and a
   * renewal sent when due is answered or failed before the lease can expire).
   * @default 2_000, or two thirds of `leaseMs` if less
   */
  commandTimeoutMs?: number;
  /** The clock of `acquire()`'s `timeout` (for tests). @default the system clock */
  clock?: Clock;
}

/** The events of a {@link RedisSemaphore}. */
export interface RedisSemaphoreEvents {
  /** A lease was lost before release: its permit's `signal` has aborted with `error`. */
  leaseLost: [permit: RedisPermit, error: LeaseLostError];
}

/**
 * A weighted, FIFO semaphore of `permits` shared through Redis by every process that uses the
 * same `name`: `await using permit = await sem.acquire({ weight, signal, timeout })`.
 *
 * A gate (`Limiter`, `KeyedLimiter` and `createFetch` take it in place of a concurrency) with no
 * synchronous `tryAcquire`: a shared gate cannot answer without asking Redis. `tryAcquireAsync()`
 * is its non-waiting counterpart.
 */
export class RedisSemaphore extends EventEmitter<RedisSemaphoreEvents> implements Gate {
  readonly name: string;
  readonly permits: number;
  readonly leaseMs: number;
  readonly pollMs: number;
  readonly commandTimeoutMs: number;
  readonly #redis: RedisClient;
  /** The calls unanswered on that client, shared with every gate made on it. */
  readonly #silence: Silence;
  readonly #clock: Clock;
  readonly #keys: readonly string[];
  /** This semaphore object's id in Redis; its lease ids are `<client>:<n>`. */
  readonly #client = randomBytes(9).toString('base64url');
  /** How this process's lease ids begin (a wake-up on its channel names only those). */
  readonly #leasePrefix: string;
  #nextId = 0;
  readonly #waiters = new Map<string, Waiter>();
  /** How many of `#waiters` were ever in line: while any is, calls keep this process's entry. */
  #inLine = 0;
  readonly #leases = new Map<string, Lease>();
  #held = 0;
  /** Ids to release in Redis (a request given up, a grant nobody here wants), and until when. */
  readonly #orphans = new Map<string, number>();
  /** Leases given back whose release Redis has not answered yet (still reported as granted). */
  readonly #releasing = new Set<string>();
  #outbox: Item[] = [];
  #flushQueued = false;
  /** Calls sent so far: each call's sequence number. */
  #calls = 0;
  #lastAnswer = now();
  /**
   * When the earliest entry in Redis may expire, as the latest answer said (local time): while
   * requests wait, a tick is due then, to take back a crashed holder's permits on time.
   */
  #nextExpiry = Infinity;
  /** When the latest call that renewed this process's entry in Redis (answered) was sent. */
  #aliveSentAt = -Infinity;
  #lastError: unknown = undefined;
  #ticking = false;
  #tickAgain = false;
  #tickedAt = -Infinity;
  /** The next tick: renewals, checks for grants, retries. */
  readonly #tickAlarm = new Alarm(() => void this.#tick());
  /** The earliest local deadline of a lease. */
  readonly #deadlineAlarm = new Alarm(() => {
    this.#checkDeadlines();
    this.#armDeadline();
  });
  #subscription: Promise<Subscription | undefined> | undefined;
  /** Gives up the subscription being made (a server that is down never confirms it). */
  #subscribing: AbortController | undefined;
  /** After a subscription failed, none is tried again before then (each costs a connection). */
  #subscribeAgainAt = -Infinity;
  #cancelLinger: Cancel | undefined;
  #closed = false;
  #closeReason: unknown = undefined;
  #closing: Promise<void> | undefined;

  /**
   * @param redis a connected node-redis client (`createClient()` from `redis`), an ioredis client,
   *   or a `RedisClient`. The semaphore sends its calls on it, and listens for wake-ups on a
   *   connection of its own (`duplicate()`), open while this process has requests in line.
   * @param name the semaphore's name: its keys are `sluice:{<name>}:…` (one Cluster slot).
   */
  constructor(redis: unknown, name: string, options: RedisSemaphoreOptions) {
    super();
    this.#redis = redisClient('redis', redis);
    this.#silence = silenceOf(redis as object);
    this.name = checkName(name);
    v.options('options', options);
    // Left out (by JavaScript), the options miss the one they must hold.
    const given = options as RedisSemaphoreOptions | undefined;
    this.permits = v.integer(given ? 'permits' : 'options.permits', given?.permits, 1);
    this.leaseMs =
      options.leaseMs === undefined ? 10_000 : v.integer('leaseMs', options.leaseMs, 10);
    this.pollMs = options.pollMs === undefined ? 150 : v.integer('pollMs', options.pollMs, 1);
    const margin = Math.floor((2 * this.leaseMs) / 3);
    this.commandTimeoutMs =
      options.commandTimeoutMs === undefined
        ? Math.min(2_000, margin)
        : v.integer('commandTimeoutMs', options.commandTimeoutMs, 1);
    if (this.commandTimeoutMs > margin) {
      throw new RangeError(
        `Expected \`commandTimeoutMs\` to be at most two thirds of \`leaseMs\` (${margin}), got ${v.describe(options.commandTimeoutMs)}`,
      );
    }
    this.#clock = options.clock ?? systemClock;
    const prefix = `sluice:{${name}}:`;
    this.#keys = ['expiry', 'queue', 'ids', 'wake'].map((part) => prefix + part);
    this.#leasePrefix = `${this.#client}:`;
  }

  /** Weight held by this process's permits (not released, not lost). */
  get held(): number {
    return this.#held;
  }

  /** This process's requests waiting for permits. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  override toString(): string {
    return `RedisSemaphore(${this.name}: ${this.#describe()})`;
  }

  #describe(): string {
    return `${this.#held}/${this.permits} held here, ${this.#waiters.size} waiting here`;
  }

  /**
   * Waits for `weight` permits in line (higher `priority` first, FIFO among equals, across every
   * process), and resolves to a permit holding them. Rejects with `signal.reason` when aborted and
   * with a `TimeoutError` when `timeout` elapses, having withdrawn the request from Redis first; a
   * `RangeError` for a weight above `permits`; a `ClosedError` after `close()`; and with Redis's
   * error (or a `TimeoutError` naming `commandTimeoutMs`) when Redis cannot be reached.
   */
  acquire(options?: AcquireOptions): Promise<RedisPermit> {
    return this.#request(options, false) as Promise<RedisPermit>;
  }

  /**
   * Takes `weight` permits only if they are free now and nobody waits before this request (one
   * call to Redis); resolves to undefined otherwise. The asynchronous counterpart of a gate's
   * `tryAcquire`.
   */
  tryAcquireAsync(weight = 1): Promise<RedisPermit | undefined> {
    return this.#request({ weight }, true);
  }

  #request(options: AcquireOptions | undefined, tryOnly: boolean): Promise<Lease | undefined> {
    let weight: number;
    let priority: number;
    let signal: AbortSignal | undefined;
    let timeout: number;
    try {
      ({ weight, priority, signal, timeout } = parseRequest(options));
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#closed) return Promise.reject(this.#closeReason);
    if (signal?.aborted === true) return Promise.reject(signal.reason as unknown);
    if (weight > this.permits) return Promise.reject(aboveCapacity(this.permits, weight));
    const id = `${this.#client}:${(++this.#nextId).toString(36)}`;
    return new Promise<Lease | undefined>((resolve, reject) => {
      const waiter = new Waiter(id, weight, priority, tryOnly || timeout === 0, resolve, reject);
      if (!tryOnly && timeout === 0) {
        // A timeout of 0 takes what joining the line gives at once, and nothing more.
        waiter.refusal = new TimeoutError(`acquire timed out after 0ms (${this.#describe()})`, 0);
      }
      this.#waiters.set(id, waiter);
      if (signal !== undefined) {
        waiter.stopWatching = onAbort(signal, () => {
          this.#cancel(waiter, signal.reason);
        });
      }
      if (timeout !== Infinity && timeout > 0) {
        waiter.timer = new Timer(this.#clock, timeout, () => {
          waiter.timer = undefined;
          this.#cancel(
            waiter,
            new TimeoutError(`acquire timed out after ${timeout}ms (${this.#describe()})`, timeout),
          );
        });
      }
      this.#push({ op: waiter.try ? 'try' : 'acquire', id, waiter });
    });
  }

  /**
   * Withdraws a request that gave up: from the outbox if it is still there, else from Redis (out
   * of the line, or its grant given back), and only then rejects it, so that Redis is as if it had
   * never been asked once the promise settles.
   */
  #cancel(waiter: Waiter, reason: unknown): void {
    if (!this.#forget(waiter)) return;
    if (!waiter.sent) {
      waiter.reject(reason);
      return;
    }
    this.#withdraw(waiter, () => {
      waiter.reject(reason);
    });
  }

  /** Releases a given-up request in Redis once the call carrying it is back, then calls `done`. */
  #withdraw(waiter: Waiter, done: () => void): void {
    waiter.afterCall(() => {
      this.#push({ op: 'release', id: waiter.id, done });
    });
  }

  /** Takes a waiting request out of `#waiters`; false if it was not there (settled already). */
  #forget(waiter: Waiter): boolean {
    if (this.#waiters.get(waiter.id) !== waiter) return false;
    this.#waiters.delete(waiter.id);
    waiter.stop();
    if (waiter.queued) this.#inLine--;
    if (this.#waiters.size === 0) this.#lingerThenUnsubscribe();
    return true;
  }

  /** A permit given back by its holder. */
  readonly #give = (lease: Lease): Promise<void> => {
    if (this.#leases.get(lease.id) !== lease) return Promise.resolve(); // lost already
    this.#leases.delete(lease.id);
    this.#held -= lease.weight;
    this.#releasing.add(lease.id);
    return new Promise<void>((resolve) => {
      this.#push({
        op: 'release',
        id: lease.id,
        done: () => {
          this.#releasing.delete(lease.id);
          resolve();
        },
      });
    });
  };

  // --- The outbox: calls in the order they were asked for, batched ---------------------------

  #push(item: Item): void {
    this.#outbox.push(item);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(this.#flushSoon);
    }
  }

  readonly #flushSoon = (): void => {
    void this.#flush();
  };

  /** Sends what is in the outbox; resolves once every call has been answered or has failed. */
  #flush(): Promise<void> {
    this.#flushQueued = false;
    const items = this.#outbox.filter(
      (item) => item.waiter === undefined || this.#waiters.get(item.id) === item.waiter,
    );
    this.#outbox = [];
    const calls: Promise<void>[] = [];
    let start = 0;
    for (let i = 1; i <= items.length; i++) {
      if (i === items.length || items[i]!.op !== items[start]!.op || i - start === BATCH) {
        calls.push(this.#send(items[start]!.op, items.slice(start, i)));
        start = i;
      }
    }
    return calls.length === 1 ? calls[0]! : Promise.all(calls).then(() => undefined);
  }

  /** One script call; never rejects (a failure is handled here). */
  #send(op: Op, items: Item[]): Promise<void> {
    const keepsAlive = this.#inLine > 0;
    const args: (string | number)[] = [
      op,
      this.#client,
      this.leaseMs,
      this.permits,
      keepsAlive ? 1 : 0,
    ];
    for (const item of items) {
      const waiter = item.waiter;
      if (waiter === undefined) args.push(item.id);
      else {
        args.push(item.id, waiter.weight, waiter.priority);
        waiter.sent = waiter.inFlight = true;
      }
    }
    const sentAt = now();
    const seq = ++this.#calls;
    const answered = (reply: Reply): void => {
      // A late answer still counts: what it granted is taken (or given back), and what it
      // says of the line and the leases is still true of the moment it was sent.
      this.#answered(op, items, reply, sentAt, seq, keepsAlive);
    };
    const what = `${op} of RedisSemaphore ${this.name}`;
    const send = (): Promise<Reply> => this.#redis.run(SEMAPHORE_SCRIPT, this.#keys, args);
    return answerWithin(this.#silence, send, this.commandTimeoutMs, what, answered).then(
      answered,
      (error: unknown) => {
        this.#failed(op, items, seq, error);
      },
    );
  }

  // --- Answers --------------------------------------------------------------------------------

  #answered(
    op: Op,
    items: Item[],
    reply: Reply,
    sentAt: number,
    seq: number,
    keptAlive: boolean,
  ): void {
    if (!Array.isArray(reply) || reply.length < 3) {
      this.#failed(op, items, seq, new Error(`Unexpected reply from Redis: ${String(reply)}`));
      return;
    }
    this.#lastAnswer = now();
    // Not sooner than a millisecond from now: Redis's clock counts whole ones.
    this.#nextExpiry = this.#lastAnswer + Math.max(1, Number(reply[2]));
    if (Number(reply[0]) === 1) this.#lapsed(seq);
    const result = String(reply[1]);
    // The entry is renewed by a call that said it had requests in line, or that put one there.
    if (keptAlive || ((op === 'acquire' || op === 'try') && result.includes('0'))) {
      this.#aliveSentAt = Math.max(this.#aliveSentAt, sentAt);
    }
    if (op === 'acquire' || op === 'try') {
      for (let i = 0; i < items.length; i++) {
        const waiter = items[i]!.waiter!;
        const withdrawing = waiter.back();
        if (this.#waiters.get(waiter.id) !== waiter) {
          // Given up (not granted), and put in line by a call that ran after its withdrawal:
          // withdrawn again.
          const id = waiter.id;
          if (
            !withdrawing &&
            result[i] === '0' &&
            !this.#leases.has(id) &&
            !this.#releasing.has(id)
          )
            this.#orphan(id);
          continue;
        }
        const answer = result[i];
        if (answer === '0') {
          waiter.confirmed = seq;
          if (!waiter.queued) {
            waiter.queued = true;
            this.#inLine++;
          }
          this.#subscribe();
        } else if (answer === '-') {
          this.#forget(waiter);
          if (waiter.refusal === undefined) waiter.resolve(undefined);
          else waiter.reject(waiter.refusal);
        }
      }
    } else if (op === 'renew') {
      for (let i = 0; i < items.length; i++) {
        const lease = this.#leases.get(items[i]!.id);
        if (lease === undefined) continue; // released or lost meanwhile
        if (result[i] === '1') {
          lease.deadline = Math.max(lease.deadline, sentAt + this.leaseMs);
        } else {
          this.#lose(
            lease,
            `was gone from Redis when renewed (it expired there, or Redis lost its data)`,
          );
        }
      }
    } else {
      for (const item of items) {
        this.#orphans.delete(item.id);
        item.done?.();
      }
    }
    // The grants not acknowledged yet (by a renewal), in the order Redis made them. Each expires
    // in Redis no sooner than its time left, counted from before this call was sent.
    const grants: { id: string; fence: number; deadline: number }[] = [];
    for (let i = 3; i + 2 < reply.length; i += 3) {
      grants.push({
        id: String(reply[i]),
        fence: Number(String(reply[i + 1])),
        deadline: sentAt + Number(reply[i + 2]),
      });
    }
    if (grants.length > 1) grants.sort((a, b) => a.fence - b.fence);
    for (const grant of grants) this.#granted(grant.id, grant.fence, grant.deadline);
    this.#schedule();
  }

  /** A call that failed, or was not answered in time: what it carried may or may not have run. */
  #failed(op: Op, items: Item[], seq: number, error: unknown): void {
    this.#lastError = error;
    if (op === 'acquire' || op === 'try') {
      for (const item of items) {
        const waiter = item.waiter!;
        waiter.back();
        if (this.#waiters.get(waiter.id) !== waiter) continue;
        if (waiter.queued)
          waiter.confirmed = 0; // in line before: asked again at the next tick
        else {
          this.#forget(waiter);
          this.#orphan(waiter.id);
          waiter.reject(error);
        }
      }
    } else if (op === 'release') {
      for (const item of items) {
        this.#orphan(item.id);
        item.done?.();
      }
    }
    // Its answer may have carried grants to this process, now unknown: the requests in line are
    // asked again (an acquire is idempotent), which reports them.
    this.#lapsed(seq + 1);
    this.#schedule();
  }

  /** This process's entry had expired in Redis before call `seq`: its line may be gone. */
  #lapsed(seq: number): void {
    for (const waiter of this.#waiters.values()) {
      if (waiter.confirmed !== 0 && waiter.confirmed < seq) waiter.confirmed = 0;
    }
  }

  /** Redis granted `id` to this process; it expires there no sooner than `deadline`. */
  #granted(id: string, fence: number, deadline: number): void {
    const waiter = this.#waiters.get(id);
    if (waiter !== undefined) {
      this.#forget(waiter);
      const lease = new Lease(id, waiter.weight, fence, deadline, this.#give);
      this.#leases.set(id, lease);
      this.#held += waiter.weight;
      this.#armDeadline();
      waiter.resolve(lease);
    } else if (!this.#leases.has(id) && !this.#releasing.has(id)) {
      this.#orphan(id); // given up meanwhile (or lost here): given back
    }
  }

  #orphan(id: string): void {
    // Released until this long from now; past it, Redis has let it go by itself (a lease nobody
    // renews expires; a request in line that comes back granted is given back again).
    if (!this.#orphans.has(id)) this.#orphans.set(id, now() + this.leaseMs);
  }

  #lose(lease: Lease, what: string): void {
    if (this.#leases.get(lease.id) !== lease) return;
    this.#leases.delete(lease.id);
    this.#held -= lease.weight;
    // Given back in Redis too (at the next tick, retried as any release): a renewal already on
    // its way may still find it there and renew it, and nobody here would renew or release it.
    this.#orphan(lease.id);
    const error = new LeaseLostError(
      `lease lost: the permit (weight ${lease.weight}, fence ${lease.fence}) of RedisSemaphore ${this.name} ${what}`,
      { cause: this.#lastError },
    );
    lease.lose(error);
    this.emit('leaseLost', lease, error);
  }

  // --- Timers: renewals, checks for grants, deadlines -----------------------------------------

  /**
   * Renews this process's leases and its entry, claims grants it was not told of, sends again
   * the requests whose place in line may be gone, and retries releases that failed: all in one
   * or two calls. Runs every `leaseMs / 3` while leases are held, every `pollMs` while requests
   * wait, and at once on a wake-up.
   */
  async #tick(): Promise<void> {
    if (this.#ticking) {
      this.#tickAgain = true;
      return;
    }
    this.#ticking = true;
    this.#tickAlarm.clear();
    try {
      do {
        this.#tickAgain = false;
        this.#tickedAt = now();
        // Asked now: the answer says when to ask again (a failed call does not ask at once again).
        this.#nextExpiry = Infinity;
        this.#checkDeadlines();
        this.#giveUpIfUnreachable();
        if (this.#waiters.size + this.#leases.size + this.#orphans.size === 0) break;
        for (const waiter of this.#waiters.values()) {
          if (waiter.confirmed === 0 && waiter.queued && !waiter.inFlight) {
            this.#outbox.push({ op: 'acquire', id: waiter.id, waiter });
          }
        }
        for (const [id, until] of this.#orphans) {
          this.#orphans.delete(id);
          if (this.#tickedAt < until) this.#outbox.push({ op: 'release', id });
        }
        for (const id of this.#leases.keys()) this.#outbox.push({ op: 'renew', id });
        // With nothing else to send, an empty renewal still renews this process's entry in Redis
        // and claims the grants it was not told of (every call does both).
        await (this.#outbox.length === 0 ? this.#send('renew', []) : this.#flush());
      } while (this.#again());
    } finally {
      this.#ticking = false;
      this.#schedule();
    }
  }

  /** Whether something asked for a tick while one was running (and forgets that it did). */
  #again(): boolean {
    const again = this.#tickAgain;
    this.#tickAgain = false;
    return again;
  }

  /** Arms the tick for when it is next due (or disarms it when nothing needs it). */
  #schedule(): void {
    if (this.#ticking) return;
    let due = Infinity;
    // Requests in line live in Redis while this process's entry does: it is renewed with them.
    if (this.#waiters.size > 0 || this.#orphans.size > 0) {
      due = now() + Math.min(this.pollMs, this.leaseMs / 3);
    }
    // A lease ending in Redis frees permits nobody announces: the line asks for them then.
    if (this.#inLine > 0) due = Math.min(due, this.#nextExpiry);
    if (this.#leases.size > 0) {
      // Renewed once a third of a lease has passed: two thirds are left as the margin.
      let deadline = Infinity;
      for (const lease of this.#leases.values()) deadline = Math.min(deadline, lease.deadline);
      // After a failed renewal, try again no sooner than a poll later.
      const retry = this.#tickedAt + Math.min(this.pollMs, this.leaseMs / 3);
      due = Math.min(due, Math.max(deadline - (2 * this.leaseMs) / 3, retry));
    }
    if (due === Infinity) this.#tickAlarm.clear();
    // While requests wait, the timer keeps the process alive (they are waiting on it); holding
    // leases alone does not.
    else this.#tickAlarm.arm(due, this.#waiters.size === 0);
  }

  #armDeadline(): void {
    let earliest = Infinity;
    for (const lease of this.#leases.values()) earliest = Math.min(earliest, lease.deadline);
    this.#deadlineAlarm.arm(earliest, true);
  }

  /** Loses every lease past its local deadline: it may have expired in Redis. */
  #checkDeadlines(): void {
    const time = now();
    for (const lease of [...this.#leases.values()]) {
      if (lease.deadline <= time) {
        this.#lose(lease, `could not be renewed within its ${this.leaseMs}ms lease`);
      }
    }
  }

  /** Requests in line give up once Redis has not answered for a whole lease: their place is gone. */
  #giveUpIfUnreachable(): void {
    const silent = now() - this.#lastAnswer;
    if (silent <= this.leaseMs) return;
    const error =
      this.#lastError ??
      new TimeoutError(
        `Redis has not answered RedisSemaphore ${this.name} for ${Math.round(silent)}ms`,
        this.leaseMs,
      );
    for (const waiter of [...this.#waiters.values()]) {
      if (!waiter.queued) continue;
      this.#forget(waiter);
      this.#orphan(waiter.id);
      waiter.reject(error);
    }
  }

  // --- Wake-ups ---------------------------------------------------------------------------------

  /**
   * A wake-up: grants to this process are resolved from the message itself, without asking Redis.
   * Such a lease expires with this process's entry as it was when granted: no sooner than a lease
   * after the latest answered call that renewed the entry was sent (that call ran before the
   * grant, or its answer would have reported it). The next renewal acknowledges it.
   */
  readonly #onWake = (message: string): void => {
    const deadline = this.#aliveSentAt + this.leaseMs;
    if (deadline <= now()) {
      void this.#tick(); // too old to trust: asked instead
      return;
    }
    const words = message.split(' ');
    for (let i = 1; i + 1 < words.length; i += 2) {
      const id = words[i]!;
      if (id.startsWith(this.#leasePrefix)) this.#granted(id, Number(words[i + 1]), deadline);
    }
    this.#schedule();
  };

  /** Listens for wake-ups while requests wait; grants made before it listened are claimed then. */
  #subscribe(): void {
    this.#cancelLinger?.();
    this.#cancelLinger = undefined;
    if (this.#subscription !== undefined || this.#closed || now() < this.#subscribeAgainAt) return;
    const controller = new AbortController();
    this.#subscribing = controller;
    const channel = `${this.#keys[3]!}:${this.#client}`;
    const subscribing = this.#redis.subscribe(channel, this.#onWake, controller.signal).then(
      (subscription) => {
        if (this.#subscribing === controller) this.#subscribing = undefined;
        void this.#tick();
        return subscription;
      },
      () => {
        // The timed checks go on; a request in line tries again a while later.
        if (!controller.signal.aborted) {
          this.#subscribeAgainAt = now() + Math.max(1_000, this.leaseMs / 3);
        }
        if (this.#subscription === subscribing) this.#subscription = undefined;
        if (this.#subscribing === controller) this.#subscribing = undefined;
        return undefined;
      },
    );
    this.#subscription = subscribing;
  }

  /** Stops listening a while after the last request stopped waiting. */
  #lingerThenUnsubscribe(): void {
    if (this.#subscription === undefined || this.#cancelLinger !== undefined) return;
    this.#cancelLinger = later(
      Math.max(1_000, 4 * this.pollMs),
      () => {
        this.#cancelLinger = undefined;
        if (this.#waiters.size === 0) void this.#unsubscribe();
      },
      true,
    );
  }

  async #unsubscribe(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = undefined;
    this.#subscribing?.abort();
    this.#subscribing = undefined;
    this.#cancelLinger?.();
    this.#cancelLinger = undefined;
    try {
      await (await subscription)?.close();
    } catch {
      // Its connection is gone already.
    }
  }

  // --- Closing ----------------------------------------------------------------------------------

  /**
   * Rejects every waiting request with `reason` (a `ClosedError` by default) and every later one,
   * withdrawing them from Redis. Held permits stay valid and renewed until released; renewal stops
   * once they are. Resolves once the withdrawals are done.
   */
  close(reason?: unknown): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#closed = true;
    this.#closeReason = reason ?? new ClosedError(`RedisSemaphore ${this.name} was closed`);
    const withdrawn: Promise<void>[] = [];
    for (const waiter of [...this.#waiters.values()]) {
      this.#forget(waiter);
      if (waiter.sent) {
        withdrawn.push(
          new Promise<void>((resolve) => {
            this.#withdraw(waiter, resolve);
          }),
        );
      }
      waiter.reject(this.#closeReason);
    }
    this.#closing = Promise.all([...withdrawn, this.#unsubscribe()]).then(() => undefined);
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
