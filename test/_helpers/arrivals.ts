/**
 * A local HTTP server that records when each request arrives (`performance.now()`), for tests
 * that measure a rate where the requests land, not where they leave. A request for `/warmup` is
 * answered and not recorded: a client's first request loads its HTTP stack, which takes longer
 * than a rate's spacing.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The most instants of `times` (ascending) in any window of `ms`, from `from` on. */
export function busiest(times: readonly number[], ms: number, from = 0): number {
  let most = 0;
  let start = from;
  for (let end = from; end < times.length; end++) {
    while (times[end]! - times[start]! >= ms) start++;
    most = Math.max(most, end - start + 1);
  }
  return most;
}

export class ArrivalServer {
  /** Arrival instants, ascending. */
  readonly arrivals: number[] = [];
  url = '';
  readonly #server: Server;

  constructor() {
    this.#server = createServer((req, res) => {
      if (req.url !== '/warmup') this.arrivals.push(performance.now());
      res.writeHead(204).end();
    });
  }

  async listen(): Promise<this> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  /** Arrivals within [from, to). */
  between(from: number, to: number): number {
    return this.arrivals.filter((at) => at >= from && at < to).length;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, 'close');
  }
}
