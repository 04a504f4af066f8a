/**
 * Every HTTP attempt passes every limit, retries included: against a local server that answers
 * 500 twice and then 200 for each path, the global rate holds at the server for `sluice fetch
 * --rate` and for the library's `rate` option alike, counted where the requests arrive. Arrivals
 * carry the network's jitter: a window of 95% of the interval (the tolerance of the CLI's other
 * rate tests) holds at most the limit.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createExchange } from '../src/http/index.ts';
import { cli, range, tempDir } from './cli-helpers.ts';

/** A server that fails each path twice (500), then answers 200; it records every arrival. */
class FlakyServer {
  readonly arrivals: number[] = [];
  readonly #seen = new Map<string, number>();
  readonly #server: Server;
  url = '';

  constructor() {
    this.#server = createServer((req, res) => {
      this.arrivals.push(performance.now());
      const path = req.url ?? '';
      const seen = (this.#seen.get(path) ?? 0) + 1;
      this.#seen.set(path, seen);
      res.writeHead(seen <= 2 ? 500 : 200).end(seen <= 2 ? 'busy' : 'ok');
    });
  }

  async listen(): Promise<void> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** The most arrivals in any window of `ms`, from `from` on. */
  busiest(ms: number, from = 0): number {
    const arrivals = this.arrivals.slice(from);
    let most = 0;
    for (let i = 0; i < arrivals.length; i++) {
      let n = 0;
      for (let j = i; j < arrivals.length && arrivals[j]! < arrivals[i]! + ms; j++) n++;
      most = Math.max(most, n);
    }
    return most;
  }

  close(): void {
    this.#server.closeAllConnections();
    this.#server.close();
  }
}

describe('every HTTP attempt passes the global rate, retries included', () => {
  const server = new FlakyServer();
  const { file, remove } = tempDir();
  before(() => server.listen());
  after(() => {
    server.close();
    remove();
  });

  it('sluice fetch -c 10 --rate 20/s --retries 2: never more than 20 arrivals in any second (less the jitter)', async () => {
    const from = server.arrivals.length;
    const input = range(10).map((i) => `${server.url}/cli/${i}`);
    const run = await cli([
      'fetch',
      '-q',
      '-c',
      '10',
      '--rate',
      '20/s',
      '--retries',
      '2',
      file('flaky.txt', input),
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(server.arrivals.length - from, 30, 'each line: two 500s, then 200');
    // A second less 100 ms: 18 starts fit in it at 20/s, so the bound of 20 leaves about 100 ms
    // for the jitter between a start and its arrival here, on a loaded machine.
    const most = server.busiest(900, from);
    assert.ok(most <= 20, `${most} arrivals in 900 ms at 20/s`);
  });

  it("the library's rate option: the same, at the server", async () => {
    const from = server.arrivals.length;
    const exchange = createExchange({
      concurrency: 10,
      rate: '20/s',
      retry: { retries: 2, minDelay: 0, jitter: 'none' },
    });
    try {
      const responses = await Promise.all(range(10).map((i) => exchange(`${server.url}/lib/${i}`)));
      assert.deepEqual(
        responses.map((response) => response.status),
        range(10).map(() => 200),
      );
    } finally {
      await exchange.close();
    }
    assert.equal(server.arrivals.length - from, 30);
    const most = server.busiest(900, from);
    assert.ok(most <= 20, `${most} arrivals in 900 ms at 20/s`);
  });
});
