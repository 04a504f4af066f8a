/**
 * The Redis client adapters (src/redis/_client.ts) meet one conformance suite: node-redis (`redis`
 * 6) and ioredis alike run a script (keys and arguments in, replies as Redis gives them), send it
 * by its SHA1 and its source once after SCRIPT FLUSH, pass a script's error on, reject once their
 * client is closed, and deliver sharded pub/sub messages until the subscription is closed (after
 * its connection is killed too; and a subscription being made gives up when its signal aborts).
 * Then a RedisSemaphore (a waiter woken over pub/sub) and a RedisRateLimiter over each, with AUTH
 * (a password, and an ACL user allowed only sluice's keys and channels) and over TLS with a
 * certificate the test makes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { Script } from '../src/redis/_client.ts';
import {
  RedisRateLimiter,
  RedisSemaphore,
  redisClient,
  type RedisClient,
} from '../src/redis/index.ts';
import { freePort, needsRedis, RedisServer, waitFor } from './_helpers/redis.ts';

/** An adapter on a fresh connection, and how to end that connection. */
interface Connected {
  client: RedisClient;
  raw: unknown;
  end(): void;
}

type Connect = (url: string, tls?: { ca: Buffer }) => Promise<Connected>;

const ADAPTERS: Record<string, Connect> = {
  'node-redis': async (url, tls) => {
    const raw = createClient({
      url,
      maintNotifications: 'disabled',
      ...(tls === undefined ? {} : { socket: { tls: true as const, ca: tls.ca } }),
    });
    raw.on('error', () => undefined);
    await raw.connect();
    return {
      client: redisClient('client', raw),
      raw,
      end: () => {
        raw.destroy();
      },
    };
  },
  ioredis: async (url, tls) => {
    const raw = new Redis(url, { ...(tls === undefined ? {} : { tls: { ca: tls.ca } }) });
    raw.on('error', () => undefined);
    await raw.ping();
    return {
      client: redisClient('client', raw),
      raw,
      end: () => {
        raw.disconnect();
      },
    };
  },
};

/** How often the server ran `command`, from INFO commandstats. */
async function calls(server: RedisServer, command: string): Promise<number> {
  const info = await infoSection(server, 'commandstats');
  return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
}

/** The whole reply to `INFO section` (the helper's `command()` gives the first line only). */
async function infoSection(server: RedisServer, section: string): Promise<string> {
  const client = createClient({ url: server.url, maintNotifications: 'disabled' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await client.sendCommand<string>(['INFO', section]);
  } finally {
    client.destroy();
  }
}

/**
 * A semaphore round over `client`: a grant, a waiter in another object woken by a release. The
 * waiter's timed check (every min(pollMs, leaseMs / 3)) would come after its timeout: only the
 * wake-up, on the subscription's own connection (which must authenticate too), can admit it.
 */
async function semaphoreRound(client: RedisClient, name: string): Promise<void> {
  const a = new RedisSemaphore(client, name, { permits: 1 });
  const b = new RedisSemaphore(client, name, { permits: 1, pollMs: 60_000, leaseMs: 60_000 });
  const first = await a.acquire();
  let admitted = false;
  const waiting = b.acquire({ timeout: 15_000 }).then((permit) => {
    admitted = true;
    return permit;
  });
  await sleep(50);
  assert.equal(admitted, false, 'the limit holds');
  first.release();
  const second = await waiting;
  assert.ok(second.fence > first.fence);
  await second[Symbol.asyncDispose]();
  await Promise.all([a.close(), b.close()]);
}

/**
 * A rate round over `client`: an acquire and its release, then two waits, spaced by the rate on
 * Redis's clock (10/s: a start every 100 ms), so the second wait's start is booked 200 ms after
 * the acquire's.
 */
async function rateRound(client: RedisClient, name: string): Promise<void> {
  const rate = new RedisRateLimiter(client, name, '10/s');
  const permit = await rate.acquire();
  const t0 = performance.now();
  permit.release();
  await rate.wait();
  await rate.wait({ timeout: 15_000 });
  // 200 ms, less the acquire's reply's way back and the event loop's delay before t0: up to
  // 100 ms of them on a busy machine. Unspaced, the waits would take a round trip each.
  assert.ok(performance.now() - t0 >= 100, `${performance.now() - t0}ms`);
  await rate.close();
}

let scripts = 0;
/** A script no server has seen yet. */
function freshScript(body: string): Script {
  return new Script('test', `-- ${++scripts} ${Math.random()}\n${body}`);
}

for (const [name, connect] of Object.entries(ADAPTERS)) {
  describe(`the ${name} adapter`, needsRedis, () => {
    let server: RedisServer;
    let connected: Connected;
    let client: RedisClient;

    before(async () => {
      server = await RedisServer.start();
      connected = await connect(server.url);
      client = connected.client;
    });
    after(async () => {
      connected.end();
      await server.stop();
    });

    it('is chosen by the client’s shape; anything else is refused naming the argument', () => {
      assert.equal(redisClient('client', client), client, 'an adapter is taken as it is');
      assert.notEqual(redisClient('client', connected.raw), client);
      assert.throws(
        () => redisClient('redis', { get: () => undefined }),
        /^TypeError: Expected `redis` to be a connected Redis client .*, got `\[object\]` \(object\)$/,
      );
    });

    it('runs a script: keys and arguments in, replies as Redis gives them', async () => {
      const script = freshScript(
        "return { KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, { 1, 'two' }, false }",
      );
      assert.deepEqual(await client.run(script, ['k'], ['a', 2]), ['k', 'a', 3, [1, 'two'], null]);
      assert.equal(await client.run(freshScript('return nil'), [], []), null);
    });

    it('sends a script by its SHA1, and its source once after SCRIPT FLUSH', async () => {
      const script = freshScript('return ARGV[1]');
      const evals = await calls(server, 'eval');
      for (let i = 0; i < 3; i++) assert.equal(await client.run(script, [], [`x${i}`]), `x${i}`);
      assert.equal(await calls(server, 'eval'), evals + 1, 'the source went once');
      assert.equal(await server.command('SCRIPT FLUSH'), '+OK');
      for (let i = 0; i < 3; i++) assert.equal(await client.run(script, [], [`y${i}`]), `y${i}`);
      assert.equal(await calls(server, 'eval'), evals + 2, 'and once more after the flush');
    });

    it('passes a script’s error on', async () => {
      await assert.rejects(
        client.run(freshScript("return redis.error_reply('ERR sluice test: boom')"), [], []),
        /ERR sluice test: boom/,
      );
    });

    it('delivers SPUBLISH messages to a subscription until it is closed', async () => {
      const channel = `sluice:{${name}}:wake`;
      const got: string[] = [];
      const subscription = await client.subscribe(channel, (message) => got.push(message));
      assert.equal(await server.command(`SPUBLISH ${channel} hello`), ':1');
      await waitFor('the message', () => got.length === 1);
      assert.deepEqual(got, ['hello']);
      await subscription.close();
      await subscription.close();
      await waitFor(
        'nobody listening',
        async () => (await server.command(`SPUBLISH ${channel} bye`)) === ':0',
      );
      assert.deepEqual(got, ['hello']);
    });

    it('keeps delivering after its connection is killed', async () => {
      const channel = `sluice:{${name}-killed}:wake`;
      const got: string[] = [];
      const subscription = await client.subscribe(channel, (message) => got.push(message));
      assert.match(await server.command('CLIENT KILL TYPE pubsub'), /^:[1-9]\d*$/);
      // Once it has subscribed again, a message reaches it.
      await waitFor('subscribed again', async () => {
        await server.command(`SPUBLISH ${channel} again`);
        return got.includes('again');
      });
      await subscription.close();
    });

    it('gives up a subscription being made when its signal aborts', async () => {
      server.pause(); // connecting never completes
      try {
        const controller = new AbortController();
        const subscribing = client.subscribe(
          'sluice:{never}:wake',
          () => undefined,
          controller.signal,
        );
        await sleep(50);
        const reason = new Error('not any more');
        controller.abort(reason);
        await assert.rejects(subscribing, (error) => error === reason);
      } finally {
        server.resume();
      }
    });

    it('runs a RedisSemaphore and a RedisRateLimiter', async () => {
      await semaphoreRound(client, `${name}-round`);
      await rateRound(client, `${name}-round`);
    });

    it('rejects a call once its client is closed', async () => {
      const own = await connect(server.url);
      own.end();
      await assert.rejects(own.client.run(freshScript('return 1'), [], []));
    });
  });
}

describe('Redis with AUTH', needsRedis, () => {
  let server: RedisServer;
  before(async () => {
    server = await RedisServer.start({ password: 'sesame-42' });
    assert.equal(
      await server.command(
        'ACL SETUSER worker on >w0rker resetkeys ~sluice:* resetchannels &sluice:* +@all',
      ),
      '+OK',
    );
  });
  after(async () => {
    await server.stop();
  });

  for (const [name, connect] of Object.entries(ADAPTERS)) {
    it(`runs a RedisSemaphore and a RedisRateLimiter through ${name} with a password`, async () => {
      const url = `redis://:sesame-42@127.0.0.1:${server.port}`;
      const connected = await connect(url);
      try {
        await semaphoreRound(connected.client, `password-${name}`);
        await rateRound(connected.client, `password-${name}`);
      } finally {
        connected.end();
      }
    });

    it(`runs the shared gates through ${name} as an ACL user allowed only sluice's keys`, async () => {
      const connected = await connect(`redis://worker:w0rker@127.0.0.1:${server.port}`);
      try {
        await assert.rejects(
          connected.client.run(freshScript("return redis.call('SET', KEYS[1], 1)"), ['other'], []),
          /NOPERM|No permissions/i,
          'the user is limited',
        );
        await semaphoreRound(connected.client, `acl-${name}`);
        await rateRound(connected.client, `acl-${name}`);
      } finally {
        connected.end();
      }
    });
  }
});

/** Whether `openssl` is here to make a certificate. */
const opensslInstalled = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

describe('Redis over TLS', needsRedis, () => {
  let server: RedisServer | undefined;
  let tlsPort = 0;
  let ca: Buffer;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tls-'));

  before(async () => {
    if (!opensslInstalled) return;
    const made = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    assert.equal(made.status, 0, 'openssl made a certificate');
    ca = readFileSync(join(dir, 'cert.pem'));
    tlsPort = await freePort();
    server = await RedisServer.start({
      args: [
        '--tls-port',
        String(tlsPort),
        '--tls-cert-file',
        join(dir, 'cert.pem'),
        '--tls-key-file',
        join(dir, 'key.pem'),
        '--tls-ca-cert-file',
        join(dir, 'cert.pem'),
        '--tls-auth-clients',
        'no',
      ],
    });
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, connect] of Object.entries(ADAPTERS)) {
    it(
      `runs a RedisSemaphore and a RedisRateLimiter through ${name} over rediss://`,
      { skip: opensslInstalled ? false : 'openssl is not installed' },
      async () => {
        const connected = await connect(`rediss://127.0.0.1:${tlsPort}`, { ca });
        try {
          await semaphoreRound(connected.client, `tls-${name}`);
          await rateRound(connected.client, `tls-${name}`);
        } finally {
          connected.end();
        }
      },
    );
  }
});

describe('ioredis with a keyPrefix', needsRedis, () => {
  let server: RedisServer;
  before(async () => {
    server = await RedisServer.start();
  });
  after(async () => {
    await server.stop();
  });

  // ioredis prefixes the keys of a script, so the script announces on the prefixed channel: the
  // adapter must listen there, or every hand-off waits for the timed check.
  it(
    'hands a permit over on the announcement, not the timed check',
    { timeout: 15_000 },
    async () => {
      const connect = (): Redis => {
        const raw = new Redis(server.url, { keyPrefix: 'app:' });
        raw.on('error', () => undefined);
        return raw;
      };
      const [one, two] = [connect(), connect()];
      const a = new RedisSemaphore(one, 'prefixed', { permits: 1 });
      // It checks on its timer every 40 s (a third of its lease): only the announcement can
      // wake it within the test.
      const b = new RedisSemaphore(two, 'prefixed', {
        permits: 1,
        pollMs: 60_000,
        leaseMs: 120_000,
      });
      try {
        for (let round = 0; round < 3; round++) {
          const first = await a.acquire();
          const waiting = b.acquire();
          await sleep(50);
          first.release();
          await (await waiting)[Symbol.asyncDispose]();
        }
      } finally {
        await Promise.all([a.close(), b.close()]);
        one.disconnect();
        two.disconnect();
      }
    },
  );
});
