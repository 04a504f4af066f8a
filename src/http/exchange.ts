/**
 * `createExchange(options)`: the same limits as `createFetch()`, on undici's `dispatch` API, for
 * callers that want a whole response at once (the CLI): no stream object per response, no
 * AbortController per request. About twice the requests per CPU-second of undici's `request`
 * (measured here: 23 µs of CPU per request against 47 µs).
 *
 * A response is delivered once its body has been received in full, so the origin's slot is held
 * exactly as long as the server is busy with the request.
 */
import type { Dispatcher } from 'undici';
import { HttpClient, type CallOptions, type HttpOptions, type RequestReport } from './client.ts';

/** A request for {@link createExchange}. */
export interface ExchangeRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Keep the body (else only count its bytes). @default false */
  keepBody?: boolean;
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
  /** The body, with `keepBody`. */
  body: Buffer | undefined;
}

export interface ExchangeFunction {
  (url: URL, request?: ExchangeRequest): Promise<Exchanged>;
  readonly client: HttpClient;
  /** See `HttpClient.close()`. */
  close(options?: { deadline?: number }): Promise<void>;
}

function first(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/** One response being received: undici's handler, and the promise of its outcome. */
class Receiver implements Dispatcher.DispatchHandler {
  status = 0;
  headers: Record<string, string | string[] | undefined> = {};
  bytes = 0;
  chunks: Buffer[] | undefined;
  readonly #resolve: (value: Receiver) => void;
  readonly #reject: (error: Error) => void;
  readonly #onAbort: (abort: (reason: Error) => void) => void;
  readonly #onStatus: ((status: number) => void) | undefined;

  constructor(
    keepBody: boolean,
    onAbort: (abort: (reason: Error) => void) => void,
    onStatus: ((status: number) => void) | undefined,
    resolve: (value: Receiver) => void,
    reject: (error: Error) => void,
  ) {
    if (keepBody) this.chunks = [];
    this.#onAbort = onAbort;
    this.#onStatus = onStatus;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#onAbort((reason) => {
      controller.abort(reason);
    });
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.status = statusCode;
    this.headers = headers;
    this.#onStatus?.(statusCode);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytes += chunk.length;
    this.chunks?.push(chunk);
  }

  onResponseEnd(): void {
    this.#resolve(this);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.#reject(error);
  }
}

/**
 * Returns a function that sends requests within the limits (see `createFetch()`) and resolves to
 * the whole response: status, headers, and the body's size (and the body itself with `keepBody`).
 */
export function createExchange(options?: HttpOptions): ExchangeFunction {
  const client = new HttpClient(options);
  const exchange = (url: URL, request: ExchangeRequest = {}): Promise<Exchanged> => {
    const method = request.method === undefined ? 'GET' : request.method.toUpperCase();
    const call: CallOptions = {
      signal: request.signal,
      priority: request.priority,
      onReport: request.onReport,
    };
    const keepBody = request.keepBody === true;
    const path = url.pathname + url.search;
    return client.run(
      url,
      method,
      ({ dispatcher, onAbort }) =>
        new Promise<Receiver>((resolve, reject) => {
          dispatcher.dispatch(
            {
              origin: url.origin,
              path,
              method,
              headers: request.headers,
              body: request.body ?? null,
            },
            new Receiver(keepBody, onAbort, request.onStatus, resolve, reject),
          );
        }).then((received) => {
          const value: Exchanged = {
            status: received.status,
            headers: received.headers,
            bytes: received.bytes,
            body:
              received.chunks === undefined
                ? undefined
                : Buffer.concat(received.chunks, received.bytes),
          };
          return {
            status: received.status,
            header: (name: string) => first(received.headers[name]),
            discard: () => Promise.resolve(),
            done: Promise.resolve(),
            value,
          };
        }),
      call,
    );
  };
  Object.defineProperties(exchange, {
    client: { value: client },
    close: { value: (closeOptions?: { deadline?: number }) => client.close(closeOptions) },
  });
  return exchange as ExchangeFunction;
}
