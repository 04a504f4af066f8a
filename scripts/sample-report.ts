/**
 * Writes a report from a simulated run, to look at:
 *
 *   npx tsx scripts/sample-report.ts sample.html [--lines 3000] [--exec] [--interrupted] [--empty]
 *
 * The simulation: lines start at most `--rate` per second with at most `--concurrency` in flight;
 * latencies are log-normal, five times slower in the middle third of the run (so the run is first
 * held by the rate, then by the concurrency limit); some get a 429 and are retried after a pause,
 * some fail with a 5xx or a network error. A few targets carry credentials and markup, which the
 * page must redact and escape.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createReport } from '../src/cli/report.ts';
import type { RunConfig, RunEntry } from '../src/cli/report-data.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    lines: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '16' },
    rate: { type: 'string', default: '25/s' },
    exec: { type: 'boolean', default: false },
    interrupted: { type: 'boolean', default: false },
    empty: { type: 'boolean', default: false },
    seed: { type: 'string', default: '7' },
  },
});
const path = positionals[0];
if (path === undefined) {
  console.error(
    'usage: tsx scripts/sample-report.ts OUT.html [--lines N] [--concurrency N] [--rate 25/s] [--exec] [--interrupted] [--empty]',
  );
  process.exit(2);
}

let seed = Number(values.seed);
/** mulberry32: a seeded generator, so the same arguments give the same page. */
function random(): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function logNormal(median: number, sigma: number): number {
  const u = 1 - random();
  const normal = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  return median * Math.exp(sigma * normal);
}

const exec = values.exec;
const lines = values.empty ? 0 : Number(values.lines);
const concurrency = Number(values.concurrency);
const config: RunConfig = {
  command: exec ? 'exec' : 'fetch',
  concurrency,
  rates: [values.rate],
  perHostConcurrency: exec ? undefined : 8,
  retries: 3,
  timeoutMs: 10_000,
};
const [limit = '25', unit = 's'] = values.rate.split('/');
const spacing = (unit === 'min' ? 60_000 : 1000) / Number(limit);

function target(i: number): string {
  if (exec) {
    if (i === 5)
      return `curl -s -H 'Authorization: Bearer sk-live-123' https://api.example.com/x/${i}`;
    return `./convert.sh --input data/part-${String(i).padStart(5, '0')}.csv --format parquet`;
  }
  if (i === 3) return 'https://deploy:hunter2@internal.example.com/hooks/3';
  if (i === 7) return 'https://api.example.com/search?q=<script>alert(1)</script>&"x"=1';
  return `https://api.example.com/v2/items/${i}?include=owner,tags`;
}

const entries: RunEntry[] = [];
const slots = Array.from({ length: concurrency }, () => 0);
const stopAt = values.interrupted ? lines * spacing * 0.7 : Infinity;
let previousStart = -spacing;
for (let i = 0; i < lines; i++) {
  const slot = slots.indexOf(Math.min(...slots));
  // Evenly spaced starts, as a GCRA rate without burst allows: never catching up after a wait.
  const start = Math.max(previousStart + spacing, slots[slot]!);
  previousStart = start;
  if (start > stopAt) {
    entries.push({
      index: i,
      target: target(i),
      ok: false,
      attempts: 0,
      attemptStarts: [],
      end: stopAt,
      ms: 0,
      retriedStatuses: [],
      skipped: 'not run',
    });
    continue;
  }
  const slow = i > lines / 3 && i < (2 * lines) / 3 ? 5 : 1;
  const attemptStarts = [start];
  const retriedStatuses: number[] = [];
  let t = start;
  let latency = logNormal(exec ? 900 : 180, 0.6) * slow;
  while (random() < 0.06 && retriedStatuses.length < 3) {
    // exec retries a command that exited with EX_TEMPFAIL (75); fetch a 429 or a 503.
    retriedStatuses.push(exec ? 75 : random() < 0.8 ? 429 : 503);
    t += Math.min(latency, 40) + 500 + random() * 1000;
    attemptStarts.push(t);
    latency = logNormal(exec ? 900 : 180, 0.6) * slow;
  }
  const roll = random();
  const networkError = !exec && roll < 0.01;
  const failed = networkError || roll > 0.97 || i === 3 || i === 5 || i === 7;
  const status = networkError ? undefined : failed ? (exec ? 1 : 500) : exec ? 0 : 200;
  let end = t + latency;
  if (end > stopAt) {
    end = stopAt;
    entries.push({
      index: i,
      target: target(i),
      ok: false,
      attempts: attemptStarts.length,
      attemptStarts,
      start,
      end,
      ms: end - t,
      retriedStatuses,
      skipped: 'cancelled',
    });
    slots[slot] = end;
    continue;
  }
  slots[slot] = end;
  entries.push({
    index: i,
    target: target(i),
    status,
    ok: !failed,
    attempts: attemptStarts.length,
    attemptStarts,
    start,
    end,
    ms: latency,
    bytes: failed ? 0 : Math.round(2000 + random() * 30_000),
    error: networkError
      ? 'fetch failed: connect ECONNRESET 203.0.113.9:443'
      : failed
        ? exec
          ? 'exit code 1: convert.sh: line 12: <input> is not valid CSV ("unterminated quote")'
          : 'HTTP 500 Internal Server Error: {"error":"upstream <timeout> & retry later"}'
        : undefined,
    retriedStatuses,
  });
}

const report = createReport(config, Date.parse('2025-06-01T12:00:00Z'));
for (const entry of entries.sort((x, y) => x.end - y.end)) report.add(entry);
const duration = entries.reduce((max, entry) => Math.max(max, entry.end), 0);
report.finish(duration, values.interrupted);
const html = report.render();
writeFileSync(path, html);
console.log(`${path}: ${entries.length} lines, ${(html.length / 1024).toFixed(1)} KiB`);
