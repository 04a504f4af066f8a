/**
 * `sluice demo --fleet`: run as the command is (a process of its own, on a real redis-server),
 * its output read back — through the shared limit every post fetched, nothing refused, the
 * server's peak at the limit; without it, a higher peak and refusals — and no process of its left
 * behind, whether it ends or is interrupted midway. Without redis-server on the PATH: one line
 * saying how to install it, and exit code 127. And the demo API's slow refusals, which the fleet
 * demo uses so that a refused request shows in the server's peak.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import type { CliIo } from '../src/cli/io.ts';
import { main } from '../src/cli/main.ts';
import { NO_REDIS_SERVER } from '../src/demo/fleet.ts';
import { startDemoServer } from '../src/demo/server.ts';
import { needsRedis } from './_helpers/redis.ts';

const ROOT = new URL('..', import.meta.url);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `sluice demo --fleet` in a process of its own; `onStdout` sees the output so far and may
 * interrupt it.
 */
async function demo(onStdout?: (stdout: string, interrupt: () => void) => void): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'demo', '--fleet'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { code: null, signal: null, stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    run.stdout += chunk;
    onStdout?.(run.stdout, () => child.kill('SIGINT'));
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    run.stderr += chunk;
  });
  [run.code, run.signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  return run;
}

/** The redis-server's pid and port, as the demo printed them. */
function redisOf(stdout: string): { pid: number; port: number } {
  const match = /redis-server on 127\.0\.0\.1:(\d+) \(pid (\d+)\)/.exec(stdout);
  assert.ok(match !== null, `no redis-server line in:\n${stdout}`);
  return { port: Number(match[1]), pid: Number(match[2]) };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    assert.equal((error as NodeJS.ErrnoException).code, 'ESRCH');
    return false;
  }
}

/** Processes whose command line names the fleet worker and the demo's Redis port (Linux). */
function workersOf(port: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return []; // not Linux: the redis-server check stands alone
  }
  return entries
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return cmdline.includes('fleet-worker') && cmdline.includes(`127.0.0.1:${port}`);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** A section's row: `  name   value`. */
function row(section: string, name: string): string {
  const match = new RegExp(`^ {2}${name} +(.*)$`, 'm').exec(section);
  assert.ok(match !== null, `no "${name}" in:\n${section}`);
  return match[1]!;
}

describe('sluice demo --fleet', needsRedis, () => {
  it('fetches 300 posts through one shared limit with no refusal at its peak, then shows three times the limit refused', async () => {
    const run = await demo();
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.equal(run.stderr, '');
    const redis = redisOf(run.stdout);
    const [, shared = '', alone = ''] = run.stdout.split(/^(?:Through|Without) /m);
    assert.match(shared, /^one limit shared in Redis/);
    assert.match(row(shared, 'fetched'), /^300 of 300 \(100 \+ 100 \+ 100,/);
    assert.equal(row(shared, 'rejections'), '0');
    assert.match(row(shared, 'peak in flight'), /^5, seen by the server \(limit 5\)$/);

    assert.match(alone, /^Redis, each worker with limits of its own/);
    const peak = Number(/^(\d+),/.exec(row(alone, 'peak in flight'))?.[1]);
    assert.ok(peak > 5 && peak <= 15, `peak without Redis: ${peak}`);
    const refused = /^(\d+): \1 × 503 Service Unavailable$/.exec(row(alone, 'rejections'));
    assert.ok(refused !== null, alone);
    const fetched = Number(/^(\d+) of 300/.exec(row(alone, 'fetched'))?.[1]);
    assert.equal(fetched + Number(refused[1]), 300, alone);

    assert.match(run.stdout, /redis-server stopped\.\n$/);
    assert.equal(alive(redis.pid), false, `redis-server ${redis.pid} left behind`);
    assert.deepEqual(workersOf(redis.port), []);
  });

  it('stops redis-server and the workers on Ctrl-C midway, and exits 130', async () => {
    let interrupted = false;
    const run = await demo((stdout, interrupt) => {
      // Midway: the workers fetch through Redis.
      if (!interrupted && stdout.includes('createFetch({ originGates')) {
        interrupted = true;
        interrupt();
      }
    });
    assert.ok(interrupted, run.stdout + run.stderr);
    assert.equal(run.code, 130, run.stdout + run.stderr);
    assert.equal(
      run.stderr,
      'sluice: demo --fleet interrupted: redis-server and the workers stopped\n',
    );
    assert.doesNotMatch(run.stdout, /fetched/);
    const redis = redisOf(run.stdout);
    assert.equal(alive(redis.pid), false, `redis-server ${redis.pid} left behind`);
    assert.deepEqual(workersOf(redis.port), []);
  });
});

/**
 * This process's children that the demo starts: redis-servers and fleet workers (Linux; none
 * elsewhere), by pid and command name. Others (tsx's esbuild) are not the demo's.
 */
function demoChildren(): { pid: number; name: string }[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  return entries.flatMap((entry) => {
    try {
      // pid (comm) state ppid …: comm may hold spaces, so read from its closing parenthesis.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) return [];
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const demo = name === 'redis-server' || cmdline.includes('fleet-worker');
      return demo ? [{ pid: Number(entry), name }] : [];
    } catch {
      return [];
    }
  });
}

/** A CliIo whose output the test reads, and whose Ctrl-C the test presses. */
function memoryIo(env: CliIo['env']): {
  io: CliIo;
  out: { stdout: string; stderr: string };
  interrupt: () => void;
  /** Resolves once the run listens for Ctrl-C. */
  subscribed: Promise<void>;
} {
  const out = { stdout: '', stderr: '' };
  const listeners = new Set<() => void>();
  let subscribe!: () => void;
  const subscribed = new Promise<void>((resolve) => (subscribe = resolve));
  const sink = (stream: 'stdout' | 'stderr'): Writable =>
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out[stream] += chunk.toString();
        callback();
      },
    });
  const io: CliIo = {
    stdin: Readable.from([]),
    stdout: sink('stdout'),
    stderr: sink('stderr'),
    stderrIsTTY: false,
    env,
    cwd: process.cwd(),
    onInterrupt(listener) {
      listeners.add(listener);
      subscribe();
      return () => listeners.delete(listener);
    },
  };
  return {
    io,
    out,
    subscribed,
    interrupt: () => {
      for (const listener of listeners) listener();
    },
  };
}

describe('sluice demo --fleet, interrupted before its redis-server is up', needsRedis, () => {
  it('starts nothing more once it has stopped', async () => {
    const { io, out, interrupt, subscribed } = memoryIo(process.env);
    const running = main(['demo', '--fleet'], io);
    await subscribed;
    interrupt(); // while it looks for a free port, before redis-server is spawned
    assert.equal(await running, 130);
    // What was left of the run had its chance to go on: give it time to start a process.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const left = demoChildren();
    try {
      assert.deepEqual(left, []);
      assert.equal(out.stdout, '');
    } finally {
      for (const { pid } of left) process.kill(pid, 'SIGKILL');
    }
  });
});

describe('sluice demo --fleet without redis-server', () => {
  const empty = mkdtempSync(join(tmpdir(), 'sluice-no-redis-'));
  after(() => {
    rmSync(empty, { recursive: true, force: true });
  });

  it('says in one line how to install it and exits 127', async () => {
    const { io, out } = memoryIo({ PATH: empty });
    const code = await main(['demo', '--fleet'], io);
    assert.equal(code, NO_REDIS_SERVER);
    assert.equal(NO_REDIS_SERVER, 127);
    assert.equal(out.stdout, '');
    assert.match(out.stderr, /^sluice: demo --fleet needs redis-server\b[^\n]*\n$/);
    assert.match(out.stderr, /apt-get install redis-server/);
    assert.match(out.stderr, /brew install redis/);
  });
});

describe('the demo server, refusing slowly', () => {
  it('counts refusals in flight until they are answered, without holding a slot', async () => {
    const server = await startDemoServer({ concurrency: 1, delayMs: 1000, refuseDelayMs: 300 });
    try {
      const get = async (id: number): Promise<number> => {
        const response = await fetch(`${server.url}/posts?id=${id}`);
        await response.arrayBuffer();
        return response.status;
      };
      const first = get(1);
      const refusals = [get(2), get(3)];
      // Both refusals are in flight together with the admitted request.
      const deadline = performance.now() + 5000;
      while (server.stats().inFlight < 3 && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.equal(server.stats().inFlight, 3);
      assert.deepEqual(await Promise.all(refusals), [503, 503]);
      const stats = server.stats();
      assert.equal(stats.inFlight, 1);
      assert.equal(stats.peakInFlight, 3);
      assert.deepEqual(stats.rejected, { 429: 0, 503: 2 });
      assert.equal(await first, 200);
    } finally {
      await server.close();
    }
  });
});
