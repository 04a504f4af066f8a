/**
 * (g) HTTP: `sluice fetch` against autocannon, on one local server, in one process run.
 *
 * The server is a separate process (this file, run as `node http.mjs serve <kind>`, driven over
 * IPC) so that it never shares a thread with the client under test:
 *   http  node:http, keep-alive, answering every request at once with a 2-byte body;
 *   raw   a bare TCP server that answers every request it reads with one canned HTTP/1.1 response
 *         (no HTTP parser): what the long memory runs use, so that a million requests take
 *         seconds, not minutes, and the client, not the server, is what is measured.
 *
 * Throughput: one process starts the http server, warms it up with autocannon, then runs two
 * command-line tools as child processes started cold, like for like: autocannon's CLI
 * (connections 100, amount 20 000) and `sluice fetch` (a file of 20 000 URLs, global and per-host
 * concurrency 100), in the order A S S A, against the same server; then, for reference,
 * autocannon inside this process (warm: the warm-up compiled its code) and two in-process loops
 * (undici's request, sluice's createRequest). Requests/s are counted at the server, from the
 * arrival of the first request to the arrival of the last, so a tool's start-up (Node, module
 * loading) is left out; the wall time of each run is reported beside it. The ratio is sluice's
 * mean over the autocannon CLI's mean, within one process.
 *
 * Memory: the peak RSS (`ru_maxrss`, read with `/usr/bin/time -f %M`, or the VmHWM of
 * /proc/<pid>/status polled every 20 ms where that is missing) of `sluice fetch` over 10 000 and
 * N URLs (1 000 000; 200 000 in a quick run) against the raw server. A CLI that streams its
 * input and output stays flat; one that holds lines, results or promises grows with the input.
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as s from '../stats.mjs';

export const title = '(g) HTTP: sluice fetch against autocannon on a local server';

const N = 20_000;
const CONCURRENCY = 100;
const WARMUP = 5_000;
/** Requests/s are also counted past this many requests: once a client's code is warm. */
const WARM_FROM = 5_000;
const RSS_SMALL = 10_000;
const THROUGHPUT_TARGET = 0.9;
const RSS_TARGET = 1.2;

const SELF = fileURLToPath(import.meta.url);
const SLUICE_HTTP = new URL('../../dist/http/index.js', import.meta.url).href;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'dist', 'cli', 'bin.js');
const AUTOCANNON_BIN = join(ROOT, 'bench', 'node_modules', 'autocannon', 'autocannon.js');
/** `sluice fetch FILE` with the global and per-host concurrency at 100, no progress, no output. */
const fetchArgs = (file) => [
  BIN,
  'fetch',
  file,
  '-c',
  String(CONCURRENCY),
  '--per-host-concurrency',
  String(CONCURRENCY),
  '--quiet',
  '-o',
  '/dev/null',
];

if (process.argv[1] === SELF && process.argv[2] === 'serve') serve(process.argv[3]);

export function plan(config) {
  return [
    {
      label: `autocannon and sluice fetch, c=${CONCURRENCY}, ${s.int(N)} requests`,
      params: { kind: 'throughput' },
    },
    ...rssLines(config).map((lines) => ({
      label: `sluice fetch peak RSS, ${s.int(lines)} URLs`,
      params: { kind: 'rss', lines },
    })),
  ];
}

/** The small input, and the large one: 1 000 000 URLs, or N of a quick run. */
function rssLines(config) {
  return [RSS_SMALL, config.n];
}

export async function measure(params) {
  if (!existsSync(BIN)) {
    throw new Error(`${BIN} not found: the sluice CLI must be built first (npm run build)`);
  }
  if (params.kind === 'throughput') return measureThroughput();
  if (params.kind === 'rss') return measureRss(params.lines);
  throw new Error(`Unknown cell ${JSON.stringify(params)}`);
}

async function measureThroughput() {
  const server = await startServer('http');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-http-'));
  try {
    const file = writeUrls(dir, server.url, N);
    const clients = {
      autocannonCli: () =>
        runCli([AUTOCANNON_BIN, '-c', String(CONCURRENCY), '-a', String(N), server.url], {
          rss: false,
        }),
      autocannon: async () => {
        const result = await runAutocannon(server.url, N);
        if (result.non2xx > 0 || result.errors > 0) {
          throw new Error(`autocannon: ${result.non2xx} non-2xx, ${result.errors} errors`);
        }
      },
      sluice: () => runCli(fetchArgs(file), { rss: false }),
      undici: () => runLoop('undici', file),
      createRequest: () => runLoop('createRequest', file),
    };
    // Warm the server, and undici's code in this process for the reference loops.
    await runAutocannon(server.url, WARMUP);
    await runLoop('undici', file, WARMUP);
    await runLoop('createRequest', file, WARMUP);
    // The pair under test, two CLIs each started cold as a user starts them: autocannon's and
    // sluice fetch, in the order A S S A, so that a drift in the machine's speed during the run
    // weighs on both alike. Then, for reference, once each: autocannon in this process (warm,
    // its code compiled by the warm-up), and loops of CONCURRENCY workers in this process
    // through undici's own request and through sluice's createRequest.
    const runs = { autocannon: [], sluice: [], autocannonCli: [], undici: [], createRequest: [] };
    for (const kind of [
      'autocannonCli',
      'sluice',
      'sluice',
      'autocannonCli',
      'autocannon',
      'undici',
      'createRequest',
    ]) {
      await server.reset();
      const began = performance.now();
      await clients[kind]();
      const wallMs = performance.now() - began;
      const seen = await server.stats();
      if (seen.count !== N) {
        throw new Error(`${kind}: the server saw ${seen.count} requests, expected ${N}`);
      }
      runs[kind].push({
        perSec: seen.count / ((seen.last - seen.first) / 1000),
        warmPerSec: (seen.count - WARM_FROM) / ((seen.last - seen.warm) / 1000),
        wallMs,
      });
    }
    const mean = (kind, key) =>
      runs[kind].reduce((sum, run) => sum + run[key], 0) / runs[kind].length;
    const cli = mean('autocannonCli', 'perSec');
    const sluice = mean('sluice', 'perSec');
    const versus = (kind) => mean(kind, 'perSec') / cli;
    return {
      autocannonCliPerSec: cli,
      sluicePerSec: sluice,
      autocannonCliWallMs: mean('autocannonCli', 'wallMs'),
      sluiceWallMs: mean('sluice', 'wallMs'),
      ratio: sluice / cli,
      wallRatio: mean('autocannonCli', 'wallMs') / mean('sluice', 'wallMs'),
      autocannonCliWarmPerSec: mean('autocannonCli', 'warmPerSec'),
      sluiceWarmPerSec: mean('sluice', 'warmPerSec'),
      warmRatio: mean('sluice', 'warmPerSec') / mean('autocannonCli', 'warmPerSec'),
      autocannonPerSec: mean('autocannon', 'perSec'),
      autocannonWarmPerSec: mean('autocannon', 'warmPerSec'),
      autocannonWallMs: mean('autocannon', 'wallMs'),
      autocannonRatio: versus('autocannon'),
      inProcessRatio: sluice / mean('autocannon', 'perSec'),
      undiciWarmPerSec: mean('undici', 'warmPerSec'),
      createRequestWarmPerSec: mean('createRequest', 'warmPerSec'),
      undiciPerSec: mean('undici', 'perSec'),
      undiciRatio: versus('undici'),
      createRequestPerSec: mean('createRequest', 'perSec'),
      createRequestRatio: versus('createRequest'),
      summary:
        `autocannon CLI ${s.rate(cli)} req/s, sluice fetch ${s.rate(sluice)} req/s ` +
        `(${s.ratio(sluice / cli)})`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await server.close();
  }
}

/** Requests done at which the large run's peak RSS so far is read, to show where it levels. */
const CHECKPOINTS = [10_000, 100_000];

async function measureRss(lines) {
  const server = await startServer('raw');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-http-'));
  try {
    const file = writeUrls(dir, server.url, lines);
    const began = performance.now();
    const { rssKB, via, trace } = await runCli(fetchArgs(file), {
      rss: true,
      sample: async () => ({ count: (await server.stats()).count }),
    });
    const wallMs = performance.now() - began;
    const seen = await server.stats();
    if (seen.count !== lines) {
      throw new Error(`the server saw ${seen.count} requests, expected ${lines}`);
    }
    const rssMB = rssKB / 1024;
    // The peak RSS so far when the server had seen each checkpoint's count of requests.
    const byCheckpoint = {};
    for (const checkpoint of CHECKPOINTS.filter((c) => c < lines)) {
      const at = trace.find((point) => point.count >= checkpoint);
      if (at !== undefined) byCheckpoint[checkpoint] = at.hwmKB / 1024;
    }
    return {
      lines,
      rssMB,
      byCheckpoint,
      via,
      wallMs,
      perSec: lines / (wallMs / 1000),
      summary: `${s.fixed(rssMB, 1)} MB peak RSS, ${s.fixed(wallMs / 1000, 1)} s`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await server.close();
  }
}

export function report(cells, config) {
  const throughput = cells.find((cell) => cell.params.kind === 'throughput');
  const [smallLines, largeLines] = rssLines(config);
  const rssCell = (lines) =>
    cells.find((cell) => cell.params.kind === 'rss' && cell.params.lines === lines);
  const [small, large] = [rssCell(smallLines), rssCell(largeLines)];
  const ratio = s.medianOf(throughput, 'ratio');
  const rssRatio = s.medianOf(large, 'rssMB') / s.medianOf(small, 'rssMB');
  const failed = (cell) =>
    cell.errors.length > 0
      ? ` ⚠ ${cell.errors.length} failed: ${cell.errors[0].split('\n')[0]}`
      : '';
  const via = [...new Set([small, large].flatMap((cell) => cell.runs.map((run) => run.via)))];
  // Every ratio is taken within one process (the same server, the same minute), then the median.
  const row = (name, key, ratioKey, wallKey, warmKey) => [
    name,
    s.rate(s.medianOf(throughput, key)),
    ratioKey === undefined ? '1.00×' : s.ratio(s.medianOf(throughput, ratioKey)),
    s.rate(s.medianOf(throughput, warmKey)),
    wallKey === undefined ? '' : `${s.fixed(s.medianOf(throughput, wallKey) / 1000, 2)} s`,
  ];
  const processes = (n) => `${n} process${n === 1 ? '' : 'es'}`;

  const markdown = [
    `### ${title}`,
    '',
    `${s.int(N)} GET requests at concurrency ${CONCURRENCY} against a node:http server in its ` +
      `own process, answering at once (keep-alive, a 2-byte body). The pair measured is two ` +
      `command-line tools, each a child process started cold as a user starts it: autocannon 8 ` +
      `(\`autocannon -c ${CONCURRENCY} -a ${s.int(N)} URL\`) and \`sluice fetch\` over a file of ` +
      `${s.int(N)} URLs with \`-c ${CONCURRENCY} --per-host-concurrency ${CONCURRENCY} --quiet -o ` +
      `/dev/null\`, each with the V8 flags it sets for itself (autocannon none; the \`sluice\` ` +
      `executable a quarter of V8's default \`--interrupt-budget\`, so that its per-request ` +
      `code is optimized sooner, and the heap sizing described below: see ` +
      `\`src/cli/tune.ts\`). Both hit the same server in the same ` +
      `process run, in the order autocannon, ` +
      `sluice, sluice, autocannon, after a ${s.int(WARMUP)}-request warm-up of the server; the ` +
      `ratio is taken within each process, then the median over ` +
      `${processes(throughput.runs.length)}. Requests/s are counted at the server, from the first ` +
      `arrival to the last, so a tool's start-up is left out; the wall time of a run, start-up ` +
      `and exit included, is beside. The column "past the first ${s.int(WARM_FROM)}" counts from ` +
      `the arrival of request ${s.int(WARM_FROM + 1)} to the last: the rate once a client's code ` +
      `is compiled and its connections are open. For reference, once per process: autocannon ` +
      `run inside the measuring process, whose code the warm-up has already compiled (a bound ` +
      `no command started cold reaches), and the same requests from ${CONCURRENCY} workers ` +
      `looping in the measuring process through undici's \`request\` and through sluice's ` +
      `\`createRequest\` (the library without the CLI, on undici).`,
    '',
    s.table(
      [
        'client',
        'requests/s at the server',
        '× autocannon CLI',
        `requests/s past the first ${s.int(WARM_FROM)}`,
        'wall time per run',
      ],
      [
        row(
          `autocannon CLI${failed(throughput)}`,
          'autocannonCliPerSec',
          undefined,
          'autocannonCliWallMs',
          'autocannonCliWarmPerSec',
        ),
        row('sluice fetch (CLI)', 'sluicePerSec', 'ratio', 'sluiceWallMs', 'sluiceWarmPerSec'),
        row(
          'reference: autocannon in the measuring process, warm',
          'autocannonPerSec',
          'autocannonRatio',
          'autocannonWallMs',
          'autocannonWarmPerSec',
        ),
        row(
          'reference: undici request loop',
          'undiciPerSec',
          'undiciRatio',
          undefined,
          'undiciWarmPerSec',
        ),
        row(
          'reference: sluice createRequest loop',
          'createRequestPerSec',
          'createRequestRatio',
          undefined,
          'createRequestWarmPerSec',
        ),
      ],
    ),
    '',
    s.spreadNote([throughput], 'ratio', () => 'sluice fetch / autocannon CLI'),
    '',
    `Peak RSS of \`sluice fetch\` (${via.join(', ') || 'n/a'}) over ${s.int(smallLines)} and ` +
      `${s.int(largeLines)} URLs, against a bare TCP server that answers each request with a ` +
      `canned response, so that the large run is quick and the client is what is measured. ` +
      `The "by request" columns are the peak so far (VmHWM, sampled every ${SAMPLE_MS} ms) when ` +
      `the server had seen that many requests: where the peak is reached. Median of ` +
      `${processes(large.runs.length)}. The \`sluice\` executable sizes V8's heap for a ` +
      `stream: it stops the young generation at 8 MB, the size a short run reaches anyway, and ` +
      `has the old generation collected once it has grown by 30% (see \`src/cli/tune.ts\`); a ` +
      `flag given on the command line or in NODE_OPTIONS takes precedence.`,
    '',
    s.table(
      [
        'input',
        'peak RSS MB',
        ...CHECKPOINTS.map((c) => `by request ${s.int(c)}`),
        'wall time',
        'requests/s (wall)',
      ],
      [small, large].map((cell) => [
        `${s.int(cell.params.lines)} URLs${failed(cell)}`,
        s.fixed(s.medianOf(cell, 'rssMB'), 1),
        ...CHECKPOINTS.map((c) =>
          c < cell.params.lines
            ? s.fixed(s.median(cell.runs.map((run) => run.byCheckpoint[c])), 1)
            : '',
        ),
        `${s.fixed(s.medianOf(cell, 'wallMs') / 1000, 1)} s`,
        s.rate(s.medianOf(cell, 'perSec')),
      ]),
    ),
  ].join('\n');

  const targets = [
    s.target(
      ratio >= THROUGHPUT_TARGET,
      `(g) sluice fetch c=${CONCURRENCY}: ${s.percent(ratio)} of autocannon's requests/s, ` +
        `both CLIs started cold (≥ ${s.percent(THROUGHPUT_TARGET)}); past the first ` +
        `${s.int(WARM_FROM)} requests, ${s.percent(s.medianOf(throughput, 'warmRatio'))}; ` +
        `by wall time, ${s.ratio(s.medianOf(throughput, 'wallRatio'))} as fast; against ` +
        `autocannon warm in the measuring process, ${s.percent(s.medianOf(throughput, 'inProcessRatio'))}`,
    ),
    s.target(
      rssRatio <= RSS_TARGET,
      `(g) sluice fetch peak RSS, ${s.int(largeLines)} vs ${s.int(smallLines)} URLs: ` +
        `${s.ratio(rssRatio)} (≤ ${s.ratio(RSS_TARGET)})`,
    ),
  ];
  return { markdown, targets };
}

/** Writes `count` URLs, one per line, each with its own path, in chunks. */
function writeUrls(dir, url, count) {
  const file = join(dir, `urls-${count}.txt`);
  const fd = openSync(file, 'w');
  try {
    const CHUNK = 10_000;
    for (let start = 0; start < count; start += CHUNK) {
      let text = '';
      for (let i = start; i < Math.min(count, start + CHUNK); i++) text += `${url}/item/${i}\n`;
      writeSync(fd, text);
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

/** Sends the first `count` URLs of `file` from CONCURRENCY workers, reading each body. */
async function runLoop(kind, file, count = Infinity) {
  const urls = readFileSync(file, 'utf8').trimEnd().split('\n').slice(0, count);
  let send;
  let close;
  if (kind === 'undici') {
    const { Agent, request } = await import('undici');
    const agent = new Agent({ connections: CONCURRENCY });
    send = async (url) => {
      const response = await request(url, { dispatcher: agent });
      await response.body.text();
    };
    close = () => agent.close();
  } else {
    const { createRequest } = await import(SLUICE_HTTP);
    const request = createRequest({
      concurrency: CONCURRENCY,
      perOrigin: { concurrency: CONCURRENCY },
    });
    send = async (url) => {
      const response = await request(url);
      await response.body.text();
    };
    close = () => request.close();
  }
  let next = 0;
  const worker = async () => {
    while (next < urls.length) await send(urls[next++]);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  await close();
}

async function runAutocannon(url, amount) {
  const { default: autocannon } = await import('autocannon');
  return autocannon({ url, connections: CONCURRENCY, amount });
}

let timeBin;
/** `/usr/bin/time` when it is GNU time (it takes `-f %M -o FILE`), else undefined. */
function gnuTime() {
  if (timeBin === undefined) {
    timeBin = '';
    for (const candidate of ['/usr/bin/time']) {
      try {
        execFileSync(candidate, ['-f', '%M', 'true'], { stdio: 'ignore' });
        timeBin = candidate;
        break;
      } catch {
        // not there, or not GNU time
      }
    }
  }
  return timeBin === '' ? undefined : timeBin;
}

/** The VmHWM (peak RSS so far) of a live process, in KB; undefined once it has ended. */
function readHwm(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
    return Number.isFinite(kb) ? kb : undefined;
  } catch {
    return undefined;
  }
}

/** The pid of the (only) child of `pid`: node under /usr/bin/time. */
function childOf(pid) {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ')[0];
    return first === '' || first === undefined ? undefined : Number(first);
  } catch {
    return undefined;
  }
}

const SAMPLE_MS = 200;

/**
 * Runs `node ...args` to its end; rejects on a failure. With `rss`, resolves to its peak RSS in
 * KB, how it was read, and a trace: every SAMPLE_MS, the VmHWM next to what `sample()` returns
 * (the server's count, so that the peak can be read against the requests done).
 */
async function runCli(args, { rss, sample }) {
  const time = rss ? gnuTime() : undefined;
  const rssFile = join(tmpdir(), `sluice-bench-rss-${process.pid}-${Date.now()}`);
  const [command, commandArgs] =
    time === undefined
      ? [process.execPath, args]
      : [time, ['-f', '%M', '-o', rssFile, process.execPath, ...args]];
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = once(child, 'exit');
  let running = true;
  let hwmKB = 0;
  const trace = [];
  const tracing = rss
    ? (async () => {
        while (running) {
          await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
          const pid = time === undefined ? child.pid : childOf(child.pid);
          const kb = pid === undefined ? undefined : readHwm(pid);
          if (kb === undefined) continue;
          hwmKB = Math.max(hwmKB, kb);
          if (sample !== undefined && running) trace.push({ ...(await sample()), hwmKB: kb });
        }
      })()
    : undefined;
  const [code, signal] = await exited;
  running = false;
  await tracing;
  if (code !== 0) {
    rmSync(rssFile, { force: true });
    throw new Error(`${args[0]} exited with ${code ?? signal}: ${stderr.trim()}`);
  }
  if (!rss) return {};
  if (time === undefined) {
    return { rssKB: hwmKB, via: `VmHWM polled every ${SAMPLE_MS} ms`, trace };
  }
  const text = readFileSync(rssFile, 'utf8');
  rmSync(rssFile, { force: true });
  return { rssKB: Number(text.trim().split('\n').at(-1)), via: '/usr/bin/time -f %M', trace };
}

/** Forks this file as a server of `kind`; resolves once it listens. */
async function startServer(kind) {
  const child = fork(SELF, ['serve', kind], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const [{ port }] = await once(child, 'message');
  const ask = async (cmd) => {
    child.send({ cmd });
    const [reply] = await once(child, 'message');
    return reply;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    reset: () => ask('reset'),
    stats: () => ask('stats'),
    async close() {
      child.kill();
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    },
  };
}

/** The server process: counts requests, and when the first and the last arrived. */
function serve(kind) {
  let count = 0;
  let first = 0;
  let warm = 0;
  let last = 0;
  const arrive = () => {
    last = performance.now();
    if (count === 0) first = last;
    else if (count === WARM_FROM) warm = last;
    count++;
  };
  let server;
  if (kind === 'http') {
    server = createHttpServer({ keepAlive: true, keepAliveTimeout: 60_000 }, (_req, res) => {
      arrive();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    });
  } else if (kind === 'raw') {
    const response = Buffer.from(
      'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n' +
        'Connection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\nok',
    );
    // Requests without a body end at a blank line; count those, across chunk boundaries.
    server = createTcpServer((socket) => {
      let tail = '';
      socket.setNoDelay(true);
      socket.on('error', () => undefined);
      socket.on('data', (chunk) => {
        const text = tail + chunk.toString('latin1');
        let n = 0;
        for (let at = text.indexOf('\r\n\r\n'); at !== -1; at = text.indexOf('\r\n\r\n', at + 4))
          n++;
        tail = text.slice(-3);
        if (n === 0) return;
        for (let i = 0; i < n; i++) arrive();
        socket.write(n === 1 ? response : Buffer.concat(new Array(n).fill(response)));
      });
    });
  } else {
    throw new Error(`Unknown server kind ${kind}`);
  }
  server.listen(0, '127.0.0.1', () => {
    process.send({ port: server.address().port });
  });
  process.on('message', ({ cmd }) => {
    if (cmd === 'reset') {
      count = 0;
      first = 0;
      warm = 0;
      last = 0;
      process.send({ ok: true });
    } else if (cmd === 'stats') {
      process.send({ count, first, warm, last });
    }
  });
  process.on('disconnect', () => process.exit(0));
}
