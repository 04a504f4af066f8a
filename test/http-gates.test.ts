/**
 * Gates of an origin given to the HTTP client (`originGates`: with `sluice/redis`, shared by every
 * process): every attempt to the origin passes them, and a 429 that asks to wait pauses those that
 * can pause, so that every process sharing them waits. In-memory gates stand in for shared ones
 * here; test/redis-*.test.ts run the Redis ones.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Limiter, RateLimiter, Semaphore, type AcquireOptions, type Permit } from '../src/index.ts';
import { createExchange } from '../src/http/index.ts';

/** A rate gate that records the pauses asked of it. */
class PausableRate {
  readonly rate = new RateLimiter('1000/s');
  readonly pauses: number[] = [];

  acquire(options?: AcquireOptions): Promise<Permit> {
    return this.rate.acquire(options);
  }

  pauseFor(ms: number): Promise<void> {
    this.pauses.push(ms);
    return Promise.resolve();
  }
}

describe('gates of an origin given to the HTTP client', () => {
  let server: Server;
  let url = '';
  let inFlight = 0;
  let peak = 0;
  let busy = true;
  before(async () => {
    server = createServer((request, response) => {
      if (request.url === '/busy' && busy) {
        busy = false;
        response.writeHead(429, { 'retry-after': '1' }).end();
        return;
      }
      inFlight++;
      peak = Math.max(peak, inFlight);
      setTimeout(() => {
        inFlight--;
        response.end('ok');
      }, 10);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it("keeps the origin's concurrency with its gate, on every request", async () => {
    const shared = new Semaphore(2);
    const made: string[] = [];
    const exchange = createExchange({
      perOrigin: { concurrency: 10 },
      originGates: (origin) => {
        made.push(origin);
        return { concurrency: shared };
      },
    });
    try {
      peak = 0;
      const responses = await Promise.all(
        Array.from({ length: 8 }, (_, i) => exchange(`${url}/${i}`)),
      );
      assert.deepEqual(
        responses.map((response) => response.status),
        Array.from({ length: 8 }, () => 200),
      );
      assert.equal(peak, 2, 'the gate, not perOrigin.concurrency (10), kept the limit');
      assert.deepEqual(made, [url], 'made once, for the origin');
      assert.equal(shared.held, 0);
    } finally {
      await exchange.close();
    }
  });

  it('a 429 that asks to wait pauses the gates that can pause, and a Limiter passes on its pauses', async () => {
    const rate = new PausableRate();
    const exchange = createExchange({
      retry: { retries: 1, minDelay: 0 },
      maxRetryAfter: 5_000,
      originGates: () => ({ rate }),
    });
    try {
      busy = true;
      const response = await exchange(`${url}/busy`);
      assert.equal(response.status, 200);
      assert.deepEqual(rate.pauses, [1000], "the server's Retry-After, passed on");
    } finally {
      await exchange.close();
    }
    const other = new PausableRate();
    const limiter = new Limiter({ rate: [other, '10/s'] });
    limiter.pauseFor(250);
    assert.deepEqual(other.pauses, [250]);
    assert.equal(limiter.isPaused, true);
    limiter.resume();
  });

  it('refuses an originGates that is not a function when the client is made', () => {
    assert.throws(
      () => createExchange({ originGates: {} as never }),
      /Expected `originGates` to be a function/,
    );
  });
});
