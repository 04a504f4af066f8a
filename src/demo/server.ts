/**
 * The demo's API: a small JSON server on 127.0.0.1 that enforces its own limits, as a real API
 * does, and counts what it saw.
 *
 * - `GET /posts?id=N` answers `{ id, title, body }` after `delayMs` (default 50 ms).
 * - **Rate:** a token bucket refilled at `rate` tokens per second (default 20) with room for
 *   `burst` (default 20). A request that finds no whole token is refused with
 *   `429 Too Many Requests` and a `Retry-After` (whole seconds, as RFC 9110 has it: the time until
 *   a token is back, rounded up). A bucket that holds a full second's worth means that a client
 *   spacing its starts at exactly the rate is never refused, even when the network delays one
 *   request and bunches it with the next: the bucket only runs dry for a client that sends more
 *   than `burst` above the rate.
 * - **Concurrency:** more than `concurrency` (default 5) requests being answered at once is
 *   refused with `503 Service Unavailable`. The rate is checked first, as a gateway in front of the
 *   application would, so a request refused for concurrency has spent its token.
 *
 * In flight, for the limit and for `peakInFlight`, means from the moment the server has read a
 * request to the moment it hands over the end of the response (or the client goes away). Refused
 * requests count too while they are being refused: the peak is what the client attempted.
 *
 * Invariants: `inFlight` = admitted requests not yet answered + refusals under way; every request
 * leaves `inFlight` exactly once; `requests` = `ok` + every status in `rejected` + other answers
 * (400, 404) + requests the client abandoned.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as v from '../_validate.ts';
import { later, type Cancel } from '../_clock.ts';

/** Options of {@link startDemoServer}. */
export interface DemoServerOptions {
  /** Requests answered at once; one more is refused with a 503. @default 5 */
  concurrency?: number;
  /** Tokens added to the bucket per second; a request without a token gets a 429. @default 20 */
  rate?: number;
  /** The bucket's room, and its content at the start. @default 20 */
  burst?: number;
  /** Milliseconds before a post is answered. @default 50 */
  delayMs?: number;
  /**
   * Milliseconds before a refusal is answered, as an API that takes a while to say no (a request
   * queued behind a gateway's timeout). A refusal counts in flight meanwhile, without holding a
   * slot. @default 0
   */
  refuseDelayMs?: number;
  /** The port on 127.0.0.1; 0 picks a free one. @default 0 */
  port?: number;
  /** Milliseconds on a monotonic clock, for the bucket (tests freeze it). @default performance.now */
  now?: () => number;
}

/** What the server saw, since it started. */
export interface DemoServerStats {
  /** Requests received. */
  requests: number;
  /** Requests answered 200. */
  ok: number;
  /** Requests being handled now. */
  inFlight: number;
  /** The most requests handled at once, refusals included. */
  peakInFlight: number;
  /** Refusals by status: `{ 429: n, 503: n }`. */
  rejected: { 429: number; 503: number };
  /** `rejected[429] + rejected[503]`. */
  rejections: number;
  /** When the first and the last request arrived, on the server's clock (ms); undefined before any. */
  firstAt: number | undefined;
  lastAt: number | undefined;
}

export interface DemoServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  stats(): DemoServerStats;
  /** Stops listening, drops every connection and cancels pending answers. */
  close(): Promise<void>;
}

const WORDS = [
  'quiet',
  'harbour',
  'lantern',
  'river',
  'copper',
  'meadow',
  'signal',
  'winter',
  'orchard',
  'engine',
  'paper',
  'garden',
  'compass',
  'morning',
  'silver',
  'bridge',
  'window',
  'thunder',
];

/** A title and a body made up from the id, the same every time. */
function post(id: number): { id: number; title: string; body: string } {
  const word = (k: number): string => WORDS[(id * 7 + k * 5) % WORDS.length]!;
  const title = `The ${word(0)} ${word(1)} and the ${word(2)}`;
  const body = `Post ${id}: ${word(3)} ${word(4)}, ${word(5)} ${word(6)}.`;
  return { id, title, body };
}

function send(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/**
 * Starts the demo API on 127.0.0.1 and resolves once it listens.
 *
 * @example
 * ```ts
 * const server = await startDemoServer();
 * const post = await (await fetch(`${server.url}/posts?id=1`)).json();
 * console.log(server.stats().requests); // → 1
 * await server.close();
 * ```
 */
export async function startDemoServer(options: DemoServerOptions = {}): Promise<DemoServer> {
  v.options('options', options);
  const concurrency =
    options.concurrency === undefined ? 5 : v.integer('concurrency', options.concurrency, 1);
  const rate = options.rate === undefined ? 20 : v.integer('rate', options.rate, 1);
  const burst = options.burst === undefined ? 20 : v.integer('burst', options.burst, 1);
  const delayMs = options.delayMs === undefined ? 50 : v.number('delayMs', options.delayMs, 0);
  const refuseDelayMs =
    options.refuseDelayMs === undefined ? 0 : v.number('refuseDelayMs', options.refuseDelayMs, 0);
  const port = options.port === undefined ? 0 : v.integer('port', options.port, 0);
  if (options.now !== undefined) v.fn('now', options.now);
  const now = options.now ?? (() => performance.now());

  let tokens = burst;
  let filledAt = now();
  /** Takes a token if there is a whole one; otherwise says how many ms until there is. */
  const take = (): number => {
    const at = now();
    tokens = Math.min(burst, tokens + ((at - filledAt) * rate) / 1000);
    filledAt = at;
    if (tokens >= 1) {
      tokens -= 1;
      return 0;
    }
    return ((1 - tokens) * 1000) / rate;
  };

  const stats: DemoServerStats = {
    requests: 0,
    ok: 0,
    inFlight: 0,
    peakInFlight: 0,
    rejected: { 429: 0, 503: 0 },
    rejections: 0,
    firstAt: undefined,
    lastAt: undefined,
  };
  let admitted = 0;
  const pending = new Set<Cancel>();

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    stats.requests++;
    stats.lastAt = now();
    stats.firstAt ??= stats.lastAt;
    stats.inFlight++;
    stats.peakInFlight = Math.max(stats.peakInFlight, stats.inFlight);
    let holdsSlot = false;
    let done = false;
    // The one place a request leaves the count: answered, or abandoned by the client.
    const finish = (): void => {
      if (done) return;
      done = true;
      stats.inFlight--;
      if (holdsSlot) admitted--;
    };
    res.on('close', finish);

    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method !== 'GET' || url.pathname !== '/posts') {
      finish();
      send(res, 404, { error: 'not found: try GET /posts?id=1' });
      return;
    }
    const id = Number(url.searchParams.get('id'));
    if (!Number.isSafeInteger(id) || id < 1) {
      finish();
      send(res, 400, { error: 'expected id to be an integer >= 1' });
      return;
    }
    // Answers after `ms` (at once for 0), unless the client goes away first.
    const answer = (ms: number, respond: () => void): void => {
      if (ms === 0) {
        finish();
        respond();
        return;
      }
      const timer = later(ms, () => {
        pending.delete(timer);
        finish();
        respond();
      });
      pending.add(timer);
      // A client that goes away before its answer leaves nothing behind.
      res.on('close', () => {
        timer();
        pending.delete(timer);
      });
    };
    const wait = take();
    if (wait > 0) {
      stats.rejected[429]++;
      stats.rejections++;
      answer(refuseDelayMs, () => {
        send(
          res,
          429,
          { error: `more than ${rate} requests per second` },
          { 'retry-after': String(Math.ceil(wait / 1000)) },
        );
      });
      return;
    }
    if (admitted >= concurrency) {
      stats.rejected[503]++;
      stats.rejections++;
      answer(refuseDelayMs, () => {
        send(res, 503, { error: `more than ${concurrency} requests at once` });
      });
      return;
    }
    admitted++;
    holdsSlot = true;
    answer(delayMs, () => {
      stats.ok++;
      send(res, 200, post(id));
    });
  };

  const server = createServer({ keepAlive: true }, handle);
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  const { port: bound } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${bound}`,
    stats: () => ({ ...stats, rejected: { ...stats.rejected } }),
    async close() {
      for (const cancel of pending) cancel();
      pending.clear();
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
}
