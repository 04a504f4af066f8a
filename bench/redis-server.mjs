/**
 * A `redis-server` of the bench's own, for bench/cases/redis.mjs: started on a free port of
 * 127.0.0.1 with nothing saved to disk, stopped (SIGKILL) at the end. The bench runs from dist/,
 * so it cannot use the tests' TypeScript helper (test/_helpers/redis.ts); this is its small
 * JavaScript counterpart.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Whether `redis-server` can be run here. */
export function redisInstalled() {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Sends one inline command and resolves to the whole reply once `done(reply)` says so. */
function ask(port, command, done = (reply) => reply.includes('\r\n')) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (done(reply)) {
        socket.destroy();
        resolve(reply);
      }
    });
    socket.on('error', reject);
  });
}

/** Starts a server; resolves to `{ port, url, pid, commandStats(), stop() }` once it answers. */
export async function startRedis() {
  if (!redisInstalled()) {
    throw new Error('redis-server is not installed (Debian: apt-get install -y redis-server)');
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-redis-'));
  const child = spawn(
    'redis-server',
    [
      ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      ...['--dir', dir, '--protected-mode', 'no'],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await ask(port, 'PING')).startsWith('+PONG')) break;
    } catch {
      // not listening yet
    }
    if (exited) throw new Error(`redis-server on ${port} exited`);
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    /** `INFO commandstats` as { command: calls } (lower case, as Redis names them). */
    async commandStats() {
      // A bulk reply: "$<length>\r\n<text>\r\n".
      const reply = await ask(port, 'INFO commandstats', (text) => {
        const header = /^\$(\d+)\r\n/.exec(text);
        return header !== null && text.length >= header[0].length + Number(header[1]) + 2;
      });
      const stats = {};
      for (const match of reply.matchAll(/cmdstat_([\w|-]+):calls=(\d+)/g)) {
        stats[match[1]] = Number(match[2]);
      }
      return stats;
    },
    async stop() {
      if (!exited) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Calls per command between two `commandStats()` snapshots, `info` left out (the asking). */
export function commandsBetween(before, after) {
  const delta = {};
  for (const [command, calls] of Object.entries(after)) {
    const n = calls - (before[command] ?? 0);
    if (n > 0 && command !== 'info') delta[command] = n;
  }
  return delta;
}
