/**
 * `sluice demo --fleet`: one limit shared by a fleet of processes. Starts a `redis-server` of its
 * own on a free port (nothing saved to disk), the demo API (5 requests at once, 1000 a second), and
 * three worker processes (fleet-worker.ts) that fetch 300 posts, 100 each, all at once: first
 * through one `RedisSemaphore` and one `RedisRateLimiter` they share, then each through limits of
 * its own. Prints what the server saw each time.
 *
 * Each run gets a fresh API server (fresh counts, a full token bucket); the workers and Redis are
 * started once. Workers do not retry, so that every refusal shows; they start each run together,
 * on a message sent to all three once all are ready, so that their runs overlap.
 *
 * Invariants: every process it starts (redis-server, the workers) is stopped before it returns,
 * on success, on failure and on Ctrl-C (SIGTERM, then SIGKILL after a grace), and waited for; the
 * workers also exit when their channel to this process closes, so they never outlive it.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import { later } from '../_clock.ts';
import type { CliIo } from '../cli/io.ts';
import { rejections, seconds } from './run.ts';
import { startDemoServer, type DemoServerStats } from './server.ts';
import type { WorkerConfig, WorkerResult, WorkerRun } from './fleet-worker.ts';

const WORKERS = 3;
const POSTS_EACH = 100;
const POSTS = WORKERS * POSTS_EACH;
const CONCURRENCY = 5;
/**
 * A rate the shared limit keeps too, but that never binds here (300 requests fit in its bucket):
 * starts spaced 1 ms apart still put 5 requests in flight at once, so the peak shows the limit.
 */
const RATE = 1000;
/** How long the API takes to answer, or to refuse: 5 at once make 250 a second. */
const DELAY_MS = 20;
/** How long a process may take to exit once asked (SIGTERM), before it is killed (SIGKILL). */
const GRACE_MS = 2000;
/** How long redis-server and the workers may take to be ready. */
const START_MS = 30_000;

/** The exit code when `redis-server` is not on the PATH (as a shell's for a command not found). */
export const NO_REDIS_SERVER = 127;
const INSTALL =
  'sluice: demo --fleet needs redis-server, which is not on the PATH: install it ' +
  '(apt-get install redis-server, or brew install redis) and run it again';

/** Thrown where a run cannot go on; its message is the one line to print. */
class DemoError extends Error {}

/** The last line a process wrote to a stream (kept for an error message). */
function lastLine(stream: NodeJS.ReadableStream | null): () => string {
  let last = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    const lines = chunk.split('\n').filter((line) => line.trim() !== '');
    if (lines.length > 0) last = lines[lines.length - 1]!.trim();
  });
  return () => last;
}

/** Resolves once the process has exited (at once if it has, or never started). */
function exited(child: ChildProcess): Promise<void> {
  // A process that could not be spawned has no pid, and never exits.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve();
  }
  return once(child, 'exit').then(() => undefined);
}

/** Asks a process to exit, kills it if it has not within the grace, and waits for it. */
async function stop(child: ChildProcess): Promise<void> {
  const done = exited(child);
  child.kill('SIGTERM');
  const kill = later(GRACE_MS, () => child.kill('SIGKILL'));
  await done;
  kill();
}

/** Rejects with a DemoError after `ms`; `cancel` it once what it bounds is done. */
function deadline(ms: number, what: string): { expired: Promise<never>; cancel: () => void } {
  let cancel!: () => void;
  const expired = new Promise<never>((_, reject) => {
    cancel = later(ms, () => {
      reject(new DemoError(`sluice: demo --fleet: ${what}`));
    });
  });
  expired.catch(() => undefined);
  return { expired, cancel };
}

/** A free TCP port on 127.0.0.1 (free when asked: redis-server is started at once on it). */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** Whether a Redis answers PING on the port. */
async function answers(url: string): Promise<boolean> {
  const client = createClient({
    url,
    maintNotifications: 'disabled',
    socket: { reconnectStrategy: false },
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.destroy();
  }
}

/**
 * The processes of a run, to stop at its end whatever happens. Once stopped, it starts no other:
 * after a Ctrl-C, what is left of the run (still awaiting a step) fails instead of starting one.
 */
class Processes {
  readonly #children = new Set<ChildProcess>();
  #stopped = false;

  spawn(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
    if (this.#stopped) throw new DemoError('sluice: demo --fleet: stopped');
    const child = spawn(command, args, options);
    this.#children.add(child);
    child.on('error', () => undefined); // a failed spawn is read from 'spawn' / 'error' by callers
    return child;
  }

  /** Stops every one, workers first (they use Redis up to the end). */
  async stopAll(): Promise<void> {
    this.#stopped = true;
    const children = [...this.#children].reverse();
    this.#children.clear();
    for (const child of children) await stop(child);
  }
}

/** A redis-server started on a free port; throws a DemoError when it cannot be started. */
async function startRedis(
  processes: Processes,
  env: CliIo['env'],
): Promise<{ url: string; port: number; pid: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = processes.spawn(
      'redis-server',
      [
        ...['--port', String(port), '--bind', '127.0.0.1'],
        ...['--save', '', '--appendonly', 'no', '--dir', tmpdir()],
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const [spawned] = (await Promise.race([
      once(child, 'spawn').then(() => [undefined]),
      once(child, 'error'),
    ])) as [NodeJS.ErrnoException | undefined];
    if (spawned?.code === 'ENOENT') throw new DemoError(INSTALL);
    if (spawned !== undefined) {
      throw new DemoError(`sluice: demo --fleet: redis-server could not start: ${spawned.message}`);
    }
    const said = lastLine(child.stdout);
    child.stderr?.resume();
    const url = `redis://127.0.0.1:${port}`;
    const started = performance.now();
    while (child.exitCode === null && child.signalCode === null) {
      if (await answers(url)) return { url, port, pid: child.pid! };
      if (performance.now() - started > START_MS) {
        throw new DemoError(`sluice: demo --fleet: redis-server did not answer on ${url}`);
      }
      await new Promise<void>((resolve) => later(20, resolve));
    }
    // Its port was taken meanwhile: try another, twice.
    if (attempt === 3) {
      throw new DemoError(`sluice: demo --fleet: redis-server exited: ${said() || 'no output'}`);
    }
  }
}

/** A worker process, and its answers in the order it sends them. */
class Worker {
  readonly #child: ChildProcess;
  readonly #stderr: () => string;
  readonly #answers: { resolve: (value: unknown) => void; reject: (error: Error) => void }[] = [];
  #failure: DemoError | undefined;

  constructor(processes: Processes, env: CliIo['env'], config: WorkerConfig) {
    const entry = fileURLToPath(
      new URL(`./fleet-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url),
    );
    // From the sources (npm run demo:fleet), the worker is TypeScript too.
    const loader = entry.endsWith('.ts') ? ['--import', import.meta.resolve('tsx')] : [];
    this.#child = processes.spawn(process.execPath, [...loader, entry, JSON.stringify(config)], {
      env,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.#stderr = lastLine(this.#child.stderr);
    this.#child.on('message', (message: unknown) => {
      const error = (message as { error?: string }).error;
      if (error === undefined) this.#answers.shift()?.resolve(message);
      else this.#answers.shift()?.reject(new DemoError(`sluice: demo --fleet: ${error}`));
    });
    this.#child.on('exit', (code, signal) => {
      const line = this.#stderr();
      this.#failure = new DemoError(
        `sluice: demo --fleet: a worker exited (${signal ?? `code ${code}`})${line === '' ? '' : `: ${line}`}`,
      );
      for (const answer of this.#answers.splice(0)) answer.reject(this.#failure);
    });
  }

  /** The next message the worker sends. */
  #next<T>(): Promise<T> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise<T>((resolve, reject) => {
      this.#answers.push({ resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /** Resolves once the worker is connected to Redis. */
  ready(): Promise<unknown> {
    return this.#next();
  }

  run(run: WorkerRun): Promise<WorkerResult> {
    const answer = this.#next<WorkerResult>();
    // A channel closed meanwhile: the 'exit' that closed it rejects the answer.
    if (this.#child.connected) this.#child.send(run);
    return answer;
  }

  /** Closes the channel: the worker closes its Redis connection and exits. */
  async end(): Promise<void> {
    if (this.#child.connected) this.#child.disconnect();
    await exited(this.#child);
  }
}

/** How to close the API servers running now (each closes once, however often asked). */
type Servers = Set<() => Promise<void>>;

interface Pass {
  stats: DemoServerStats;
  results: WorkerResult[];
  ms: number;
}

/** Runs the workers once, together, against a fresh API server. */
async function pass(workers: Worker[], shared: boolean, servers: Servers): Promise<Pass> {
  const server = await startDemoServer({
    concurrency: CONCURRENCY,
    rate: RATE,
    burst: RATE,
    delayMs: DELAY_MS,
    refuseDelayMs: DELAY_MS,
  });
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => (closed ??= server.close());
  servers.add(close);
  try {
    const started = performance.now();
    const results = await Promise.all(workers.map((w) => w.run({ api: server.url, shared })));
    return { stats: server.stats(), results, ms: performance.now() - started };
  } finally {
    await close();
    servers.delete(close);
  }
}

/**
 * Runs the fleet demo, writing plain text to `io.stdout`. Resolves to 0 when, through the shared
 * limit, every post was fetched, the server refused none and never saw more than its limit at
 * once; 1 otherwise or on a failure (one line on stderr); 130 on Ctrl-C; {@link NO_REDIS_SERVER}
 * when `redis-server` is not on the PATH.
 */
export async function runFleetDemo(io: CliIo): Promise<number> {
  const processes = new Processes();
  const servers: Servers = new Set();
  let interrupt!: () => void;
  const interrupted = new Promise<'interrupted'>((resolve) => {
    interrupt = () => {
      resolve('interrupted');
    };
  });
  const unsubscribe = io.onInterrupt(interrupt);
  const demo = fleet(io, processes, servers);
  demo.catch(() => undefined); // after an interrupt, what is left of it fails: nobody waits for it
  // What to say, once everything is stopped.
  let said = '';
  try {
    const outcome = await Promise.race([demo, interrupted]);
    if (outcome !== 'interrupted') return outcome;
    said = 'sluice: demo --fleet interrupted: redis-server and the workers stopped';
    return 130;
  } catch (error) {
    if (!(error instanceof DemoError)) throw error;
    said = error.message;
    return error.message === INSTALL ? NO_REDIS_SERVER : 1;
  } finally {
    await processes.stopAll();
    await Promise.all([...servers].map((close) => close()));
    unsubscribe();
    if (said !== '') io.stderr.write(`${said}\n`);
  }
}

async function fleet(io: CliIo, processes: Processes, servers: Servers): Promise<number> {
  const print = (line = ''): void => {
    io.stdout.write(`${line}\n`);
  };
  const row = (name: string, value: string): void => {
    print(`  ${name.padEnd(16)}${value}`);
  };

  const redis = await startRedis(processes, io.env);
  print(
    `${WORKERS} worker processes fetch ${POSTS} posts (${POSTS_EACH} each, all at once) from a ` +
      `local API that`,
  );
  print(
    `answers in ${DELAY_MS} ms and refuses more than ${CONCURRENCY} requests at once (503) or ` +
      `more than ${RATE} a second`,
  );
  print(`(429). The workers do not retry: every refusal shows.`);
  print(
    `redis-server on 127.0.0.1:${redis.port} (pid ${redis.pid}), nothing saved to disk, ` +
      `stopped at the end.`,
  );
  print();

  const name = 'demo';
  const workers = Array.from(
    { length: WORKERS },
    (_, i) =>
      new Worker(processes, io.env, {
        redis: redis.url,
        name,
        concurrency: CONCURRENCY,
        rate: RATE,
        first: i * POSTS_EACH + 1,
        count: POSTS_EACH,
      }),
  );
  const start = deadline(START_MS, 'the workers did not start');
  try {
    await Promise.race([Promise.all(workers.map((w) => w.ready())), start.expired]);
  } finally {
    start.cancel();
  }

  const report = ({ stats, results, ms }: Pass, limit: string): void => {
    const fetched = results.reduce((sum, r) => sum + r.fetched, 0);
    const failed = results.reduce((sum, r) => sum + r.failed, 0);
    row(
      'fetched',
      `${fetched} of ${POSTS} (${results.map((r) => r.fetched).join(' + ')}, one per worker)`,
    );
    row('peak in flight', `${stats.peakInFlight}, seen by the server (${limit})`);
    row('rejections', rejections(stats));
    row('makespan', seconds(ms));
    if (failed > 0) row('failed', `${failed} (network errors)`);
  };

  print(`Through one limit shared in Redis: in each worker,`);
  print(`  const semaphore = new RedisSemaphore(redis, '${name}', { permits: ${CONCURRENCY} });`);
  print(`  const rate = new RedisRateLimiter(redis, '${name}', '${RATE}/s');`);
  print(`  createFetch({ originGates: () => ({ concurrency: semaphore, rate }), retry: 0 })`);
  const shared = await pass(workers, true, servers);
  report(shared, `limit ${CONCURRENCY}`);
  print();

  print(`Without Redis, each worker with limits of its own:`);
  print(
    `  createFetch({ perOrigin: { concurrency: ${CONCURRENCY}, rate: '${RATE}/s' }, retry: 0 })`,
  );
  const alone = await pass(workers, false, servers);
  report(
    alone,
    `limit ${CONCURRENCY}; ${WORKERS} workers × ${CONCURRENCY} = ${WORKERS * CONCURRENCY}`,
  );
  print();

  await Promise.all(workers.map((w) => w.end()));
  await processes.stopAll();
  print(`redis-server stopped.`);

  const ok =
    shared.results.every((r) => r.fetched === POSTS_EACH && r.failed === 0) &&
    shared.stats.rejections === 0 &&
    shared.stats.peakInFlight <= CONCURRENCY;
  return ok ? 0 : 1;
}
