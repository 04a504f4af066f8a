/**
 * `adaptive()` end to end, in real time, against a real HTTP server on 127.0.0.1 with a hidden
 * capacity (test/_helpers/capacity-server.ts): it serves C at a time in 20 ms, keeps a line of 4
 * more, and answers 429 beyond; C halves after 2 s and doubles back after 4 s. Through
 * `createFetch({ perOrigin: { concurrency: adaptive() } })`, and through `sluice fetch -c auto`.
 *
 * Real time on a shared machine: the bounds are generous (the benchmark measures the real
 * numbers). What must hold: the limit comes down after the halving and goes back up after the
 * doubling, the server is kept busy, and few requests are refused.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { adaptive, type LimitChangeEvent } from '../src/index.ts';
import { createFetch } from '../src/http/index.ts';
import { startCapacityServer, type CapacityStats } from './_helpers/capacity-server.ts';
import { cli, tempDir } from './cli-helpers.ts';

const LATENCY = 20;
/** When C halves, when it doubles back, and when the run ends (ms from the start). */
const HALVE = 2000;
const DOUBLE = 4000;
const END = 6000;
const PLAN = [
  { afterMs: HALVE, capacity: 4 },
  { afterMs: DOUBLE, capacity: 8 },
];

/** Requests served per second over [from, to) ms, from the server's timeline. */
function servedPerSecond(stats: CapacityStats, from: number, to: number): number {
  const buckets = stats.servedAt.slice(from / stats.bucketMs, to / stats.bucketMs);
  return (buckets.reduce((a, b) => a + b, 0) * 1000) / (to - from);
}

describe('adaptive() against a real server of hidden capacity', { timeout: 30_000 }, () => {
  it('createFetch with perOrigin.concurrency adaptive follows C down and back up', async (t) => {
    const server = await startCapacityServer({
      capacity: 8,
      latencyMs: LATENCY,
      queue: 4,
      plan: PLAN,
    });
    t.after(() => server.close());
    const template = adaptive({ initial: 2 });
    const changes: LimitChangeEvent[] = [];
    template.on('limit', (change) => changes.push(change));
    const fetch = createFetch({ perOrigin: { concurrency: template }, retry: 0 });
    t.after(() => fetch.close());
    const started = performance.now();
    let stopped = false;
    let refused = 0;
    const worker = async (): Promise<void> => {
      while (!stopped) {
        const response = await fetch(`${server.url}/work`);
        await response.arrayBuffer();
        if (response.status === 429) refused++;
      }
    };
    const workers = Array.from({ length: 40 }, worker);
    await new Promise((resolve) => setTimeout(resolve, END));
    stopped = true;
    await Promise.all(workers);
    const stats = server.stats();
    const at = (ms: number) => started + ms;
    const before = changes.filter((c) => c.at < at(HALVE)).at(-1)?.limit ?? 2;
    const low = Math.min(
      ...changes.filter((c) => c.at >= at(HALVE) && c.at < at(DOUBLE)).map((c) => c.limit),
    );
    const end = changes.at(-1)!.limit;
    // Down after the halving, if it was above the new capacity: on a busy machine, whose own
    // delays the limit reads as a queue, it may not have climbed past 4 by then (seen: 4, then 5).
    if (before > 4) {
      assert.ok(low < before, `the limit came down after the halving: ${before} → ${low}`);
    }
    assert.ok(end > low, `and went back up after the doubling: ${low} → ${end}`);
    assert.ok(
      changes.every((c) => c.key === server.url),
      'the changes are the origin’s',
    );
    // Busy: at least 40% of what each capacity serves (C / 20 ms) in the second half of each
    // phase (the first gives the limit time to find C, from 2 at the start). Generous: at 20 ms
    // a request, this machine's own delays are a large part of the latency the limit reads (the
    // benchmark measures goodput at 50 ms: 0.95 of the best fixed limit); a limit that collapsed
    // to 1 would serve 12–25%.
    for (const [from, to, capacity] of [
      [HALVE / 2, HALVE, 8],
      [(HALVE + DOUBLE) / 2, DOUBLE, 4],
      [(DOUBLE + END) / 2, END, 8],
    ] as const) {
      const rate = servedPerSecond(stats, from, to);
      assert.ok(
        rate >= (0.4 * (capacity * 1000)) / LATENCY,
        `${rate}/s served at C = ${capacity} in [${from}, ${to}) ms`,
      );
    }
    assert.ok(
      refused / (stats.served + refused) <= 0.1,
      `${refused} refused of ${stats.served + refused}`,
    );
  });

  it('sluice fetch -c auto adapts per origin, and the report plots the limit', async () => {
    const server = await startCapacityServer({
      capacity: 8,
      latencyMs: LATENCY,
      queue: 4,
      plan: PLAN,
    });
    const dir = tempDir();
    try {
      const lines = Array.from({ length: 800 }, (_, i) => `${server.url}/${i}`).join('\n');
      const report = join(dir.dir, 'run.html');
      const run = await cli(
        [
          'fetch',
          '-q',
          '-c',
          'auto',
          '--algorithm',
          'vegas',
          '--max-concurrency',
          '64',
          '--report',
          report,
          '-',
        ],
        {
          stdin: `${lines}\n`,
        },
      );
      assert.equal(run.records.length, 800);
      const ok = run.records.filter((record) => record.ok === true).length;
      assert.ok(ok >= 0.95 * 800, `${ok} of 800 ok`);
      const stats = server.stats();
      assert.ok(stats.refused <= 0.1 * (stats.served + stats.refused), `${stats.refused} refused`);
      const html = readFileSync(report, 'utf8');
      assert.match(html, /auto \(vegas, at most 64\)/);
      assert.match(html, /<path class="limit-line" d="M/);
    } finally {
      dir.remove();
      await server.close();
    }
  });
});
