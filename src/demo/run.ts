/**
 * `sluice demo`: starts the demo API (5 requests at once, 20 per second), fetches 100 posts
 * through sluice with the client's limits set at the server's, then sends the same 100 requests
 * with a bare `Promise.all`, and prints what the server saw each time.
 *
 * Each pass gets a fresh server, so both start with a full token bucket and their own counts.
 */
import { createFetch } from '../http/index.ts';
import type { CliIo } from '../cli/io.ts';
import { startDemoServer, type DemoServerStats } from './server.ts';

const POSTS = 100;
const CONCURRENCY = 5;
const RATE = 20;
const DELAY_MS = 50;
const SHOWN = 3;

interface Pass {
  stats: DemoServerStats;
  /** From the first call to the last body read. */
  ms: number;
  /** Calls that failed without a response (network errors). */
  failed: number;
}

/** Sends one GET per post with `get`, all at once, and reads every body. */
async function pass(
  get: (url: string) => Promise<Response>,
  onPost?: (post: unknown) => void,
): Promise<Pass> {
  const server = await startDemoServer({ concurrency: CONCURRENCY, rate: RATE, delayMs: DELAY_MS });
  let failed = 0;
  try {
    const started = performance.now();
    await Promise.all(
      Array.from({ length: POSTS }, async (_, i) => {
        try {
          const response = await get(`${server.url}/posts?id=${i + 1}`);
          const body: unknown = await response.json();
          if (response.ok) onPost?.(body);
        } catch {
          failed++;
        }
      }),
    );
    const ms = performance.now() - started;
    return { stats: server.stats(), ms, failed };
  } finally {
    await server.close();
  }
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** The refusals the server counted, by status: `0`, or `12: 12 × 503 Service Unavailable`. */
export function rejections(stats: DemoServerStats): string {
  if (stats.rejections === 0) return '0';
  const parts = [
    [429, 'Too Many Requests'],
    [503, 'Service Unavailable'],
  ] as const;
  return `${stats.rejections}: ${parts
    .filter(([status]) => stats.rejected[status] > 0)
    .map(([status, text]) => `${stats.rejected[status]} × ${status} ${text}`)
    .join(', ')}`;
}

/**
 * Runs the demo, writing plain text to `io.stdout`. Resolves to 0 when the server refused none of
 * the requests sent through sluice, 1 otherwise.
 */
export async function runDemo(io: CliIo): Promise<number> {
  const print = (line = ''): void => {
    io.stdout.write(`${line}\n`);
  };
  const row = (name: string, value: string): void => {
    print(`  ${name.padEnd(16)}${value}`);
  };

  print(
    `A local API that answers in ${DELAY_MS} ms and refuses more than ${CONCURRENCY} requests at ` +
      `once (503)`,
  );
  print(
    `or more than ${RATE} per second (429: a token bucket of ${RATE}/s with room for ${RATE}).`,
  );
  print();

  print(
    `${POSTS} posts through sluice, createFetch({ perOrigin: { concurrency: ${CONCURRENCY}, ` +
      `rate: '${RATE}/s' } }):`,
  );
  const fetch = createFetch({ perOrigin: { concurrency: CONCURRENCY, rate: `${RATE}/s` } });
  const titles: string[] = [];
  let limited: Pass;
  try {
    limited = await pass(fetch, (post) => {
      const { id, title } = post as { id: number; title: string };
      titles[id - 1] = title;
    });
  } finally {
    await fetch.close();
  }
  for (let i = 0; i < SHOWN; i++) print(`  #${i + 1}  ${titles[i] ?? '(missing)'}`);
  print(`  …`);
  const ideal = (POSTS / RATE) * 1000;
  row('requests sent', `${limited.stats.requests} (${limited.stats.ok} answered 200 OK)`);
  row('peak in flight', `${limited.stats.peakInFlight}, seen by the server (limit ${CONCURRENCY})`);
  row('rejections', rejections(limited.stats));
  row(
    'makespan',
    `${seconds(limited.ms)}; ideal ${seconds(ideal)} = ${POSTS} requests / ${RATE} per s ` +
      `(${(limited.ms / ideal).toFixed(2)}×)`,
  );
  if (limited.failed > 0) row('failed', `${limited.failed} (network errors)`);
  print();

  print(`The same ${POSTS} requests with a bare Promise.all (global fetch, no limits):`);
  const bare = await pass((url) => globalThis.fetch(url));
  row('requests sent', `${bare.stats.requests} (${bare.stats.ok} answered 200 OK)`);
  row('rejections', rejections(bare.stats));
  row('makespan', `${seconds(bare.ms)}, with ${POSTS - bare.stats.ok} posts missing`);
  if (bare.failed > 0) row('failed', `${bare.failed} (network errors)`);

  return limited.stats.rejections === 0 && limited.failed === 0 ? 0 : 1;
}
