/**
 * The demo: its server's own limits (a 503 over the concurrency, a 429 with a Retry-After over
 * the token bucket, on a clock the test moves), then `runDemo` end to end on loopback, its output
 * read back: nothing refused through sluice, the bare `Promise.all` refused.
 */
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import type { CliIo } from '../src/cli/io.ts';
import { runDemo } from '../src/demo/run.ts';
import { startDemoServer, type DemoServer } from '../src/demo/server.ts';

const servers: DemoServer[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.close()));
});

async function start(options: Parameters<typeof startDemoServer>[0]): Promise<DemoServer> {
  const server = await startDemoServer(options);
  servers.push(server);
  return server;
}

/** GETs a path and reads the body: the status, the Retry-After header and the JSON. */
async function get(
  server: DemoServer,
  path: string,
): Promise<{ status: number; retryAfter: string | null; body: unknown }> {
  const response = await fetch(`${server.url}${path}`);
  return {
    status: response.status,
    retryAfter: response.headers.get('retry-after'),
    body: await response.json(),
  };
}

/** A clock for the token bucket that moves only when the test says. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let at = 0;
  return {
    now: () => at,
    advance: (ms) => {
      at += ms;
    },
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('the demo server', () => {
  it('answers a post as JSON with its id, a title and a body', async () => {
    const server = await start({ delayMs: 0 });
    const { status, body } = await get(server, '/posts?id=7');
    assert.equal(status, 200);
    const post = body as { id: unknown; title: unknown; body: unknown };
    assert.equal(post.id, 7);
    assert.equal(typeof post.title, 'string');
    assert.equal(typeof post.body, 'string');
    assert.notEqual(post.title, '');
    assert.deepEqual((await get(server, '/posts?id=7')).body, body);
    assert.equal((await get(server, '/users?id=7')).status, 404);
    assert.equal((await get(server, '/posts?id=zero')).status, 400);
    assert.equal(server.stats().requests, 4);
    assert.equal(server.stats().ok, 2);
  });

  it('refuses a sixth concurrent request with a 503 and counts it', async () => {
    const server = await start({ delayMs: 1000 });
    const first = Array.from({ length: 5 }, (_, i) => get(server, `/posts?id=${i + 1}`));
    await until(() => server.stats().inFlight === 5, 'five requests in flight');
    const sixth = await get(server, '/posts?id=6');
    assert.equal(sixth.status, 503);
    assert.deepEqual(
      (await Promise.all(first)).map((response) => response.status),
      [200, 200, 200, 200, 200],
    );
    const stats = server.stats();
    assert.deepEqual(stats.rejected, { 429: 0, 503: 1 });
    assert.equal(stats.rejections, 1);
    assert.equal(stats.peakInFlight, 6);
    assert.equal(stats.inFlight, 0);
    // The slots are back: a request now is served.
    assert.equal((await get(server, '/posts?id=7')).status, 200);
  });

  it('refuses the 21st request within an instant with a 429 and a Retry-After', async () => {
    const clock = manualClock();
    const server = await start({ delayMs: 0, concurrency: 100, now: clock.now });
    for (let i = 1; i <= 20; i++) {
      assert.equal((await get(server, `/posts?id=${i}`)).status, 200, `request ${i}`);
    }
    const refused = await get(server, '/posts?id=21');
    assert.equal(refused.status, 429);
    assert.equal(refused.retryAfter, '1');
    // A token comes back every 50 ms, not sooner.
    clock.advance(49);
    assert.equal((await get(server, '/posts?id=22')).status, 429);
    clock.advance(1);
    assert.equal((await get(server, '/posts?id=23')).status, 200);
    assert.equal((await get(server, '/posts?id=24')).status, 429);
    assert.deepEqual(server.stats().rejected, { 429: 3, 503: 0 });
  });

  it('never refuses a client starting 20 per second with jitter, and refuses one at 25 per second', async () => {
    const clock = manualClock();
    const server = await start({ delayMs: 0, concurrency: 100, now: clock.now });
    // 200 starts at 20/s, each up to 40 ms late or early against its slot (so that some bunch
    // in pairs 10 ms apart), sent in order.
    let at = 0;
    for (let i = 0; i < 200; i++) {
      const jitter = ((i * 37) % 81) - 40;
      const due = Math.max(at, i * 50 + jitter);
      clock.advance(due - at);
      at = due;
      assert.equal((await get(server, `/posts?id=${i + 1}`)).status, 200, `start ${i} at ${at}`);
    }
    const faster = await start({ delayMs: 0, concurrency: 100, now: clock.now });
    const statuses: number[] = [];
    for (let i = 0; i < 200; i++) {
      clock.advance(40);
      statuses.push((await get(faster, `/posts?id=${i + 1}`)).status);
    }
    // The bucket starts with 20 and gains 0.8 per request for the 1 it spends: it runs dry after
    // about 20 / 0.2 requests.
    const firstRefused = statuses.indexOf(429);
    assert.ok(firstRefused >= 90 && firstRefused <= 100, `first 429 at request ${firstRefused}`);
  });
});

describe('runDemo', () => {
  it('fetches 100 posts through sluice with no rejection and shows Promise.all refused', async () => {
    let out = '';
    const sink = (): Writable =>
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          out += chunk.toString();
          callback();
        },
      });
    const io: CliIo = {
      stdin: Readable.from([]),
      stdout: sink(),
      stderr: sink(),
      stderrIsTTY: false,
      env: {},
      cwd: process.cwd(),
      onInterrupt: () => () => undefined,
    };
    const code = await runDemo(io);
    const [limited = '', bare = ''] = out.split('Promise.all');
    assert.match(limited, /#1 {2}The \w+ \w+ and the \w+\n/);
    assert.match(limited, /requests sent +100 \(100 answered 200 OK\)/);
    assert.match(limited, /rejections +0\n/);
    const peak = Number(/peak in flight +(\d+),/.exec(limited)?.[1]);
    assert.ok(peak >= 1 && peak <= 5, `peak in flight ${peak}`);
    assert.match(limited, /makespan +\d+\.\d\d s; ideal 5\.00 s/);
    const refused = /rejections +(\d+): (?:(\d+) × 429)?/.exec(bare);
    assert.ok(refused !== null, `no rejections in:\n${bare}`);
    assert.ok(Number(refused[1]) > 0);
    assert.equal(code, 0, out);
  });
});
