/**
 * One HTTP call as one task of the client's keyed limiter: its attempts are the task's attempts,
 * so the task life cycle (`_lifecycle.ts`) places every attempt, the first and every retry, under
 * every gate that applies (the global concurrency and rate, then the origin's concurrency, rate
 * and pause), times it out, and decides its retries with the one retry driver (`RetryPolicy`).
 * This file says what HTTP adds: which failures and statuses are worth a retry, the server's word
 * on when to come back, what is delivered, and what is reported.
 *
 * A response with a status to retry is decided on before its body is thrown away (the decision,
 * and its budget token, then stand whatever the body does); a response delivered is never
 * retried, even if its body then fails.
 *
 * Invariants: an attempt ends exactly once, through `AttemptHandle.sent()` or `failed()` (and so
 * gives its permits back), whatever its transport does: throw as it sends, fail later, or (the
 * exchange's) not yet have the request on a connection when the attempt is aborted; a call's sink
 * hears how it ended exactly once; nothing a caller's code does (a listener that throws, a
 * `retry.random` that throws) reaches into the limiter or leaves a call unsettled
 * (test/faults.test.ts makes every step fail).
 *
 * Its size (about 410 lines): the call's task side, its report and its sink are one object (no
 * closure or report per request on the hot path); an attempt's side is in `_attempt.ts`.
 */
import { AsyncResource } from 'node:async_hooks';
import type { Agent } from 'undici';
import type { Clock } from '../_clock.ts';
import type { Attempt, TaskRunner } from '../_task.ts';
import * as v from '../_validate.ts';
import { ClosedError, RetryError, TimeoutError } from '../errors.ts';
import type { KeyedLimiter } from '../keyed.ts';
import { messageOf, type RetryInfo, type RetryPolicy } from '../retry.ts';
import type { HeaderGetter, ServerWait } from './feedback.ts';
import type { Wire } from './_h1.ts';
import { AttemptHandle } from './_attempt.ts';
import type { RequestReport } from './client.ts';

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

/**
 * Sends attempts without a promise each (the exchange's dispatch handler): `send(attempt)` starts
 * one, and whatever receives it calls `attempt.sent()` once with the response, or
 * `attempt.failed()` with the failure.
 */
export interface Transport<R> {
  send(attempt: AttemptHandle<R>): void;
}

/** Hears how a call ended: the promise of `run()`, or the CLI's record of a line. */
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

/** The client's settings, as every call reads them. */
export class Core {
  constructor(
    readonly limiter: KeyedLimiter,
    /** The undici `Agent`, made on first use. */
    readonly agent: () => Agent,
    /** Plain-HTTP connections for whole responses (the exchange's `http:` requests). */
    readonly wire: Wire,
    readonly clock: Clock,
    /** The retry rules: attempts, backoff, jitter, budget, and `maxRetryAfter`. */
    readonly policy: RetryPolicy,
    readonly methods: ReadonlySet<string>,
    readonly statuses: ReadonlySet<number>,
    readonly signal: AbortSignal | undefined,
    readonly onReport: ((report: RequestReport) => void) | undefined,
    /** Whether attempts have a timeout (so each needs its own signal). */
    readonly timed: boolean,
    /** Aborts what is still in flight when `close()` gives up waiting. Shared: no listener limit. */
    readonly closing: AbortSignal,
  ) {}
}

/**
 * Methods the Fetch standard forbids (https://fetch.spec.whatwg.org/#forbidden-method): CONNECT
 * opens a tunnel that no response ends, TRACE and TRACK echo the request (credentials included).
 */
const FORBIDDEN_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'TRACE', 'TRACK']);

/** Why `method` (upper case) may not be sent, if it is a forbidden one. */
export function forbiddenMethod(method: string): string | undefined {
  return FORBIDDEN_METHODS.has(method)
    ? `the method ${method} cannot be sent (no fetch client sends CONNECT, TRACE or TRACK)`
    : undefined;
}

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

/**
 * A response with a status to retry, as the failure of its attempt: what the retry driver
 * decides on. Its `status` tells an adaptive gate of a drop (429, 503); its `retryAfterMs` is the
 * server's wait.
 */
export class StatusError extends Error {
  readonly status: number;
  readonly retryAfterMs: number | undefined;

  constructor(status: number, wait: ServerWait | undefined) {
    super(`HTTP ${status}`);
    this.status = status;
    this.retryAfterMs = wait?.ms;
  }
}

/**
 * One request: its attempts (one task of the origin's limiter), and what is reported. An
 * AsyncResource, so that every attempt starts in the caller's async context (a retry's backoff
 * ends in a timer's, its failure arrives in a socket's).
 *
 * The state a report gives is read from it directly (the CLI's records): no report object is
 * made unless someone listens for one.
 */
export class Call<R> extends AsyncResource implements TaskRunner {
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
  /** The client's signal, the caller's, or both at once. */
  readonly signal: AbortSignal | undefined;
  /** The retry rules (none for a request that cannot be sent again). */
  readonly retry: RetryPolicy | undefined;
  readonly core: Core;
  readonly #transport: Transport<R>;
  readonly #sink: CallSink<R>;
  readonly #onReport: ((report: RequestReport) => void) | undefined;
  /** Whether the method may be retried and the body sent again. */
  readonly retriable: boolean;
  #retries: RetryNote[] | undefined = undefined;
  #attemptStart: number;
  #busyMs = 0;
  /** Set while the first attempt is put in line: one that starts at once starts now. */
  #entering = false;
  /** Whether the sink has heard how the call ended (it hears it once). */
  ended = false;

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
    this.core = core;
    this.url = url;
    this.origin = origin;
    this.method = method;
    this.#transport = transport;
    this.#sink = sink;
    this.signal = anySignal(core.signal, options.signal ?? undefined);
    this.#onReport = options.onReport;
    this.retriable = core.methods.has(method) && options.replayable !== false;
    // `retry: 0` is no retry at all: failures come as they are, not wrapped in a RetryError.
    this.retry = this.retriable && core.policy.retries > 0 ? core.policy : undefined;
    this.started = core.clock.now();
    this.#attemptStart = this.started;
  }

  /** Its async context, where the limiter starts its attempts. */
  get scope(): AsyncResource {
    return this;
  }

  /** The attempts retried, with why and the delay before the next (the same empty list if none). */
  get retries(): readonly RetryNote[] {
    return this.#retries ?? NO_RETRIES;
  }

  /** Puts the call in its origin's line (its task is refused at once if it must be: `done()`). */
  begin(priority: number | undefined): void {
    const forbidden = forbiddenMethod(this.method);
    if (forbidden !== undefined) {
      // Never sent: a CONNECT would hold its slot for ever (no response ends a tunnel).
      this.#fail(new TypeError(forbidden));
      return;
    }
    this.#entering = true;
    try {
      this.core.limiter.runTask(this.origin, this, priority, this.signal);
    } catch (error) {
      // Not expected (a refused task is told through `done()`), but the call must end.
      this.#fail(error);
    } finally {
      this.#entering = false;
    }
  }

  // The limiter's side (TaskRunner).

  /** A failure worth another attempt: a response to retry, or a transient error. */
  retryIf(error: unknown): boolean {
    return error instanceof StatusError || (this.signal?.aborted !== true && isTransient(error));
  }

  /** An attempt got its permits: it is sent now. */
  start(context: Attempt): void {
    // A first attempt that got its slot without waiting starts when the call began, microseconds
    // ago: no need to read the clock again.
    const now = this.#entering ? this.started : this.core.clock.now();
    this.#attemptStart = now;
    this.attempts = context.attempt;
    this.attemptStarts.push(now - this.started);
    const attempt = new AttemptHandle(this, context);
    try {
      this.#transport.send(attempt);
    } catch (error) {
      attempt.failed(error);
    }
  }

  /** An attempt failed and will be retried after `info.delay`. */
  retrying(info: RetryInfo): void {
    this.#busyMs += this.core.clock.now() - this.#attemptStart;
    const error = info.error;
    (this.#retries ??= []).push(
      error instanceof StatusError
        ? { status: error.status, delayMs: info.delay }
        : { error: messageOf(error), delayMs: info.delay },
    );
  }

  /** The task's outcome: a response delivered (nothing left to do), or the call's failure. */
  done(ok: boolean, outcome: unknown): void {
    if (ok || this.ended) return;
    this.#busyMs += this.core.clock.now() - this.#attemptStart;
    const n = this.attempts;
    // A failure after retries says so, unless the call was given up on (aborted, closed).
    const given = this.signal?.aborted === true || outcome instanceof ClosedError;
    this.#fail(
      n > 1 && !given && !(outcome instanceof RetryError)
        ? new RetryError(`failed after ${n} attempts: ${messageOf(outcome)}`, n, { cause: outcome })
        : outcome,
    );
  }

  // The attempts' side.

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
      this.core.limiter.pauseKey(this.origin, wait.ms);
    }
  }

  /** Whether a response with `status` is one to retry, if the retry driver agrees. */
  retriesStatus(status: number): boolean {
    return this.retriable && this.core.statuses.has(status);
  }

  /** The response goes to the caller. */
  deliver(sent: Sent<R>, wait: ServerWait | undefined): void {
    if (this.ended) return;
    this.ended = true;
    const core = this.core;
    const now = core.clock.now();
    this.deliveredAt = now;
    this.#busyMs += now - this.#attemptStart;
    this.serverWait = wait;
    const max = core.policy.maxRetryAfter;
    if (this.retriesStatus(sent.status) && wait !== undefined && wait.ms > max) {
      this.error = `the server asked to wait ${Math.ceil(wait.ms / 1000)}s, more than maxRetryAfter (${max}ms)`;
    }
    this.#report(sent.status);
    try {
      this.#sink.delivered(sent.value, this);
    } catch (error) {
      v.rethrowLater(error);
    }
  }

  /** The call failed: the sink hears it, once. */
  #fail(error: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = messageOf(error);
    this.#report(undefined);
    try {
      this.#sink.failed(error, this);
    } catch (thrown) {
      v.rethrowLater(thrown);
    }
  }

  /** Tells whoever listens for reports, in the caller's async context. */
  #report(status: number | undefined): void {
    if (this.core.onReport === undefined && this.#onReport === undefined) return;
    const ms = this.core.clock.now() - this.started;
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
    if (this.core.onReport !== undefined) tell(this.core.onReport, report);
    if (this.#onReport !== undefined) tell(this.#onReport, report);
  }
}

const NO_RETRIES: readonly RetryNote[] = Object.freeze([]);

/**
 * Calls a caller's listener (`onReport`, `onStatus`). One that throws, or returns a promise that
 * rejects, does not break the call, which goes on as it would have: the exception is thrown again
 * on its own, as an uncaught exception, as a timer's would be.
 */
export function tell<T>(listener: (value: T) => unknown, value: T): void {
  try {
    const result = listener(value);
    if (v.isThenable(result)) result.then(undefined, v.rethrowLater);
  } catch (error) {
    v.rethrowLater(error);
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

export { AttemptHandle } from './_attempt.ts';
