/**
 * (h) Adaptive concurrency: `sluice fetch -c auto` against a server whose capacity it is not told,
 * and which changes twice during the run, beside `sluice fetch -c N` for every N of a sweep.
 *
 * The server (test/_helpers/capacity-server.ts, a process of its own) serves C requests at a time
 * in 50 ms each, keeps a line of Q = 20 more (whose latency grows with the line), and answers 429
 * beyond. C is 40 for the first 8 s (counted from its first request), 20 for the next 8 s, and 40
 * again for the last 8 s. Each cell runs `sluice fetch` (or four of them at once, each with its
 * own input: four clients sharing the server) for those 24 s on an input longer than it can
 * finish, and is then stopped; everything is measured at the server, from its timeline of
 * answers in 100 ms buckets:
 *   goodput      requests answered 200 per second over the 24 s;
 *   refused      the share of requests answered 429;
 *   re-converged how long after each change of C until, from then to the next change, every
 *                second the server answers at least 90% of what C allows (C / 50 ms) and
 *                refuses at most 2%.
 * The best fixed limit is the fixed -c with the most goodput, chosen in hindsight.
 *
 * A cell of each algorithm also writes its `--report`, from which the in-flight chart (with the
 * limit as it moved) is saved as an SVG in .bench-out/ (the one in docs/ is a copy of one).
 *
 * The last rows share one limit through Redis (`RedisAdaptiveStore`, on a redis-server the case
 * starts on a free port): four clients, each a process of its own running `createExchange` (the
 * client `sluice fetch` runs on) with `perOrigin.concurrency: adaptive({ algorithm, max: 256,
 * store })` and retries at their default (as `sluice fetch -c auto` does; this file is that client
 * when run as
 * `node bench/cases/adaptive.mjs client '<options as JSON>'`). The shared total, read from Redis
 * every 100 ms, is drawn over C in an SVG in .bench-out/.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as s from '../stats.mjs';
import { startRedis as startRedisServer } from '../redis-server.mjs';

export const title =
  '(h) Adaptive concurrency: sluice fetch -c auto against a server of hidden capacity';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'dist', 'cli', 'bin.js');
const SERVER = join(ROOT, 'test', '_helpers', 'capacity-server.ts');
const OUT = join(ROOT, '.bench-out');
const SELF = fileURLToPath(import.meta.url);

const LATENCY_MS = 50;
const QUEUE = 20;
const PHASE_MS = 8000;
const CAPACITIES = [40, 20, 40];
const RUN_MS = PHASE_MS * CAPACITIES.length;
const SWEEP = [10, 20, 30, 40, 60, 80, 120];
const ALGORITHMS = ['gradient2', 'vegas', 'aimd'];
const CLIENTS = 4;
/** More lines than a client can finish in the run. */
const LINES = 40_000;
/** How long a client may take to start, ten times over, before the case gives up. */
const START_MS = 1500;

const GOODPUT_TARGET = 0.9;
const REFUSED_TARGET = 0.02;
const RECONVERGE_TARGET_MS = 5000;
const STARVED_TARGET = 0.5;

/** One measurement per cell: the 24 s runs are long, and the server's counts are exact. */
export const reps = 1;

/**
 * `BENCH_ADAPTIVE=shared` runs only the rows shared through Redis, beside the fixed limits that
 * can be the best (C and C + the server's line), which their "× best" is measured against.
 */
export function plan() {
  const fixed = (c) => ({ label: `sluice fetch -c ${c}`, params: { c, clients: 1 } });
  const shared = ALGORITHMS.map((algorithm) => ({
    label: `${CLIENTS} × adaptive ${algorithm}, shared through Redis`,
    params: { algorithm, clients: CLIENTS, shared: true },
  }));
  if (process.env.BENCH_ADAPTIVE === 'shared') return [...[40, 60].map(fixed), ...shared];
  return [
    ...SWEEP.map(fixed),
    ...ALGORITHMS.map((algorithm) => ({
      label: `sluice fetch -c auto --algorithm ${algorithm}`,
      params: { algorithm, clients: 1 },
    })),
    ...ALGORITHMS.map((algorithm) => ({
      label: `${CLIENTS} × sluice fetch -c auto --algorithm ${algorithm}`,
      params: { algorithm, clients: CLIENTS },
    })),
    ...shared,
  ];
}

export async function measure(params) {
  if (!existsSync(BIN)) {
    throw new Error(`${BIN} not found: the sluice CLI must be built first (npm run build)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-adaptive-'));
  const server = await startServer();
  const redis = params.shared ? await startRedis() : undefined;
  try {
    const name = `bench-${process.pid}`;
    const clients = Array.from({ length: params.clients }, (_, i) => {
      if (redis !== undefined) {
        const options = { url: server.url, redis: redis.url, name, algorithm: params.algorithm, i };
        return spawn(process.execPath, [SELF, 'client', JSON.stringify(options)], {
          stdio: ['ignore', 'ignore', 'inherit'],
        });
      }
      const file = join(dir, `urls-${i}.txt`);
      const lines = Array.from({ length: LINES }, (_, n) => `${server.url}/c${i}/${n}`);
      writeFileSync(file, `${lines.join('\n')}\n`);
      const args = [BIN, 'fetch', file, '-q', '-o', '/dev/null'];
      if (params.c !== undefined) args.push('-c', String(params.c));
      else args.push('-c', 'auto', '--algorithm', params.algorithm);
      if (params.algorithm !== undefined && params.clients === 1)
        args.push('--report', join(dir, 'report.html'));
      // Stopped by SIGINT at the end: no grace for what runs (it is cancelled at once).
      return spawn(process.execPath, args, {
        stdio: ['ignore', 'ignore', 'ignore'],
        env: { ...process.env, SLUICE_GRACE_MS: '0' },
      });
    });
    // The run is stopped RUN_MS after the server's first answer (its clock starts at its first
    // request), however long the clients took to start; the measures cover [0, RUN_MS) of its
    // clock. (Stopped START_MS + RUN_MS after the clients were started, the shared rows, whose
    // processes take longest to start, lost their last second or two on a loaded machine.)
    const totals = redis === undefined ? undefined : redis.watch(name, server.url);
    await server.started();
    await delay(RUN_MS);
    const stats = await server.stats();
    // Stopped with SIGINT, so a client with --report writes it (what runs is cancelled).
    for (const child of clients) child.kill('SIGINT');
    await Promise.all(clients.map((child) => once(child, 'exit')));
    let picture;
    if (params.algorithm !== undefined && params.clients === 1) {
      picture = join(OUT, `adaptive-limit-${params.algorithm}.svg`);
      mkdirSync(OUT, { recursive: true });
      writeFileSync(picture, await chartOf(readFileSync(join(dir, 'report.html'), 'utf8')));
    }
    if (totals !== undefined) {
      picture = join(OUT, `adaptive-shared-limit-${params.algorithm}.svg`);
      mkdirSync(OUT, { recursive: true });
      writeFileSync(picture, sharedChart(await totals.stop(), params.algorithm));
    }
    return summarize(stats, params, picture);
  } finally {
    await server.close();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A redis-server of the case's own (bench/redis-server.mjs), and a watch on the shared totals. */
async function startRedis() {
  const server = await startRedisServer();
  const url = server.url;
  const { createClient } = await import('redis');
  let client;
  for (let tries = 0; client === undefined; tries++) {
    try {
      client = await createClient({ url, socket: { reconnectStrategy: false } }).connect();
    } catch (error) {
      if (tries > 100) throw error;
      await delay(50);
    }
  }
  return {
    url,
    /** Reads the shared total of `origin`'s limit every 100 ms: [ms since the start, total]. */
    watch(name, origin) {
      const key = `sluice:{${name}}:adaptive:${encodeURIComponent(origin)}`;
      const series = [];
      const started = performance.now();
      const timer = setInterval(() => {
        const at = performance.now() - started;
        void client.hGet(key, 'limit').then((limit) => {
          if (limit !== null && limit !== undefined) series.push([at, Number(limit)]);
        });
      }, 100);
      return {
        stop: async () => {
          clearInterval(timer);
          return series;
        },
      };
    },
    stop: async () => {
      await client.close();
      await server.stop();
    },
  };
}

/** One shared client (see the header): fetches without end until killed. */
async function runClient(options) {
  const dist = (path) => new URL(`../../dist/${path}`, import.meta.url).href;
  const { adaptive } = await import(dist('index.js'));
  const { createExchange } = await import(dist('http/index.js'));
  const { RedisAdaptiveStore } = await import(dist('redis/index.js'));
  const { createClient } = await import('redis');
  const redis = await createClient({ url: options.redis }).connect();
  const store = new RedisAdaptiveStore(redis, options.name);
  const limit = adaptive({ algorithm: options.algorithm, max: 256, store });
  // createExchange, the client `sluice fetch` runs on: createFetch (undici's fetch, a stream per
  // response) costs about ten times its CPU per request (measured: 2.4 ms against 0.24 ms), and
  // four such clients at C = 40 kept a 2-core machine busy enough that their own latencies rose
  // below C, which the limit took for a queue at the server.
  const exchange = createExchange({ perOrigin: { concurrency: limit } });
  process.on('SIGINT', () => process.exit(0));
  let n = 0;
  const worker = async () => {
    for (;;) {
      try {
        await exchange(`${options.url}/c${options.i}/${n++}`);
      } catch {
        // counted at the server
      }
    }
  };
  await Promise.all(Array.from({ length: 256 }, worker));
}

/**
 * The shared total over time beside C, as an SVG: `series` holds [ms, total]; its first point is
 * the first client's first request (the key appears then), where the server's clock starts.
 */
function sharedChart(raw, algorithm) {
  const t0 = raw[0]?.[0] ?? 0;
  const series = raw.map(([at, v]) => [at - t0, v]).filter(([at]) => at <= RUN_MS);
  const W = 900;
  const H = 300;
  const PAD = 40;
  const top = Math.max(60, ...series.map(([, v]) => v)) * 1.1;
  const x = (ms) => PAD + ((W - 2 * PAD) * ms) / RUN_MS;
  const y = (v) => H - PAD - ((H - 2 * PAD) * v) / top;
  const path = series
    .map(([at, v], i) => `${i === 0 ? 'M' : 'L'}${x(at).toFixed(1)},${y(v).toFixed(1)}`)
    .join(' ');
  const capacity = CAPACITIES.map((c, i) => {
    const from = i * PHASE_MS;
    return `M${x(from).toFixed(1)},${y(c).toFixed(1)} L${x(from + PHASE_MS).toFixed(1)},${y(c).toFixed(1)}`;
  }).join(' ');
  const ticks = [];
  for (let v = 0; v <= top; v += 20) {
    ticks.push(`<text x="${PAD - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="#fff"/>',
    `<path d="M${PAD},${H - PAD} H${W - PAD}" stroke="#999"/>`,
    ...ticks,
    `<path d="${capacity}" stroke="#d62728" stroke-width="2" stroke-dasharray="6 4" fill="none"/>`,
    `<path d="${path}" stroke="#1f77b4" stroke-width="2" fill="none"/>`,
    `<text x="${W - PAD}" y="18" text-anchor="end"><tspan fill="#1f77b4">— shared limit (${CLIENTS} clients, ${algorithm})</tspan><tspan dx="14" fill="#d62728">- - server capacity C</tspan></text>`,
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle">${RUN_MS / 1000} s (C changes every ${PHASE_MS / 1000} s from the first request)</text>`,
    '</svg>',
  ].join('\n');
}

/** The measures of one run, from the server's counts. */
function summarize(stats, params, picture) {
  const buckets = RUN_MS / stats.bucketMs;
  const sum = (series, from, to) => series.slice(from, to).reduce((a, b) => a + (b ?? 0), 0);
  const served = sum(stats.servedAt, 0, buckets);
  const refused = sum(stats.refusedAt, 0, buckets);
  const perPhase = PHASE_MS / stats.bucketMs;
  const perSecond = 1000 / stats.bucketMs;
  /** Whether the second from bucket `b` served 90% of `allowed` per second, 2% refused at most. */
  const good = (b, allowed) => {
    const ok = sum(stats.servedAt, b, b + perSecond);
    const no = sum(stats.refusedAt, b, b + perSecond);
    return ok >= GOODPUT_TARGET * allowed && no <= REFUSED_TARGET * (ok + no);
  };
  /**
   * How long after the change that starts phase `p` until every second to the end of the phase
   * is good (null: never).
   */
  const reconverge = (p) => {
    const allowed = (CAPACITIES[p] * 1000) / LATENCY_MS;
    const end = (p + 1) * perPhase;
    for (let from = p * perPhase; from + perSecond <= end; from++) {
      let every = true;
      for (let b = from; b + perSecond <= end && every; b += perSecond) every = good(b, allowed);
      if (every) return (from - p * perPhase) * stats.bucketMs;
    }
    return null;
  };
  const clients = Object.entries(stats.clients)
    .filter(([name]) => /^c\d+$/.test(name))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([, counts]) => counts.served);
  const result = {
    goodput: served / (RUN_MS / 1000),
    refused: refused / Math.max(1, served + refused),
    converged: reconverge(0),
    halved: reconverge(1),
    doubled: reconverge(2),
    clients,
    peak: stats.peak,
    picture,
  };
  result.summary =
    `${s.fixed(result.goodput, 0)}/s, ${s.percent(result.refused)} refused, re-converged ` +
    `${ms(result.halved)} / ${ms(result.doubled)}` +
    (clients.length > 1 ? `, clients ${clients.join('/')}` : '');
  return result;
}

export function report(cells) {
  const fixed = cells.filter((cell) => cell.params.c !== undefined);
  /** The cell's value of `key` (one run per cell); null stands for "never". */
  const one = (cell, key) => {
    const value = cell.runs[0]?.[key];
    return value === null ? Infinity : (value ?? NaN);
  };
  const best = fixed.reduce(
    (a, b) => (one(b, 'goodput') > (a === undefined ? -1 : one(a, 'goodput')) ? b : a),
    undefined,
  );
  const bestGoodput = best === undefined ? NaN : one(best, 'goodput');
  const rows = cells.map((cell) => {
    const run = cell.runs[0];
    const clients = run?.clients ?? [];
    return [
      cell.label,
      s.fixed(one(cell, 'goodput'), 0),
      s.fixed(one(cell, 'goodput') / bestGoodput, 2),
      s.percent(one(cell, 'refused')),
      ms(one(cell, 'converged')),
      ms(one(cell, 'halved')),
      ms(one(cell, 'doubled')),
      clients.length > 1 ? clients.map((n) => s.int(n)).join(' / ') : '',
    ];
  });
  const ideal = CAPACITIES.reduce((sum, c) => sum + (c * 1000) / LATENCY_MS, 0) / CAPACITIES.length;
  const markdown = [
    `### ${title}`,
    '',
    `A server on 127.0.0.1 serves C requests at a time in ${LATENCY_MS} ms, keeps a line of ` +
      `${QUEUE} more and answers 429 beyond; C is ${CAPACITIES.join(', then ')}, ` +
      `${PHASE_MS / 1000} s each (the most it can answer is ${s.fixed(ideal, 0)}/s over the run). ` +
      `Each row runs \`sluice fetch\` (retries at their default, 2) for ${RUN_MS / 1000} s, ` +
      `measured at the server: goodput (200s per second), the share refused (429s), and how ` +
      `long after the start and after each change of C until, from then to the next change, ` +
      `the server answered 90% of what C allows with at most 2% refused in every second ` +
      `("never": not within that phase). "× best" is the goodput ` +
      `over that of the best fixed -c, chosen in hindsight` +
      (best === undefined ? '.' : ` (${best.label}).`) +
      ` The "${CLIENTS} ×" rows run ${CLIENTS} clients at once: the first ones each with its own ` +
      `limit, the last ones sharing one through Redis (\`RedisAdaptiveStore\`; each client a ` +
      `process running \`createExchange\` (the client \`sluice fetch\` runs on) with an adaptive \`perOrigin.concurrency\`, as ` +
      `\`sluice fetch -c auto\` does); their goodput and refusals are the server's totals, and ` +
      `the last column what each client got.`,
    '',
    s.table(
      [
        'run',
        'goodput /s',
        '× best',
        'refused',
        'converged',
        're-converged, C halved',
        're-converged, C doubled',
        'per client',
      ],
      rows,
    ),
  ].join('\n');
  const targets = cells
    .filter((cell) => cell.params.algorithm !== undefined)
    .map((cell) => {
      const goodput = one(cell, 'goodput') / bestGoodput;
      const refused = one(cell, 'refused');
      const halved = one(cell, 'halved');
      const doubled = one(cell, 'doubled');
      const clients = cell.runs[0]?.clients ?? [];
      const fair = clients.reduce((a, b) => a + b, 0) / Math.max(1, clients.length);
      const starved = clients.length > 1 ? Math.min(...clients) / fair : 1;
      const pass =
        goodput >= GOODPUT_TARGET &&
        refused <= REFUSED_TARGET &&
        halved <= RECONVERGE_TARGET_MS &&
        doubled <= RECONVERGE_TARGET_MS &&
        starved >= STARVED_TARGET;
      return s.target(
        pass,
        `(h) ${cell.label}: goodput ${s.fixed(goodput, 2)} × the best fixed (≥ ${GOODPUT_TARGET}), ` +
          `${s.percent(refused)} refused (≤ ${s.percent(REFUSED_TARGET)}), re-converged in ` +
          `${ms(halved)} and ${ms(doubled)} (≤ ${RECONVERGE_TARGET_MS / 1000} s)` +
          (clients.length > 1
            ? `, the least-served client got ${s.fixed(starved, 2)} of a fair share (≥ ${STARVED_TARGET})`
            : ''),
      );
    });
  return { markdown, targets };
}

function ms(value) {
  if (value === null || value === Infinity) return 'never';
  return Number.isFinite(value) ? `${(value / 1000).toFixed(1)} s` : 'n/a';
}

function delay(ms) {
  return new Promise((resolve) => {
    setTimeout(resolve, ms);
  });
}

/** Starts the server as a process of its own; resolves once it listens. */
async function startServer() {
  const options = {
    capacity: CAPACITIES[0],
    latencyMs: LATENCY_MS,
    queue: QUEUE,
    plan: CAPACITIES.slice(1).map((capacity, i) => ({ afterMs: (i + 1) * PHASE_MS, capacity })),
  };
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER, JSON.stringify(options)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = await once(createInterface({ input: child.stdout }), 'line');
  const { url } = JSON.parse(line);
  const stats = async () => (await fetch(`${url}/_stats`)).json();
  return {
    url,
    stats,
    /** Resolves once the server has answered a request (its clock started before). */
    started: async () => {
      const since = performance.now();
      for (;;) {
        const { servedAt, refusedAt } = await stats();
        if (servedAt.length > 0 || refusedAt.length > 0) return;
        if (performance.now() - since > 10 * START_MS) throw new Error('no client started');
        await delay(20);
      }
    },
    close: async () => {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/**
 * The in-flight chart of a report page, as an SVG file of its own: the page's stylesheet goes
 * with it (its colours, light and dark), on the card's background.
 */
async function chartOf(html) {
  const { REPORT_CSS } = await import(
    new URL('../../dist/cli/report-style.js', import.meta.url).href
  );
  const match = /<svg class="chart" id="chart-in-flight"[\s\S]*?<\/svg>/.exec(html);
  if (match === null) throw new Error('no in-flight chart in the report');
  const legend =
    '<text x="892" y="18" text-anchor="end"><tspan style="fill: var(--accent)">■ in flight</tspan>' +
    '<tspan dx="14" style="fill: var(--limit)">— concurrency limit</tspan></text>';
  return match[0]
    .replace(
      /^(<svg[^>]*>)/,
      `$1<style>${REPORT_CSS}</style><rect width="100%" height="100%" fill="var(--card)"/>`,
    )
    .replace(/<\/svg>$/, `${legend}</svg>`);
}

if (process.argv[1] === SELF && process.argv[2] === 'client') {
  await runClient(JSON.parse(process.argv[3]));
}
