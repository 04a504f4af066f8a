/**
 * `createFetch(options)`: a function with the signature and `Response` of `fetch`, that keeps every
 * origin inside its limits. Built on undici's own `fetch` with the client's `Agent` as dispatcher
 * (the global dispatcher is never touched).
 *
 * The `Response` handed back is a standard (global) `Response` whose body is tracked: the origin's
 * slot is given back when the body has been read to the end, cancelled, or has failed. Read or
 * cancel every body, as with undici itself; a response dropped unread gives its slot back when it
 * is garbage-collected, which may take long.
 */
import type { Response as UndiciResponse } from 'undici';
import {
  HttpClient,
  type CallOptions,
  type HttpOptions,
  type RequestReport,
  type Sent,
} from './client.ts';
import { undici } from './_undici.ts';

/**
 * `RequestInit` plus what a limited fetch understands. Its `priority` is sluice's, a number: the
 * DOM's own `priority` (a fetch priority hint, `'high' | 'low' | 'auto'`) is left out, so that the
 * type compiles with the DOM library as without it.
 */
export interface LimitedRequestInit extends Omit<RequestInit, 'priority'> {
  /** Higher first, within the origin's line. @default 0 */
  priority?: number;
  /** Called with what happened to this request. */
  onReport?: (report: RequestReport) => void;
}

/** A `fetch` within limits, with a way to close it. */
export interface LimitedFetch {
  (input: string | URL | Request, init?: LimitedRequestInit): Promise<Response>;
  /** The client underneath: its `limiter` (a KeyedLimiter by origin) and `agent`. */
  readonly client: HttpClient;
  /**
   * Rejects the requests waiting for a slot, lets those in flight finish (up to `deadline` ms, then
   * aborts them), and closes the connection pools. See `HttpClient.close()`.
   */
  close(options?: { deadline?: number }): Promise<void>;
}

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/** Gives a response's slot back if the response is collected unread. */
const unread = new FinalizationRegistry<() => void>((finish) => {
  finish();
});

/** Wraps an undici response into a global `Response` whose body reports when it is done. */
function track(response: UndiciResponse): Sent<Response> {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const init = {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers as unknown as Headers,
  };
  const source = response.body;
  let value: Response;
  if (source === null || NULL_BODY_STATUSES.has(response.status)) {
    void source?.cancel().catch(() => undefined);
    finish();
    value = new Response(null, init);
  } else {
    const reader = source.getReader();
    let finished = false;
    const end = (): void => {
      if (finished) return;
      finished = true;
      unread.unregister(end);
      finish();
    };
    const body = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          try {
            const chunk = await reader.read();
            if (chunk.done) {
              controller.close();
              end();
            } else {
              controller.enqueue(chunk.value as Uint8Array);
            }
          } catch (error) {
            controller.error(error);
            end();
          }
        },
        async cancel(reason) {
          end();
          await reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
    value = new Response(body, init);
    unread.register(
      value,
      () => {
        void reader.cancel().catch(() => undefined);
        end();
      },
      end,
    );
  }
  // A constructed Response has no url; give it the one that was fetched (after redirects).
  Object.defineProperty(value, 'url', { value: response.url });
  Object.defineProperty(value, 'redirected', { value: response.redirected });
  return {
    status: response.status,
    header: (name) => response.headers.get(name),
    discard: async () => {
      await value.body?.cancel().catch(() => undefined);
    },
    done,
    value,
  };
}

function replayable(body: unknown): boolean {
  return (
    body === undefined ||
    body === null ||
    typeof body === 'string' ||
    body instanceof URLSearchParams ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    body instanceof Blob ||
    body instanceof FormData
  );
}

/**
 * Returns a `fetch` that keeps every origin within its limits: a concurrency and a rate per
 * origin, a global concurrency, retries of idempotent requests on network errors and on 408, 429,
 * 500, 502, 503 and 504, and the server's own Retry-After / RateLimit / X-RateLimit headers.
 *
 * @example
 * ```ts
 * const fetch = createFetch({ perOrigin: { concurrency: 5, rate: '20/s' } });
 * const posts = await Promise.all(ids.map((id) => fetch(`https://api.example.com/posts/${id}`).then((r) => r.json())));
 * await fetch.close();
 * ```
 */
export function createFetch(options?: HttpOptions): LimitedFetch {
  const client = new HttpClient(options);
  const limited = async (
    input: string | URL | Request,
    init: LimitedRequestInit = {},
  ): Promise<Response> => {
    const { priority, onReport, ...given } = init;
    // A Request (the global class, which npm undici does not take) is taken apart into a URL
    // and an init; what `init` says wins, as with fetch.
    const request = input instanceof Request ? input : undefined;
    const url = new URL(request === undefined ? input : request.url);
    const requestInit: RequestInit & { duplex?: 'half' } =
      request === undefined
        ? given
        : {
            method: request.method,
            headers: request.headers,
            body: request.body,
            redirect: request.redirect,
            signal: request.signal,
            ...(request.body === null ? {} : { duplex: 'half' as const }),
            ...given,
          };
    const method = (requestInit.method ?? 'GET').toUpperCase();
    const call: CallOptions = {
      signal: requestInit.signal,
      priority,
      onReport,
      replayable: replayable(requestInit.body),
    };
    return client.run(
      url,
      method,
      async ({ signal, dispatcher }) => {
        const response = await undici().fetch(url, {
          ...(requestInit as object),
          signal: signal(),
          dispatcher,
        });
        return track(response);
      },
      call,
    );
  };
  Object.defineProperties(limited, {
    client: { value: client },
    close: { value: (options?: { deadline?: number }) => client.close(options) },
  });
  return limited as LimitedFetch;
}
