/**
 * `sluice fetch --redis`: real `sluice` processes sharing their limits through a real
 * `redis-server` (test/_helpers/redis.ts), against an HTTP server on 127.0.0.1 that counts the
 * requests in flight and when each arrived. Bounds on time are generous: the machine is shared.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { RedisSemaphore } from '../src/redis/index.ts';
import { cli, indexes, parseRecords, range, spawnCli, tempDir, until } from './cli-helpers.ts';
import { needsRedis, RedisServer } from './_helpers/redis.ts';

/** One request the counting server saw. */
interface Arrival {
  at: number;
  path: string;
  worker: string;
}

/** An HTTP server that counts requests in flight (its peak) and records each arrival. */
interface CountingServer {
  url: string;
  peak: number;
  arrivals: Arrival[];
  /** When each request arrived and when its response was done. */
  spans: [number, number][];
  close(): Promise<void>;
}

/** The most requests in flight at once over `spans` (an end before a start at the same instant). */
function peakOf(spans: readonly [number, number][]): number {
  const events = spans.flatMap(([start, end]) => [
    [start, 1],
    [end, -1],
  ]);
  events.sort((x, y) => x[0]! - y[0]! || x[1]! - y[1]!);
  let now = 0;
  let peak = 0;
  for (const [, step] of events) peak = Math.max(peak, (now += step!));
  return peak;
}

/**
 * Answers each request after `delayMs`; `answer(req, res)` may answer first (returns true).
 */
async function countingServer(
  delayMs: number,
  answer?: (req: IncomingMessage, res: ServerResponse, server: CountingServer) => boolean,
): Promise<CountingServer> {
  let inFlight = 0;
  const http = createServer((req, res) => {
    inFlight++;
    state.peak = Math.max(state.peak, inFlight);
    state.arrivals.push({
      at: performance.now(),
      path: req.url ?? '',
      worker: String(req.headers['x-worker'] ?? ''),
    });
    const start = performance.now();
    res.on('close', () => {
      inFlight--;
      state.spans.push([start, performance.now()]);
    });
    if (answer?.(req, res, state) === true) return;
    setTimeout(() => res.end('ok'), delayMs);
  });
  const state: CountingServer = {
    url: '',
    peak: 0,
    arrivals: [],
    spans: [],
    close: async () => {
      http.closeAllConnections();
      await new Promise<void>((resolve) => {
        http.close(() => {
          resolve();
        });
      });
    },
  };
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  return state;
}

const dir = tempDir();

/**
 * A port where nothing listens: a privileged one, which no test's server can take (a free port
 * asked for here could be given to a Redis another test starts meanwhile).
 */
const REFUSED = 1;

/** A file of `n` URLs on `server`, under `/<tag>/<i>`. */
function urls(server: CountingServer, tag: string, n: number): string {
  return dir.file(
    `${tag}.txt`,
    range(n).map((i) => `${server.url}/${tag}/${i}`),
  );
}

/** Runs `sluice fetch` in `count` processes at once; each gets `args(i)`. */
async function fleet(
  count: number,
  args: (i: number) => string[],
): Promise<{ code: number | null; stdout: string; stderr: string }[]> {
  return Promise.all(range(count).map((i) => spawnCli(['fetch', '-q', ...args(i)]).done));
}

/** Checks that a process wrote exactly one record per line, each ok. */
function allOk(run: { code: number | null; stdout: string; stderr: string }, lines: number): void {
  const records = parseRecords(run.stdout);
  assert.deepEqual(indexes(records), range(lines), run.stderr);
  assert.equal(run.code, 0, `${run.stderr}\n${run.stdout.slice(0, 500)}`);
  for (const record of records) assert.equal(record.ok, true, JSON.stringify(record));
}

describe('sluice fetch --redis', needsRedis, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await redis.stop();
    dir.remove();
  });

  describe('shares its limits between processes', { concurrency: true }, () => {
    it('three processes never exceed their shared -c and --per-host-concurrency, and reach them; SLUICE_REDIS_URL, the flag first', async () => {
      const [a, b] = await Promise.all([countingServer(40), countingServer(40)]);
      try {
        // Two origins, 2 at a time each, 3 at a time in all: each limit binds.
        const input = dir.file(
          'c.txt',
          range(40).map((i) => `${i % 2 === 0 ? a.url : b.url}/c/${i}`),
        );
        // No --name: -c is named from the first origin, --per-host-* by each origin.
        const limits = ['-c', '3', '--per-host-concurrency', '2', input];
        const [flag, env, both] = await Promise.all([
          spawnCli(['fetch', '-q', '--redis', redis.url, ...limits]).done,
          spawnCli(['fetch', '-q', ...limits], { env: { SLUICE_REDIS_URL: redis.url } }).done,
          spawnCli(['fetch', '-q', '--redis', redis.url, ...limits], {
            env: { SLUICE_REDIS_URL: 'not a url' },
          }).done,
        ]);
        for (const run of [flag, env, both]) allOk(run, 40);
        assert.equal(a.arrivals.length + b.arrivals.length, 120);
        assert.deepEqual([a.peak, b.peak], [2, 2]);
        assert.equal(peakOf([...a.spans, ...b.spans]), 3);
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    it("-c auto: two processes keep each origin's adaptive limit in Redis, within the shared ceiling", async () => {
      const server = await countingServer(20);
      try {
        const input = urls(server, 'auto', 30);
        const runs = await fleet(2, () => [
          ...['-c', 'auto', '--max-concurrency', '6'],
          ...['--redis', redis.url, '--name', 'auto-shared', input],
        ]);
        for (const run of runs) allOk(run, 30);
        assert.equal(server.arrivals.length, 60);
        // --max-concurrency is the global ceiling, shared like -c.
        assert.ok(server.peak <= 6, `peak ${server.peak}`);
        const key = `sluice:{auto-shared}:adaptive:${encodeURIComponent(server.url)}`;
        assert.equal(await redis.command(`EXISTS ${key}`), ':1', `${key} in Redis`);
        assert.ok(Number((await redis.command(`PTTL ${key}`)).slice(1)) > 0, 'with a TTL');
      } finally {
        await server.close();
      }
    });

    it('a shared --rate holds across three processes', async () => {
      const server = await countingServer(0);
      try {
        const input = urls(server, 'rate', 15);
        const runs = await fleet(3, () => [
          '--redis',
          redis.url,
          '--name',
          'shared-rate',
          '--rate',
          '15/s',
          input,
        ]);
        for (const run of runs) allOk(run, 15);
        const times = server.arrivals.map((a) => a.at).sort((a, b) => a - b);
        assert.equal(times.length, 45);
        // In any second, at most 15 starts (a few more for the way from Redis to the server).
        let most = 0;
        for (let i = 0, j = 0; i < times.length; i++) {
          while (times[i]! - times[j]! >= 1000) j++;
          most = Math.max(most, i - j + 1);
        }
        assert.ok(most <= 18, `${most} starts in one second`);
        // Alone, each process would have sent its 15 in its first second.
        assert.ok(
          times.at(-1)! - times[0]! >= 1500,
          `45 starts in ${times.at(-1)! - times[0]!} ms`,
        );
      } finally {
        await server.close();
      }
    });

    it("a 429 with Retry-After that one process gets pauses the other's requests to that origin", async () => {
      let refusedAt = Infinity;
      let seenOther = 0;
      const server = await countingServer(30, (req, res) => {
        if (req.headers['x-worker'] === '1') seenOther++;
        // Once both run, and the other has most of its lines still to send.
        if (refusedAt !== Infinity || req.headers['x-worker'] !== '0' || seenOther === 0)
          return false;
        if (seenOther > 20) return false;
        refusedAt = performance.now();
        res.statusCode = 429;
        res.setHeader('retry-after', '3');
        res.end();
        return true;
      });
      try {
        const input = urls(server, 'pause', 80);
        const runs = await fleet(2, (i) => [
          '--redis',
          redis.url,
          '--name',
          'shared-pause',
          '-c',
          '2',
          '-H',
          `x-worker: ${i}`,
          input,
        ]);
        for (const run of runs) allOk(run, 80);
        assert.ok(refusedAt !== Infinity, 'the 429 was sent');
        // The other process's requests stop for the pause (3 s from when the pause reached
        // Redis, what it had booked before hearing of it aside); alone, it would go on sending
        // one every few tens of ms.
        const other = server.arrivals
          .filter((a) => a.worker === '1' && a.at >= refusedAt - 200)
          .map((a) => a.at);
        let gap = 0;
        for (let i = 1; i < other.length; i++) gap = Math.max(gap, other[i]! - other[i - 1]!);
        assert.ok(gap >= 2000, `the longest wait of the other process after the 429: ${gap} ms`);
      } finally {
        await server.close();
      }
    });
  });

  describe('errors', { concurrency: true }, () => {
    /** Runs the CLI in this process and checks it printed one line and returned `code`. */
    async function oneLine(argv: string[], code: number, env?: Record<string, string>) {
      const started = performance.now();
      const run = await cli(['fetch', '-q', ...argv], { stdin: 'http://127.0.0.1:1/x\n', env });
      const ms = performance.now() - started;
      assert.equal(run.code, code, `${argv.join(' ')}: ${run.stderr}`);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, /^sluice: [^\n]+\n$/, argv.join(' '));
      return { stderr: run.stderr, ms };
    }

    it('a --redis that is not a redis:// or rediss:// URL is a usage error, its password masked', async () => {
      for (const url of ['http://user:hunter2@127.0.0.1:6379', 'redis//nope', '', ':']) {
        const { stderr } = await oneLine(['--redis', url], 2);
        assert.match(stderr, /^sluice: --redis: expected a URL like redis:\/\//);
        assert.doesNotMatch(stderr, /hunter2/);
      }
      const { stderr } = await oneLine([], 2, { SLUICE_REDIS_URL: 'https://:hunter2@x' });
      assert.match(stderr, /--redis: .*"https:\/\/:\*\*\*@x" \(from SLUICE_REDIS_URL\)/);
    });

    it('--help documents --redis, SLUICE_REDIS_URL and --name', async () => {
      const run = await cli(['fetch', '--help']);
      assert.equal(run.code, 0);
      assert.match(run.stdout, /--redis <url> +share -c, --rate, --per-host-\*/);
      assert.match(run.stdout, /\$SLUICE_REDIS_URL/);
      assert.match(run.stdout, /--name <name> +with --redis, the name shared limits go by/);
    });

    it('--name without --redis, and a --name with braces are usage errors', async () => {
      assert.match((await oneLine(['--name', 'api'], 2)).stderr, /--name .*use it with --redis/);
      assert.match(
        (await oneLine(['--name', 'a{b}', '--redis', redis.url], 2)).stderr,
        /--name: expected a non-empty name without braces, got "a\{b\}"/,
      );
    });

    it('a Redis that cannot be used is one line and exit 1, within seconds', async () => {
      const locked = await RedisServer.start({ password: 'right-one' });
      const paused = await RedisServer.start();
      paused.pause();
      try {
        const [refused, wrong, silent] = await Promise.all([
          oneLine(['--redis', `redis://127.0.0.1:${REFUSED}`], 1),
          oneLine(['--redis', `redis://:wrong-one@127.0.0.1:${locked.port}`], 1),
          oneLine(['--redis', paused.url], 1),
        ]);
        assert.match(
          refused.stderr,
          /^sluice: cannot use Redis at redis:\/\/127\.0\.0\.1:\d+ \(--redis\): .*ECONNREFUSED/,
        );
        assert.match(
          wrong.stderr,
          /cannot use Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ \(--redis\): .*WRONGPASS|invalid/i,
        );
        assert.doesNotMatch(wrong.stderr, /wrong-one/);
        assert.match(silent.stderr, /cannot use Redis at .*: no answer within 3 s/);
        // A connection gets 3 s; the rest is a busy machine loading node-redis.
        for (const { ms } of [refused, wrong, silent]) assert.ok(ms < 15_000, `${ms} ms`);
      } finally {
        paused.resume();
        await Promise.all([locked.stop(), paused.stop()]);
      }
    });

    it('the spawned CLI exits at once after an unreachable Redis (no reconnecting)', async () => {
      const run = await spawnCli(['fetch', '-q', '--redis', `redis://127.0.0.1:${REFUSED}`], {
        stdin: 'http://127.0.0.1:1/x\n',
      }).done;
      assert.equal(run.code, 1);
      assert.equal(run.stdout, '');
      assert.equal(run.stderr.split('\n').length, 2, run.stderr);
    });

    /**
     * Runs `sluice fetch --redis` on a Redis of its own over `lines` lines at -c 2, does
     * `fail(redis)` once some records are out, and checks that every line still gets one record
     * and the process ends with 1; resolves to the records.
     */
    async function failMidRun(
      tag: string,
      lines: number,
      fail: (redis: RedisServer) => Promise<void> | void,
    ): Promise<Record<string, unknown>[]> {
      const own = await RedisServer.start();
      const server = await countingServer(20);
      try {
        const input = urls(server, tag, lines);
        const args = ['fetch', '-q', '--retries', '0', '--redis', own.url, '-c', '2', input];
        const spawned = spawnCli(args);
        await until(() => spawned.stdoutSoFar().split('\n').length > 10, 15_000, 'some records');
        await fail(own);
        const run = await spawned.done;
        const records = parseRecords(run.stdout);
        assert.deepEqual(indexes(records), range(lines), run.stderr);
        assert.equal(run.code, 1);
        return records;
      } finally {
        own.resume();
        await Promise.all([own.stop(), server.close()]);
      }
    }

    it('a Redis lost mid-run: every line still gets one record, and the process ends', async () => {
      const records = await failMidRun('lost', 60, (own) => own.kill());
      assert.ok(records.some((r) => r.ok === false));
    });

    it(
      'a Redis gone silent mid-run: every line gets a record within seconds, not a timeout per request',
      { timeout: 60_000 },
      async () => {
        // A request waiting for its 2 s command timeout per line (two at a time) would take
        // minutes; once one has waited that long, the rest fail at once.
        const records = await failMidRun('silent', 300, (own) => {
          own.pause();
        });
        const silent = records.filter((r) =>
          /Redis has not answered for \d+ms: not sent/.test(String(r.error)),
        );
        assert.ok(silent.length > 200, `${silent.length} failed at once`);
      },
    );

    it('Ctrl-C: what runs finishes or is cancelled, every line is recorded, Redis released', async () => {
      const server = await countingServer(300);
      try {
        const input = urls(server, 'int', 40);
        const spawned = spawnCli(
          ['fetch', '-q', '--redis', redis.url, '--name', 'int', '-c', '2', input],
          {
            env: { SLUICE_GRACE_MS: '100' },
          },
        );
        await until(() => server.arrivals.length >= 3, 15_000, 'requests');
        spawned.child.kill('SIGINT');
        const run = await spawned.done;
        assert.equal(run.code, 130, run.stderr);
        assert.deepEqual(indexes(parseRecords(run.stdout)), range(40));
        // Its permits were given back, not left to expire: all of -c is free at once.
        const client = await createClient({ url: redis.url }).connect();
        const sem = new RedisSemaphore(client, 'int', { permits: 2 });
        try {
          const all = await sem.tryAcquireAsync(2);
          assert.ok(all !== undefined, 'the 2 permits of -c are free');
          all.release();
        } finally {
          await sem.close();
          client.destroy();
        }
      } finally {
        await server.close();
      }
    });
  });
});
