/**
 * The HTTP client shared by `createFetch()`, `createRequest()` and `createExchange()`: a
 * `KeyedLimiter` keyed by origin (a gate and a rate per origin under a global concurrency and
 * rate), an undici `Agent` whose pool per origin has exactly that origin's concurrency, retries
 * with backoff for idempotent requests, and the server's own word on when to come back. A call is
 * one task of the limiter (`_call.ts`): every attempt, retries included, passes every limit.
 *
 * A request holds its origin's slot until its response body is consumed, cancelled or fails (not
 * merely until the headers arrive): the server is still sending, and the limit is about what the
 * server sees.
 *
 * A 429 or 503 carrying a wait (Retry-After, RateLimit, X-RateLimit) pauses its origin for every
 * caller until then, and its retry never comes sooner. A wait longer than `maxRetryAfter` is not
 * retried: the response is delivered as it is.
 *
 * Invariants: undici never holds a request back after refusing another (see `originPool()`); the
 * rest are the calls' (`_call.ts`).
 */
import { setMaxListeners } from 'node:events';
import type { Agent } from 'undici';
import type { Clock } from '../_clock.ts';
import type { RateSpec } from '../_parse.ts';
import * as v from '../_validate.ts';
import { ClosedError } from '../errors.ts';
import type { Gate } from '../gate.ts';
import { KeyedLimiter } from '../keyed.ts';
import type { WindowKind } from '../rate.ts';
import type { RetryOptions } from '../retry.ts';
import type { ServerWait } from './feedback.ts';
import { Wire } from './_h1.ts';
import {
  Call,
  Core,
  type AttemptHandle,
  type CallOptions,
  type CallSink,
  type Sent,
  type Transport,
} from './_call.ts';
import { checkOptions } from './_options.ts';
import { originPool, undici } from './_undici.ts';

export { isTransient, type CallOptions, type Sent } from './_call.ts';

/** The gates of one origin (see {@link HttpOptions.originGates}). */
export interface OriginGates {
  concurrency?: Gate | undefined;
  rate?: Gate | readonly Gate[] | undefined;
}

/** The limits of one origin. */
export interface OriginLimits {
  /**
   * At most this many requests in flight to the origin; or a gate that keeps that limit. An
   * adaptive limit (`adaptive()`) is forked for each origin: each origin's limit adapts on its
   * own, from 429s, 503s, timeouts and latency. @default 6
   */
  concurrency?: number | Gate;
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
  /**
   * At most this many requests in flight across all origins; or a gate that keeps that limit
   * (a shared one, with `sluice/redis`). @default Infinity
   */
  concurrency?: number | Gate;
  /**
   * A rate (or several) across all origins, kept by every attempt, retries included: `'20/s'`,
   * or a gate in its place (a `RateLimiter`, a shared one). @default none
   */
  rate?: RateSpec | Gate | readonly (RateSpec | Gate)[];
  /** The limits of every origin. */
  perOrigin?: OriginLimits;
  /** Limits for particular origins (`'https://api.example.com'`), over `perOrigin`. */
  origins?: Readonly<Record<string, OriginLimits>>;
  /**
   * Gates of an origin, made once, when the origin is first seen: `{ concurrency, rate }` (with
   * `sluice/redis`, a `RedisSemaphore` and a `RedisRateLimiter` per origin, shared by every
   * process). Its concurrency gate keeps the origin's concurrency in place of
   * `perOrigin.concurrency` (which still sizes the origin's connection pool); its rate gates are
   * kept besides the origin's rates. A 429 or 503 that asks to wait pauses those that can pause
   * (`pauseFor`), so every process sharing them waits.
   */
  originGates?: (origin: string) => OriginGates;
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

/** undici's default headers and body timeouts, in ms. */
const UNDICI_TIMEOUT = 300_000;

/**
 * Starts a call through `client`: its attempts go through `transport`, and `sink` hears how it
 * ended. `run()` without a promise, for the exchange and the CLI. @internal
 */
export function startCall<R>(
  client: HttpClient,
  url: URL,
  origin: string,
  method: string,
  transport: Transport<R>,
  options: CallOptions,
  sink: CallSink<R>,
): Call<R> {
  const call = new Call(client.core, url, origin, method, transport, options, sink);
  call.begin(options.priority);
  return call;
}

export class HttpClient {
  readonly limiter: KeyedLimiter;
  #agent: Agent | undefined;
  readonly #newAgent: () => Agent;
  readonly #wire = new Wire();
  /** What every call reads of the client. @internal */
  readonly core: Core;
  readonly #limitsOf: (origin: string) => OriginLimits;
  #closed: Promise<void> | undefined;
  readonly #closing = new AbortController();

  constructor(options: HttpOptions = {}) {
    const { concurrency, rate, perOrigin, origins, originGates, policy, methods, statuses, ...o } =
      checkOptions(options);
    const { timeout, signal, onReport, clock } = o;
    this.#limitsOf = (origin) => origins.get(origin) ?? perOrigin;
    // Not 0 ("unlimited"): Node 20's getMaxListeners() throws on a signal set to 0, and undici asks.
    setMaxListeners(1_000_000, this.#closing.signal);
    this.limiter = new KeyedLimiter<string>({
      concurrency,
      rate,
      perKey: (origin) => {
        const { concurrency, rate, burst, window } = this.#limitsOf(origin);
        return { concurrency, rate, burst, window, timeout };
      },
      // Made once per origin, kept when an idle origin's limiter is forgotten.
      ...(originGates === undefined ? {} : { keyGates: originGates }),
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
          const connections = poolSize(concurrency);
          return originPool(origin, Object.assign({}, opts, undiciTimeouts, { connections }));
        },
      });
    this.core = new Core(
      this.limiter,
      () => this.agent,
      this.#wire,
      clock,
      policy,
      methods,
      statuses,
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
 * How many connections an origin's pool may open: its concurrency, or for a gate the most it can
 * admit (an adaptive limit's `max`); none (no bound) when that is not known.
 */
function poolSize(concurrency: number | Gate): number | null {
  const most =
    typeof concurrency === 'number' ? concurrency : (concurrency as { max?: unknown }).max;
  return typeof most === 'number' && most !== Infinity ? most : null;
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
