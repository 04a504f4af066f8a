/**
 * The HTTP core shared by `createFetch()` and `createRequest()`: a `KeyedLimiter` keyed by origin
 * (a gate and a rate per origin under a global concurrency), an undici `Agent` whose pool per
 * origin has exactly that origin's concurrency, retries with backoff for idempotent requests, and
 * the server's own word on when to come back.
 *
 * A request holds its origin's slot until its response body is consumed, cancelled or fails (not
 * merely until the headers arrive): the server is still sending, and the limit is about what the
 * server sees.
 *
 * A 429 or 503 carrying a wait (Retry-After, RateLimit, X-RateLimit) pauses its origin for every
 * caller until then, and its retry never comes sooner. A wait longer than `maxRetryAfter` is not
 * retried: the response is delivered as it is.
 *
 * Invariants: an attempt ends exactly once, through `AttemptHandle.sent()` or `failed()` (and so
 * gives its slot back), whatever its transport does: throw as it sends, fail later, or (the
 * exchange's) not yet have the request on a connection when the attempt is aborted; undici never
 * holds a request back after refusing another (see `originPool()`); a call's sink hears how it
 * ended exactly once; nothing a caller's code does (a listener that throws, a `retry.random` that
 * throws) reaches into the limiter or leaves a call unsettled (test/faults.test.ts makes every
 * step fail).
 */
import { AsyncResource } from 'node:async_hooks';
import { setMaxListeners } from 'node:events';
import type { Agent } from 'undici';
import type { Clock } from '../_clock.ts';
import type { RateSpec } from '../_parse.ts';
import * as v from '../_validate.ts';
import { ClosedError, RetryError, TimeoutError } from '../errors.ts';
import { KeyedLimiter } from '../keyed.ts';
import {
  endAttempt,
  whenAborted,
  type AbortTarget,
  type TaskContext,
  type TaskRunner,
} from '../_task.ts';
import type { WindowKind } from '../rate.ts';
import { sleep, type RetryOptions, type RetryPolicy } from '../retry.ts';
import { serverWait, type HeaderGetter, type ServerWait } from './feedback.ts';
import { Wire } from './_h1.ts';
import { checkOptions } from './_options.ts';
import { originPool, undici } from './_undici.ts';

/** The limits of one origin. */
export interface OriginLimits {
  /** At most this many requests in flight to the origin. @default 6 */
  concurrency?: number;
  /** One rate or several (`'10/s'`, `['10/s', '500/min']`). @default none */
  rate?: RateSpec | readonly RateSpec[];
  burst?: number;
  window?: WindowKind;
}

/** How requests are retried. */
export interface HttpRetryOptions extends Omit<
  RetryOptions,
  'signal' | 'clock' | 'retryIf' | 'maxRetryAfter'
> {
  /** Methods retried. @default GET, HEAD, OPTIONS, PUT, DELETE, TRACE (the idempotent ones) */
  methods?: readonly string[];
  /** Statuses retried. @default 408, 429, 500, 502, 503, 504 */
  statuses?: readonly number[];
}

/**
 * Options shared by `createFetch()`, `createRequest()` and `createExchange()`. Every one is
 * checked when the function is made: a bad one throws a TypeError or RangeError that names it by
 * its path (`perOrigin.rate`, `origins["https://a.example"].rate`).
 */
export interface HttpOptions {
  /** At most this many requests in flight across all origins. @default Infinity */
  concurrency?: number;
  /** The limits of every origin. */
  perOrigin?: OriginLimits;
  /** Limits for particular origins (`'https://api.example.com'`), over `perOrigin`. */
  origins?: Readonly<Record<string, OriginLimits>>;
  /** Retries: a number of retries, or options. `0` turns them off. @default 2 */
  retry?: number | HttpRetryOptions;
  /** Milliseconds an attempt may take, response body included. @default Infinity */
  timeout?: number;
  /** The longest server-requested wait to honour by waiting; a longer one is not retried. @default 60_000 */
  maxRetryAfter?: number;
  /** Aborting it aborts every request made through this client. */
  signal?: AbortSignal | undefined;
  /** Called once per request with what happened. */
  onReport?: (report: RequestReport) => void;
  /** The clock for rates, timeouts and backoffs. @default the system clock */
  clock?: Clock;
}

/** What happened to one request. */
export interface RequestReport {
  url: string;
  method: string;
  origin: string;
  /** Attempts made (1 when there was no retry). */
  attempts: number;
  /** The final status, if a response was delivered. */
  status?: number;
  ok: boolean;
  /** Why it failed: a network error, a timeout, an abort, or a wait the server asked for that was too long. */
  error?: string;
  /** Milliseconds from the call until the response was delivered (headers) or the call failed. */
  ms: number;
  /** Of those, milliseconds spent waiting: for a slot, the rate, a pause, or a backoff. */
  waitMs: number;
  /** Statuses and errors of the attempts that were retried, with the delay before the next one. */
  retries: { status?: number; error?: string; delayMs: number }[];
  /** The wait the server asked for on the final response, if any. */
  serverWait?: ServerWait;
  /** Milliseconds from the call until each attempt started. */
  attemptStarts: number[];
}

/** Per call: how to send, and what the caller said. */
export interface CallOptions {
  signal?: AbortSignal | null | undefined;
  priority?: number | undefined;
  onReport?: ((report: RequestReport) => void) | undefined;
  /** Whether the request body can be sent again (a stream cannot). @default true */
  replayable?: boolean;
}

/** One attempt's response, as the core needs to see it. */
export interface Sent<R> {
  status: number;
  header: HeaderGetter;
  /** Throws the response away (a retried one): cancels or drains its body. */
  discard(): Promise<void>;
  /**
   * Settles when the response body is consumed, cancelled or fails; undefined for a response
   * already received whole.
   */
  done: Promise<void> | undefined;
  /** What the caller receives. */
  value: R;
}

/** What one attempt is sent with. */
export interface Attempt {
  dispatcher: Agent;
  /** 1, then 2 for the first retry, … */
  attempt: number;
  /**
   * The attempt's signal. When nothing can abort the attempt on its own (no timeout, no caller's
   * signal), the client's shared one, which aborts only when `close()` gives up: an
   * AbortController per request is a measurable share of a fast request's cost.
   */
  signal: () => AbortSignal;
  /** Calls `abort(reason)` if the attempt is aborted: the same as `signal()`, without a signal. */
  onAbort: (abort: (reason: Error) => void) => void;
}

/** Sends one attempt. */
export type Send<R> = (attempt: Attempt) => Promise<Sent<R>>;

/**
 * Sends attempts without a promise each (the exchange's dispatch handler): `send(attempt)` starts
 * one, and whatever receives it calls `attempt.sent()` once with the response, or
 * `attempt.failed()` with the failure. @internal
 */
export interface Transport<R> {
  send(attempt: AttemptHandle<R>): void;
}

/** Hears how a call ended: the promise of `run()`, or the CLI's record of a line. @internal */
export interface CallSink<R> {
  /** The response to deliver (its body may still be coming: the slot is held until it ends). */
  delivered(value: R, call: Call<R>): void;
  failed(error: unknown, call: Call<R>): void;
}

/** A retried attempt, as reports list them. */
export interface RetryNote {
  status?: number;
  error?: string;
  delayMs: number;
}

/** undici's default headers and body timeouts, in ms. */
const UNDICI_TIMEOUT = 300_000;

const NOT_TRANSIENT = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_ABORTED',
  'ERR_INVALID_URL',
]);

/**
 * Whether an error is worth another attempt: a timeout, or a failure of the network (a Node or
 * undici error code, possibly as the `cause` of fetch's "fetch failed"), not a bad argument.
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof TimeoutError) return true;
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 3; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string')
      return !NOT_TRANSIENT.has(code) && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code);
  }
  return false;
}

/** An error's message, with its cause's when that adds something ("fetch failed: other side closed"). */
function message(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? error.cause.message : '';
  return cause === '' || error.message.includes(cause)
    ? error.message
    : `${error.message}: ${cause}`;
}

/** The client's settings, as every call reads them. */
class Core {
  constructor(
    readonly limiter: KeyedLimiter,
    /** The undici `Agent`, made on first use. */
    readonly agent: () => Agent,
    /** Plain-HTTP connections for whole responses (the exchange's `http:` requests). */
    readonly wire: Wire,
    readonly clock: Clock,
    readonly policy: RetryPolicy,
    readonly methods: ReadonlySet<string>,
    readonly statuses: ReadonlySet<number>,
    readonly maxRetryAfter: number,
    readonly signal: AbortSignal | undefined,
    readonly onReport: ((report: RequestReport) => void) | undefined,
    /** Whether attempts have a timeout (so each needs its own signal). */
    readonly timed: boolean,
    /** Aborts what is still in flight when `close()` gives up waiting. Shared: no listener limit. */
    readonly closing: AbortSignal,
  ) {}

  /**
   * How long to back off before retrying attempt `attempt`, or undefined to stop. Takes a token
   * from the retry budget unless `charged` (the attempt already took one for a retry it then
   * could not make: its thrown-away body failed).
   */
  retryDelay(attempt: number, wait: ServerWait | undefined, charged = false): number | undefined {
    if (attempt > this.policy.retries) return undefined;
    if (wait !== undefined && wait.ms > this.maxRetryAfter) return undefined;
    if (!charged && this.policy.budget !== undefined && !this.policy.budget.tryRetry()) {
      return undefined;
    }
    return Math.max(this.policy.backoff(attempt), wait?.ms ?? 0);
  }
}

/**
 * Starts a call through `client`: its attempts go through `transport`, and `sink` hears how it
 * ended. `run()` without a promise, for the exchange and the CLI. @internal
 */
export let startCall: <R>(
  client: HttpClient,
  url: URL,
  origin: string,
  method: string,
  transport: Transport<R>,
  options: CallOptions,
  sink: CallSink<R>,
) => Call<R>;

export class HttpClient {
  readonly limiter: KeyedLimiter;
  #agent: Agent | undefined;
  readonly #newAgent: () => Agent;
  readonly #wire = new Wire();
  readonly #core: Core;
  readonly #limitsOf: (origin: string) => OriginLimits;
  #closed: Promise<void> | undefined;
  readonly #closing = new AbortController();

  static {
    startCall = (client, url, origin, method, transport, options, sink) => {
      const call = new Call(client.#core, url, origin, method, transport, options, sink);
      call.next();
      return call;
    };
  }

  constructor(options: HttpOptions = {}) {
    const { concurrency, perOrigin, origins, policy, methods, statuses, ...o } =
      checkOptions(options);
    const { timeout, maxRetryAfter, signal, onReport, clock } = o;
    this.#limitsOf = (origin) => origins.get(origin) ?? perOrigin;
    // Not 0 ("unlimited"): Node 20's getMaxListeners() throws on a signal set to 0, and undici asks.
    setMaxListeners(1_000_000, this.#closing.signal);
    this.limiter = new KeyedLimiter<string>({
      concurrency,
      perKey: (origin) => {
        const { concurrency, rate, burst, window } = this.#limitsOf(origin);
        return { concurrency, rate, burst, window, timeout };
      },
      clock,
    });
    // One pool per origin, as wide as the origin's concurrency, so that no request queues inside
    // undici where the limits cannot see it. Never the global dispatcher. undici's own headers
    // and body timeouts (300 s each) cannot fire before an attempt's timeout of 300 s or less:
    // they are off then, for they cost a timer object per request that lives up to a second.
    const undiciTimeouts = timeout <= UNDICI_TIMEOUT ? { headersTimeout: 0, bodyTimeout: 0 } : {};
    this.#newAgent = () =>
      new (undici().Agent)({
        factory: (origin, opts) => {
          const concurrency = this.#limitsOf(new URL(String(origin)).origin).concurrency ?? 6;
          const connections = concurrency === Infinity ? null : concurrency;
          return originPool(origin, Object.assign({}, opts, undiciTimeouts, { connections }));
        },
      });
    this.#core = new Core(
      this.limiter,
      () => this.agent,
      this.#wire,
      clock,
      policy,
      methods,
      statuses,
      maxRetryAfter,
      signal,
      onReport,
      timeout !== Infinity,
      this.#closing.signal,
    );
  }

  /**
   * The undici `Agent` that `https:` requests (and whatever the plain-HTTP client does not take)
   * go through: one pool per origin, as wide as the origin's concurrency. Made, and undici
   * loaded, on first use. Once `close()` has been called: the one made before (closed with the
   * client), or a `ClosedError` if none was, rather than a new one that nothing would close.
   */
  get agent(): Agent {
    if (this.#agent === undefined && this.#closed !== undefined) {
      throw new ClosedError('the HTTP client is closed');
    }
    return (this.#agent ??= this.#newAgent());
  }

  /** Sends a request to `url` within the limits, retrying as configured. */
  run<R>(url: URL, method: string, send: Send<R>, call: CallOptions = {}): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      startCall(this, url, url.origin, method, new SendTransport(send), call, {
        delivered: resolve,
        failed: reject,
      });
    });
  }

  /**
   * Closes the client: requests waiting for a slot reject with a ClosedError at once; requests in
   * flight go on, bodies included, until `deadline` ms have passed, when they are aborted (a body
   * being read then errors); then the connection pools close. A body never read holds `close()`
   * until its response is garbage-collected, or until the deadline. Calling it again returns the
   * same promise.
   */
  close(options: { deadline?: number } = {}): Promise<void> {
    v.options('options', options);
    const deadline =
      options.deadline === undefined ? Infinity : v.number('deadline', options.deadline, 0, true);
    this.#closed ??= (async () => {
      await this.limiter.close({ deadline });
      const closed = new ClosedError('the HTTP client is closed');
      this.#closing.abort(closed);
      this.#wire.close(deadline !== Infinity, closed);
      const agent = this.#agent;
      if (agent !== undefined) await (deadline === Infinity ? agent.close() : agent.destroy());
    })();
    return this.#closed;
  }
}

/**
 * One request: its attempts, each in its origin's line, the backoffs between them, and what is
 * reported. An AsyncResource, so that a retry joins the line in the caller's async context (its
 * backoff ends in a timer's, its failure arrives in a socket's).
 *
 * The state a report gives is read from it directly (the CLI's records): no report object is
 * made unless someone listens for one.
 */
export class Call<R> extends AsyncResource {
  readonly url: URL;
  readonly origin: string;
  readonly method: string;
  /** When the call began, on the client's clock. */
  readonly started: number;
  /** Attempts started. */
  attempts = 0;
  /** Milliseconds from the call until each attempt started. */
  readonly attemptStarts: number[] = [];
  /** The status of the latest attempt that got one, even if its body then failed. */
  heardStatus: number | undefined = undefined;
  /** The delivered response's wait, if it asked for one. */
  serverWait: ServerWait | undefined = undefined;
  /** Why the call failed, or why a delivered response was not retried (a wait too long). */
  error: string | undefined = undefined;
  /** When the response was delivered, on the client's clock (0 until then). */
  deliveredAt = 0;
  readonly #core: Core;
  readonly #transport: Transport<R>;
  readonly #sink: CallSink<R>;
  /** The client's signal, the caller's, or both at once. */
  readonly signal: AbortSignal | undefined;
  readonly #priority: number | undefined;
  readonly #onReport: ((report: RequestReport) => void) | undefined;
  readonly #retriable: boolean;
  #retries: RetryNote[] | undefined = undefined;
  /** The attempts scheduled. */
  #scheduled = 0;
  #attemptStart: number;
  #busyMs = 0;
  /** Set while `next()` puts the first attempt in line: one that starts at once starts now. */
  #entering = false;
  /** Whether the sink has heard how the call ended (it hears it once). */
  #ended = false;

  constructor(
    core: Core,
    url: URL,
    origin: string,
    method: string,
    transport: Transport<R>,
    options: CallOptions,
    sink: CallSink<R>,
  ) {
    super('sluice.http');
    this.#core = core;
    this.url = url;
    this.origin = origin;
    this.method = method;
    this.#transport = transport;
    this.#sink = sink;
    this.signal = anySignal(core.signal, options.signal ?? undefined);
    this.#priority = options.priority;
    this.#onReport = options.onReport;
    this.#retriable = core.methods.has(method) && options.replayable !== false;
    this.started = core.clock.now();
    this.#attemptStart = this.started;
  }

  /** The attempts retried, with why and the delay before the next (the same empty list if none). */
  get retries(): readonly RetryNote[] {
    return this.#retries ?? NO_RETRIES;
  }

  /** Puts the next attempt in the origin's line. */
  next(): void {
    this.#attemptStart = this.started;
    const attempt = new AttemptHandle(this, this.#core, ++this.#scheduled);
    this.#entering = this.#scheduled === 1;
    try {
      this.#core.limiter.runTask(this.origin, attempt, this.#priority, this.signal);
    } catch (error) {
      // Not expected (a refused attempt is told through `done()`), but the call must end.
      this.#fail(error);
    } finally {
      this.#entering = false;
    }
  }

  /** The attempt got its slot: it is sent now. */
  began(attempt: AttemptHandle<R>): void {
    // A first attempt that got its slot without waiting starts when the call began, microseconds
    // ago: no need to read the clock again.
    const now = this.#entering ? this.started : this.#core.clock.now();
    this.#attemptStart = now;
    this.attempts = attempt.attempt;
    this.attemptStarts.push(now - this.started);
    this.#core.policy.budget?.recordCall();
    try {
      this.#transport.send(attempt);
    } catch (error) {
      attempt.failed(error);
    }
  }

  /**
   * The server's word holds for every caller of this origin, not just this one: a 429 or 503
   * that says when to come back, or a rate-limit header that says nothing is left, pauses it.
   */
  heed(status: number, wait: ServerWait | undefined): void {
    if (
      wait !== undefined &&
      wait.ms > 0 &&
      (status === 429 || status === 503 || wait.source !== 'retry-after')
    ) {
      this.#core.limiter.pauseKey(this.origin, wait.ms);
    }
  }

  /** How long to wait before retrying a response with this status, or undefined to deliver it. */
  retryDelay(attempt: AttemptHandle<R>, status: number, wait: ServerWait | undefined) {
    return this.#retriable && this.#core.statuses.has(status)
      ? this.#core.retryDelay(attempt.attempt, wait)
      : undefined;
  }

  /** The response goes to the caller. */
  deliver(sent: Sent<R>, wait: ServerWait | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    const core = this.#core;
    const now = core.clock.now();
    this.deliveredAt = now;
    this.#busyMs += now - this.#attemptStart;
    this.serverWait = wait;
    if (
      this.#retriable &&
      wait !== undefined &&
      wait.ms > core.maxRetryAfter &&
      core.statuses.has(sent.status)
    ) {
      this.error = `the server asked to wait ${Math.ceil(wait.ms / 1000)}s, more than maxRetryAfter (${core.maxRetryAfter}ms)`;
    }
    this.#report(sent.status);
    try {
      this.#sink.delivered(sent.value, this);
    } catch (error) {
      rethrowLater(error);
    }
  }

  /** A response with a status to retry was thrown away: back off, then try again. */
  retryStatus(status: number, delay: number): void {
    this.#busyMs += this.#core.clock.now() - this.#attemptStart;
    (this.#retries ??= []).push({ status, delayMs: delay });
    this.#backoff(delay);
  }

  /**
   * The current attempt failed (or never started): retry it if that is worth it, or fail. Called
   * from inside the limiter: it never throws (a retry that cannot be decided, such as one whose
   * `retry.random` throws, fails the call with why).
   */
  attemptFailed(attempt: AttemptHandle<R>, error: unknown): void {
    this.#busyMs += this.#core.clock.now() - this.#attemptStart;
    const n = attempt.attempt;
    const aborted = this.signal?.aborted === true;
    let delay: number | undefined;
    try {
      delay =
        this.#retriable && !aborted && isTransient(error)
          ? this.#core.retryDelay(n, undefined, attempt.charged)
          : undefined;
    } catch (thrown) {
      this.#fail(thrown);
      return;
    }
    if (delay === undefined) {
      this.#fail(
        n > 1 && !aborted
          ? new RetryError(`failed after ${n} attempts: ${message(error)}`, n, { cause: error })
          : error,
      );
      return;
    }
    (this.#retries ??= []).push({ error: message(error), delayMs: delay });
    this.#backoff(delay);
  }

  #backoff(delay: number): void {
    sleep(this.#core.clock, delay, this.signal).then(
      () => {
        this.runInAsyncScope(() => {
          this.next();
        });
      },
      (error: unknown) => {
        this.#fail(error);
      },
    );
  }

  /** The call failed: the sink hears it, once. */
  #fail(error: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.error = message(error);
    this.#report(undefined);
    try {
      this.#sink.failed(error, this);
    } catch (thrown) {
      rethrowLater(thrown);
    }
  }

  /** Tells whoever listens for reports, in the caller's async context. */
  #report(status: number | undefined): void {
    if (this.#core.onReport === undefined && this.#onReport === undefined) return;
    const ms = this.#core.clock.now() - this.started;
    const report: RequestReport = {
      url: this.url.href,
      method: this.method,
      origin: this.origin,
      attempts: this.attempts,
      ok: status !== undefined && status >= 200 && status < 300,
      ms,
      waitMs: Math.max(0, ms - this.#busyMs),
      retries: this.#retries ?? [],
      attemptStarts: this.attemptStarts,
    };
    if (status !== undefined) report.status = status;
    if (this.serverWait !== undefined) report.serverWait = this.serverWait;
    if (this.error !== undefined) report.error = this.error;
    this.runInAsyncScope(this.#tell, this, report);
  }

  #tell(report: RequestReport): void {
    if (this.#core.onReport !== undefined) tell(this.#core.onReport, report);
    if (this.#onReport !== undefined) tell(this.#onReport, report);
  }
}

const NO_RETRIES: readonly RetryNote[] = Object.freeze([]);

/**
 * Calls a caller's listener (`onReport`, `onStatus`). One that throws, or returns a promise that
 * rejects, does not break the call, which goes on as it would have: the exception is thrown again
 * on its own, as an uncaught exception, as a timer's would be. @internal
 */
export function tell<T>(listener: (value: T) => unknown, value: T): void {
  try {
    const result = listener(value);
    if (v.isThenable(result)) result.then(undefined, rethrowLater);
  } catch (error) {
    rethrowLater(error);
  }
}

function rethrowLater(error: unknown): void {
  process.nextTick(rethrow, error);
}

function rethrow(error: unknown): never {
  throw error;
}

/**
 * One attempt of a call: the limiter's runner of its task, what the transport sends it with, and
 * where the transport tells what came back. One object, so that an attempt costs no closures.
 */
export class AttemptHandle<R> implements TaskRunner {
  readonly #call: Call<R>;
  readonly #core: Core;
  /** The call's async context, where the limiter starts the attempt. */
  readonly scope: AsyncResource;
  /** 1, then 2 for the first retry, … */
  readonly attempt: number;
  #context: TaskContext | undefined = undefined;
  /** Whether the call has moved on from it: its response was delivered or retried, or it failed. */
  #decided = false;
  /** Whether it took a retry budget's token for a retry of its response. */
  charged = false;

  constructor(call: Call<R>, core: Core, attempt: number) {
    this.#call = call;
    this.#core = core;
    this.scope = call;
    this.attempt = attempt;
  }

  get dispatcher(): Agent {
    return this.#core.agent();
  }

  /** The plain-HTTP connections (see `_h1.ts`). */
  get wire(): Wire {
    return this.#core.wire;
  }

  /** The attempt's signal: see `Attempt.signal`. */
  signal(): AbortSignal {
    const context = this.#context as TaskContext;
    return this.#core.timed || this.#call.signal !== undefined
      ? context.signal
      : this.#core.closing;
  }

  /** Calls `target.abort(reason)` if the attempt is aborted (timed out, cancelled, closed). */
  whenAborted(target: AbortTarget): void {
    whenAborted(this.#context as TaskContext, target);
  }

  /** The status arrived (before the body, which may still fail). */
  heard(status: number): void {
    if (!this.#decided) this.#call.heardStatus = status;
  }

  /** The transport's word: the response (headers, and the body unless `done` says otherwise). */
  sent(sent: Sent<R>): void {
    const context = this.#context as TaskContext;
    const call = this.#call;
    const status = sent.status;
    let wait: ServerWait | undefined;
    let delay: number | undefined;
    try {
      // Most responses carry no wait: `serverWait()` settles that with a few lookups.
      wait = serverWait(sent.header);
      call.heed(status, wait);
      // Nobody takes the response of an attempt the call moved on from (timed out, aborted).
      if (this.#decided) {
        this.#endAfter(discarded(sent), context, true, undefined);
        return;
      }
      delay = call.retryDelay(this, status, wait);
    } catch (error) {
      // Not expected (a closing client no longer pauses), or a `retry.random` that throws: the
      // attempt fails with why.
      this.#endAfter(discarded(sent), context, false, error);
      return;
    }
    if (delay === undefined) {
      this.#decided = true;
      call.deliver(sent, wait);
      if (sent.done === undefined) endAttempt(context, true, undefined);
      else this.#endAfter(sent.done, context, true, undefined);
      return;
    }
    // Thrown away, then retried: the slot is given back once the body is. Should the attempt
    // fail meanwhile (time out while its body drains), that failure decides what comes next,
    // with the budget's token already taken.
    this.charged = true;
    const retried = delay;
    discarded(sent).then(
      () => {
        const retry = !this.#decided;
        this.#decided = true;
        endAttempt(context, true, undefined);
        if (retry) call.retryStatus(status, retried);
      },
      (error: unknown) => {
        this.failed(error);
      },
    );
  }

  /** The transport's word: the attempt failed (to connect, to send, or its body). */
  failed(error: unknown): void {
    endAttempt(this.#context as TaskContext, false, error);
  }

  /** Ends the attempt once `settled` settles: as `ok` and `error` say, or failed if it rejects. */
  #endAfter(settled: Promise<void>, context: TaskContext, ok: boolean, error: unknown): void {
    settled.then(
      () => {
        endAttempt(context, ok, error);
      },
      (failure: unknown) => {
        endAttempt(context, false, ok ? failure : error);
      },
    );
  }

  // The limiter's side (TaskRunner).

  start(context: TaskContext): void {
    this.#context = context;
    this.#call.began(this);
  }

  done(ok: boolean, outcome: unknown): void {
    if (ok || this.#decided) return;
    this.#decided = true;
    this.#call.attemptFailed(this, outcome);
  }
}

/** `sent.discard()`, as a promise even if it throws. */
function discarded(sent: Sent<unknown>): Promise<void> {
  try {
    return sent.discard();
  } catch (error) {
    return Promise.reject(error);
  }
}

/** `run()`'s promise-returning `send`, as a transport. */
class SendTransport<R> implements Transport<R> {
  readonly #send: Send<R>;

  constructor(send: Send<R>) {
    this.#send = send;
  }

  send(handle: AttemptHandle<R>): void {
    const attempt: Attempt = {
      dispatcher: handle.dispatcher,
      attempt: handle.attempt,
      signal: () => handle.signal(),
      onAbort: (abort) => {
        handle.whenAborted({
          abort(reason: unknown) {
            abort(reason instanceof Error ? reason : new Error(String(reason)));
          },
        });
      },
    };
    this.#send(attempt).then(
      (sent) => {
        handle.sent(sent);
      },
      (error: unknown) => {
        handle.failed(error);
      },
    );
  }
}

/** A signal that aborts when either does. */
function anySignal(
  a: AbortSignal | undefined,
  b: AbortSignal | undefined,
): AbortSignal | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return AbortSignal.any([a, b]);
}
