/**
 * An HTTP server on 127.0.0.1 with a hidden capacity, in real time: it serves `capacity` requests
 * at a time, each in `latencyMs`; up to `queue` more wait in line for a turn (their latency grows
 * with the line); beyond that it answers 429 at once. Its capacity may change on a plan, counted
 * from the first request. What an adaptive limit is run against end to end (the tests), and what
 * the benchmark runs `sluice fetch` against (as a process of its own:
 * `node --import tsx test/_helpers/capacity-server.ts '<options as JSON>'` prints
 * `{"url": …}` and serves until killed).
 *
 * `GET /_stats` answers the counts as JSON (see `CapacityStats`); every other request is work.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface CapacityServerOptions {
  capacity: number;
  latencyMs: number;
  /** How many may wait for a turn beyond the capacity. */
  queue: number;
  /** Changes of the capacity, each `afterMs` after the first request. */
  plan?: { afterMs: number; capacity: number }[];
  /** The width of the timeline's buckets, ms. @default 100 */
  bucketMs?: number;
}

/** What the server saw. Times are ms since the first request. */
export interface CapacityStats {
  capacity: number;
  served: number;
  refused: number;
  /** The most in the server at once (served and waiting). */
  peak: number;
  bucketMs: number;
  /** Per bucket: requests answered 200, and 429. */
  servedAt: number[];
  refusedAt: number[];
  /** Requests answered 200, and 429, by the first segment of their path (`/c1/…`: `c1`). */
  clients: Record<string, { served: number; refused: number }>;
}

export interface CapacityServer {
  readonly url: string;
  stats(): CapacityStats;
  close(): Promise<void>;
}

export async function startCapacityServer(options: CapacityServerOptions): Promise<CapacityServer> {
  const bucketMs = options.bucketMs ?? 100;
  let capacity = options.capacity;
  let active = 0;
  let firstAt: number | undefined;
  const line: ServerResponse[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const stats: CapacityStats = {
    capacity,
    served: 0,
    refused: 0,
    peak: 0,
    bucketMs,
    servedAt: [],
    refusedAt: [],
    clients: {},
  };
  const client = (url: string | undefined) =>
    (stats.clients[/^\/([^/?]*)/.exec(url ?? '')?.[1] ?? ''] ??= { served: 0, refused: 0 });
  const count = (series: number[]): void => {
    const bucket = Math.floor((performance.now() - (firstAt ?? 0)) / bucketMs);
    while (series.length <= bucket) series.push(0);
    series[bucket]!++;
  };
  const later = (ms: number, fn: () => void): void => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };
  const next = (): void => {
    while (active < capacity && line.length > 0) serve(line.shift()!);
  };
  const serve = (res: ServerResponse): void => {
    active++;
    later(options.latencyMs, () => {
      active--;
      stats.served++;
      client(res.req.url).served++;
      count(stats.servedAt);
      res.writeHead(200, { 'content-length': '2' }).end('ok');
      next();
    });
  };
  const server = createServer((req, res) => {
    req.resume();
    if (req.url === '/_stats') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
      return;
    }
    if (firstAt === undefined) {
      firstAt = performance.now();
      for (const change of options.plan ?? []) {
        later(change.afterMs, () => {
          capacity = stats.capacity = change.capacity;
          next();
        });
      }
    }
    if (active < capacity) serve(res);
    else if (line.length < options.queue) line.push(res);
    else {
      stats.refused++;
      client(req.url).refused++;
      count(stats.refusedAt);
      res.writeHead(429, { 'content-length': '0' }).end();
    }
    stats.peak = Math.max(stats.peak, active + line.length);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    stats: () => structuredClone(stats),
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await startCapacityServer(JSON.parse(process.argv[2]!) as CapacityServerOptions);
  process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
  process.on('SIGTERM', () => {
    void server.close().then(() => process.exit(0));
  });
}
