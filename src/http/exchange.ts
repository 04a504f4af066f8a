/**
 * `createExchange(options)`: the same limits as `createFetch()`, for callers that want a whole
 * response at once (the CLI): no stream object per response, no AbortController per request, and
 * no promise per attempt (the response handler tells the core directly). `http:` requests are
 * written by `_h1.ts`; `https:` ones, and those with headers about the connection, go through
 * undici's `dispatch` API.
 *
 * A response is delivered once its body has been received in full, so the origin's slot is held
 * exactly as long as the server is busy with the request.
 */
import type { Dispatcher } from 'undici';
import type { AbortTarget } from '../_task.ts';
import {
  tell,
  type AttemptHandle,
  type Call,
  type CallOptions,
  type CallSink,
  type Sent,
  type Transport,
} from './_call.ts';
import { HttpClient, startCall, type HttpOptions, type RequestReport } from './client.ts';
import type { HeaderGetter } from './feedback.ts';
import { KeptBody, keepLimit } from './_body.ts';
import { prepare, type WireControl, type WireHandler, type WireRequest } from './_h1.ts';

/** What the CLI reads of a call, and how it hears one end. */
export type { Call, CallSink } from './_call.ts';

/** A request for {@link createExchange}. */
export interface ExchangeRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /**
   * Keep the body: `true` all of it, a number at most that many bytes (its first ones), `false`
   * none. Every byte received is counted in `bytes` whatever is kept, so a kept body was cut when
   * `bytes` is more than `body.length`. A number bounds what a response can cost in memory (a
   * body larger than expected, or a server that never stops), and the body's buffer is made no
   * larger than the number. Throws a TypeError or RangeError for anything but a boolean or an
   * integer >= 0 (or Infinity: as `true`).
   * @default false
   * @example
   * const { bytes, body } = await exchange(url, { keepBody: 1 << 20 });
   * const truncated = body !== undefined && bytes > body.length;
   */
  keepBody?: boolean | number;
  signal?: AbortSignal | undefined;
  priority?: number;
  onReport?: (report: RequestReport) => void;
  /** Called when an attempt's status arrives, before its body (which may still fail). */
  onStatus?: (status: number) => void;
}

/** A whole response. */
export interface Exchanged {
  status: number;
  /** Header values by lower-case name. */
  headers: Record<string, string | string[] | undefined>;
  /** Bytes of body received. */
  bytes: number;
  /** The body, with `keepBody` (its first `keepBody` bytes, when that is a number). */
  body: Buffer | undefined;
}

export interface ExchangeFunction {
  (url: string | URL, request?: ExchangeRequest): Promise<Exchanged>;
  readonly client: HttpClient;
  /** See `HttpClient.close()`. */
  close(options?: { deadline?: number }): Promise<void>;
}

function first(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

const RESOLVED = Promise.resolve();
const NO_HEADERS: Record<string, string | string[] | undefined> = Object.freeze({});

/**
 * One call's request, sent as often as it is attempted: written by `_h1.ts` for `http:` when it
 * can be, else dispatched through undici.
 */
class ExchangeSend implements Transport<Exchanged> {
  readonly options: Dispatcher.DispatchOptions;
  readonly url: URL;
  readonly wire: WireRequest | undefined;
  /** Why the request cannot be written, if it cannot. */
  readonly invalid: Error | undefined = undefined;
  /** The most body bytes to keep, or undefined to keep none. */
  readonly keepBody: number | undefined;
  /** Whether the caller gets a plain object (the public function) or the receiver itself. */
  readonly copies: boolean;
  readonly onStatus: ((status: number) => void) | undefined;

  constructor(
    url: URL,
    origin: string,
    path: string,
    method: string,
    request: ExchangeRequest,
    copies: boolean,
  ) {
    this.url = url;
    let wire: WireRequest | undefined;
    try {
      wire =
        url.protocol === 'http:'
          ? prepare(method, path, url.host, request.headers, request.body ?? null)
          : undefined;
    } catch (error) {
      // A header that cannot be sent: the attempt fails, as it would in undici.
      this.invalid = error instanceof Error ? error : new TypeError(String(error));
    }
    this.wire = wire;
    this.options = {
      origin,
      path,
      method,
      headers: request.headers,
      body: request.body ?? null,
    };
    this.keepBody = keepLimit(request.keepBody);
    this.copies = copies;
    this.onStatus = request.onStatus;
  }

  send(attempt: AttemptHandle<Exchanged>): void {
    if (this.invalid !== undefined) throw this.invalid;
    const receiver = new Receiver(this, attempt);
    // Told from now on, so that an abort before the request is on a connection still ends it.
    attempt.whenAborted(receiver);
    if (receiver.ended) return; // aborted already
    if (this.wire === undefined) attempt.dispatcher.dispatch(this.options, receiver);
    else attempt.wire.pool(this.options.origin as string, this.url).dispatch(this.wire, receiver);
  }
}

/**
 * One attempt's response being received: undici's handler (or `_h1.ts`'s), the response as the
 * core sees it once it is whole, and what the attempt's abort is passed to.
 */
class Receiver
  implements Dispatcher.DispatchHandler, WireHandler, Sent<Exchanged>, Exchanged, AbortTarget
{
  status = 0;
  headers = NO_HEADERS;
  bytes = 0;
  body: Buffer | undefined = undefined;
  readonly done = undefined;
  readonly header: HeaderGetter = (name) => first(this.headers[name]);
  #kept: KeptBody | undefined = undefined;
  #controller: WireControl | undefined = undefined;
  /** Why the attempt was aborted before its request was on a connection. */
  #aborted: Error | undefined = undefined;
  readonly #send: ExchangeSend;
  readonly #attempt: AttemptHandle<Exchanged>;

  constructor(send: ExchangeSend, attempt: AttemptHandle<Exchanged>) {
    this.#send = send;
    this.#attempt = attempt;
    if (send.keepBody !== undefined) this.#kept = new KeptBody(send.keepBody);
  }

  get value(): Exchanged {
    if (!this.#send.copies) return this;
    return { status: this.status, headers: this.headers, bytes: this.bytes, body: this.body };
  }

  discard(): Promise<void> {
    return RESOLVED; // already received in full
  }

  /** Whether the attempt was aborted before its request was on a connection. */
  get ended(): boolean {
    return this.#aborted !== undefined;
  }

  /**
   * The attempt is aborted (timed out, cancelled, closed). A request on a connection is aborted
   * there, and its handler hears of it. One that is not yet (undici holds it while it connects, or
   * in its queue) has not been written: the attempt ends now, and the request is aborted when it
   * reaches a connection, if ever, before a byte of it is written.
   */
  abort(reason: unknown): void {
    const error = reason instanceof Error ? reason : new Error(String(reason));
    if (this.#controller !== undefined) {
      this.#controller.abort(error);
    } else if (this.#aborted === undefined) {
      this.#aborted = error;
      this.#attempt.failed(error);
    }
  }

  /** Chunks are not kept as they are: what is kept of them is copied into the kept body. */
  get keepsBody(): boolean {
    return false;
  }

  onRequestStart(controller: WireControl): void {
    // `_h1.ts` tells again when it resends on a new connection: the abort goes there then.
    this.#controller = controller;
    if (this.#aborted !== undefined) controller.abort(this.#aborted);
  }

  onResponseStart(
    _controller: WireControl,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.status = statusCode;
    this.headers = headers;
    if (this.#kept !== undefined) {
      const length = first(headers['content-length']);
      if (length !== null) this.#kept.expect(Number(length) || 0);
    }
    this.#attempt.heard(statusCode);
    if (this.#send.onStatus !== undefined) tell(this.#send.onStatus, statusCode);
  }

  onResponseData(_controller: WireControl, chunk: Buffer): void {
    this.bytes += chunk.length;
    this.#kept?.add(chunk);
  }

  onResponseEnd(): void {
    if (this.#kept !== undefined) this.body = this.#kept.bytes();
    this.#attempt.sent(this);
  }

  onResponseError(_controller: WireControl, error: Error): void {
    this.#attempt.failed(error);
  }
}

/**
 * Sends `request` to `url` (whose origin is `origin`) through `client`, telling `sink` how it
 * ended; what is delivered is the receiver itself, read before the next request. @internal
 */
export function exchangeWith(
  client: HttpClient,
  url: URL,
  origin: string,
  request: ExchangeRequest,
  sink: CallSink<Exchanged>,
): Call<Exchanged> {
  return start(client, url, origin, request, false, sink);
}

function start(
  client: HttpClient,
  url: URL,
  origin: string,
  request: ExchangeRequest,
  copies: boolean,
  sink: CallSink<Exchanged>,
): Call<Exchanged> {
  const method = request.method === undefined ? 'GET' : request.method.toUpperCase();
  const call: CallOptions = {
    signal: request.signal,
    priority: request.priority,
    onReport: request.onReport,
  };
  const send = new ExchangeSend(url, origin, url.pathname + url.search, method, request, copies);
  return startCall(client, url, origin, method, send, call, sink);
}

/**
 * Returns a function that sends requests within the limits (see `createFetch()`) and resolves to
 * the whole response: status, headers, and the body's size (and the body itself with `keepBody`).
 */
export function createExchange(options?: HttpOptions): ExchangeFunction {
  const client = new HttpClient(options);
  const exchange = (url: string | URL, request: ExchangeRequest = {}): Promise<Exchanged> =>
    new Promise<Exchanged>((resolve, reject) => {
      // A string that is no URL rejects with `new URL()`'s TypeError, as with `createRequest()`.
      const target = url instanceof URL ? url : new URL(url);
      start(client, target, target.origin, request, true, { delivered: resolve, failed: reject });
    });
  Object.defineProperties(exchange, {
    client: { value: client },
    close: { value: (closeOptions?: { deadline?: number }) => client.close(closeOptions) },
  });
  return exchange as ExchangeFunction;
}
