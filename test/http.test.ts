/**
 * `createFetch()` and `createRequest()` against real `node:http` servers on 127.0.0.1, started and
 * closed by each test. The servers keep their own count of requests in flight and the instant
 * (performance.now(), the same clock as the client's) each request arrived, and the tests judge
 * the client by what the servers saw: the peak never exceeds a limit, origins do not share limits,
 * a rate spaces arrivals, retries and server-requested waits put the next arrival at least as
 * late as stated.
 *
 * Real time is involved, so bounds are generous where they are upper bounds, and exact where they
 * are the server's word ("not before 1 s"): the client's pause starts after the response left the
 * server, so an arrival a full second after the previous response was sent is guaranteed.
 *
 * Every test closes its clients and servers in an `after` hook (servers drop their connections
 * first, so a client left waiting on a body still closes); the file exits on its own.
 */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import diagnosticsChannel from 'node:diagnostics_channel';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  ClosedError,
  RetryBudget,
  RetryError,
  TimeoutError,
  type ReleaseOutcome,
} from '../src/index.ts';
import {
  createExchange,
  createFetch,
  createRequest,
  type HttpOptions,
  type LimitedFetch,
  type LimitedRequestFunction,
  type LimitedResponse,
  type RequestReport,
} from '../src/http/index.ts';
import { assertAtRest } from './_helpers/at-rest.ts';
import { RecordingGate } from './_helpers/recording-gate.ts';
import { catchUncaught } from './_helpers/uncaught.ts';
import { Stalled, within } from './_helpers/within.ts';
import { cli } from './cli-helpers.ts';

interface Arrival {
  path: string;
  method: string;
  at: number;
  headers: IncomingMessage['headers'];
}

/** Requests in flight, and the most there ever were: at one server, or shared by several. */
interface Load {
  active: number;
  peak: number;
}

/** Answers the `n`-th request (1-based) to arrive at this server. */
type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

interface TestServer extends Load {
  readonly origin: string;
  url(path?: string): string;
  /** Every request, in order of arrival. */
  readonly arrivals: Arrival[];
  /** TCP connections accepted. */
  connections: number;
}

function reply(
  res: ServerResponse,
  status: number,
  headers: Record<string, string> = {},
  body = '',
): void {
  res.writeHead(status, headers).end(body);
}

/** What the n-th request gets: a status (with headers), a dropped connection, or no answer. */
type Step = number | { status: number; headers: Record<string, string> } | 'destroy' | 'hang';

/** A handler that answers every request with a 200 and `body`, `ms` after it arrives. */
function answerAfter(ms: number, body = 'ok'): Handler {
  return (_req, res) =>
    setTimeout(() => {
      reply(res, 200, {}, body);
    }, ms);
}

/** A handler that answers the n-th request with `steps[n - 1]` (the last step once they run out). */
function sequence(...steps: Step[]): Handler {
  return (req, res, n) => {
    const step = steps[Math.min(n, steps.length) - 1]!;
    if (step === 'destroy') req.socket.destroy();
    else if (step === 'hang') return;
    else if (typeof step === 'number') reply(res, step, {}, `attempt ${n}`);
    else reply(res, step.status, step.headers, `attempt ${n}`);
  };
}

/**
 * A handler whose first answer is a 503 that sends 10 bytes of a 1000-byte body, then drops the
 * connection or sends nothing more; later requests get a 200.
 */
function cutShort(then: 'destroy' | 'stall'): Handler {
  return (_req, res, n) => {
    if (n > 1) {
      reply(res, 200, {}, `attempt ${n}`);
      return;
    }
    res.writeHead(503, { 'content-length': '1000' });
    res.write('0123456789');
    if (then === 'destroy') setTimeout(() => res.socket?.destroy(), 20);
  };
}

/** Waits until `condition()` holds (checked every few ms), for at most 2 s. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 2_000;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await delay(5);
  }
}

/** The text of a `fetch` Response or of a `createRequest` response. */
function bodyText(response: Response | LimitedResponse): Promise<string> {
  return response instanceof Response ? response.text() : response.body.text();
}

/** Gaps between successive instants. */
function gaps(instants: number[]): number[] {
  return instants.slice(1).map((at, i) => at - instants[i]!);
}

/** The servers and clients of one test, all closed when it ends. */
class Harness {
  readonly #clients: { close(): Promise<void> }[] = [];
  readonly #servers: (() => Promise<void>)[] = [];

  constructor(t: TestContext) {
    t.after(async () => {
      const closing = this.#clients.map((client) => client.close());
      await Promise.all(this.#servers.map((close) => close()));
      await Promise.all(closing);
    });
  }

  fetch(options?: HttpOptions): LimitedFetch {
    const fetch = createFetch(options);
    this.#clients.push(fetch);
    return fetch;
  }

  request(options?: HttpOptions): LimitedRequestFunction {
    const request = createRequest(options);
    this.#clients.push(request);
    return request;
  }

  /** Starts a server on 127.0.0.1 that counts its requests in flight (and into `shared`, if given). */
  async serve(handler: Handler, shared?: Load): Promise<TestServer> {
    const server = createServer();
    const state = {
      active: 0,
      peak: 0,
      connections: 0,
      arrivals: [] as Arrival[],
      origin: '',
      url(path = '/') {
        return `${this.origin}${path}`;
      },
    };
    server.on('connection', () => {
      state.connections++;
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      state.arrivals.push({
        path: req.url ?? '',
        method: req.method ?? '',
        at: performance.now(),
        headers: req.headers,
      });
      for (const load of shared === undefined ? [state] : [state, shared]) {
        load.active++;
        load.peak = Math.max(load.peak, load.active);
      }
      res.once('close', () => {
        state.active--;
        if (shared !== undefined) shared.active--;
      });
      req.resume();
      handler(req, res, state.arrivals.length);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    state.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    this.#servers.push(async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    });
    return state;
  }
}

/** Collects reports. */
function reports(): { list: RequestReport[]; onReport: (report: RequestReport) => void } {
  const list: RequestReport[] = [];
  return { list, onReport: (report) => list.push(report) };
}

describe('createFetch: concurrency', { timeout: 10_000 }, () => {
  it('never has more requests in flight at the server than perOrigin.concurrency', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(30));
    const fetch = h.fetch({ perOrigin: { concurrency: 3 } });
    const bodies = await Promise.all(
      Array.from({ length: 12 }, (_, i) => fetch(server.url(`/${i}`)).then((r) => r.text())),
    );
    assert.deepEqual(bodies, Array(12).fill('ok'));
    assert.equal(server.arrivals.length, 12);
    assert.equal(server.peak, 3);
    assert.ok(server.connections <= 3, `${server.connections} connections`);
  });

  it('starts a request that waited for its slot in the async context of its caller', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(30));
    const request = h.request({ perOrigin: { concurrency: 1 } });
    const als = new AsyncLocalStorage<string>();
    // undici announces each request it makes, synchronously, where the attempt starts.
    const seen: (string | undefined)[] = [];
    const onCreate = (): void => {
      seen.push(als.getStore());
    };
    diagnosticsChannel.subscribe('undici:request:create', onCreate);
    t.after(() => diagnosticsChannel.unsubscribe('undici:request:create', onCreate));
    const names = ['first', 'second', 'third'];
    const bodies = await Promise.all(
      names.map((name) =>
        als.run(name, () => request(server.url(`/${name}`)).then((r) => r.body.text())),
      ),
    );
    assert.deepEqual(bodies, ['ok', 'ok', 'ok']);
    assert.equal(server.peak, 1, 'the second and third waited for the slot');
    assert.deepEqual(seen, names);
  });

  it('holds the slot while the server is still sending the body', async (t) => {
    const h = new Harness(t);
    // Two origins under a global concurrency of 2, each with a pool of 6 connections: only the
    // slot, not the pool, can keep a third request from starting while a body streams.
    const total: Load = { active: 0, peak: 0 };
    const streaming: Handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first,');
      setTimeout(() => res.end('last'), 40);
    };
    const a = await h.serve(streaming, total);
    const b = await h.serve(streaming, total);
    const fetch = h.fetch({ concurrency: 2 });
    const bodies = await Promise.all(
      Array.from({ length: 4 }, (_, i) => [
        fetch(a.url(`/${i}`)).then((r) => r.text()),
        fetch(b.url(`/${i}`)).then((r) => r.text()),
      ]).flat(),
    );
    assert.deepEqual(bodies, Array(8).fill('first,last'));
    assert.equal(total.peak, 2);
  });

  it('holds the slot until a client that reads slowly has read the body', async (t) => {
    const h = new Harness(t);
    let consumed = 0;
    let unfinished = 0;
    const server = await h.serve((_req, res) => {
      // Requests that reached the server and whose bodies the client has not finished reading.
      unfinished = Math.max(unfinished, server.arrivals.length - consumed);
      reply(res, 200, {}, 'x'.repeat(1000));
    });
    const fetch = h.fetch({ perOrigin: { concurrency: 2 } });
    await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const response = await fetch(server.url(`/${i}`));
        await delay(30);
        const reader = response.body!.getReader();
        for (;;) {
          const { done } = await reader.read();
          if (done) break;
          await delay(5);
        }
        consumed++;
      }),
    );
    assert.equal(server.arrivals.length, 8);
    assert.equal(unfinished, 2);
  });

  it('gives the slot back when the body is cancelled', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((req, res) => {
      if (req.url === '/endless') {
        res.writeHead(200);
        res.write('more to come');
      } else {
        reply(res, 200, {}, 'next');
      }
    });
    const fetch = h.fetch({ perOrigin: { concurrency: 1 } });
    const endless = await fetch(server.url('/endless'));
    const next = fetch(server.url('/next'));
    await delay(100);
    assert.deepEqual(
      server.arrivals.map((a) => a.path),
      ['/endless'],
      'the next request waits while the body is open',
    );
    await endless.body!.cancel();
    const response = await within(2_000, next, 'the next request');
    assert.equal(await response.text(), 'next');
    assert.deepEqual(
      server.arrivals.map((a) => a.path),
      ['/endless', '/next'],
    );
  });

  it('gives the slot back when the response has no body', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((req, res) => {
      reply(res, req.url === '/empty' ? 204 : 200, {}, req.url === '/empty' ? '' : 'next');
    });
    const fetch = h.fetch({ perOrigin: { concurrency: 1 } });
    const empty = await fetch(server.url('/empty'));
    assert.equal(empty.status, 204);
    assert.equal(empty.body, null);
    const next = await within(2_000, fetch(server.url('/next')), 'the next request');
    assert.equal(await next.text(), 'next');
  });
});

describe('createFetch: origins', { timeout: 10_000 }, () => {
  it('keeps origins independent: a saturated one does not hold up another', async (t) => {
    const h = new Harness(t);
    const slow = await h.serve(answerAfter(150, 'slow'));
    let slowArrivedBeforeFast = -1;
    const fast = await h.serve((_req, res) => {
      slowArrivedBeforeFast = slow.arrivals.length;
      reply(res, 200, {}, 'fast');
    });
    const fetch = h.fetch({ perOrigin: { concurrency: 1 } });
    const slowCalls = [1, 2, 3].map((i) => fetch(slow.url(`/${i}`)).then((r) => r.text()));
    await until(() => slow.arrivals.length === 1, 'the first slow request arrives');
    assert.equal(await (await fetch(fast.url('/'))).text(), 'fast');
    assert.equal(
      slowArrivedBeforeFast,
      1,
      'the fast origin was served while the slow one was busy',
    );
    assert.deepEqual(await Promise.all(slowCalls), ['slow', 'slow', 'slow']);
    assert.equal(slow.peak, 1);
  });

  it('applies the limits of `origins` over perOrigin, to that origin only', async (t) => {
    const h = new Harness(t);
    const hold: Handler = (_req, res) =>
      setTimeout(() => {
        reply(res, 200, {}, 'ok');
      }, 40);
    const a = await h.serve(hold);
    const b = await h.serve(hold);
    const fetch = h.fetch({
      perOrigin: { concurrency: 1 },
      // Written with a path: keys are origins once normalised.
      origins: { [`${b.origin}/`]: { concurrency: 3 } },
    });
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => [
        fetch(a.url(`/${i}`)).then((r) => r.text()),
        fetch(b.url(`/${i}`)).then((r) => r.text()),
      ]).flat(),
    );
    assert.equal(a.peak, 1);
    assert.equal(b.peak, 3);
    assert.ok(b.connections <= 3, `${b.connections} connections to b`);
  });

  it('caps the total across origins with the global concurrency', async (t) => {
    const h = new Harness(t);
    const total: Load = { active: 0, peak: 0 };
    const hold: Handler = (_req, res) =>
      setTimeout(() => {
        reply(res, 200, {}, 'ok');
      }, 40);
    const a = await h.serve(hold, total);
    const b = await h.serve(hold, total);
    const fetch = h.fetch({ concurrency: 2, perOrigin: { concurrency: 5 } });
    await Promise.all(
      Array.from({ length: 5 }, (_, i) => [
        fetch(a.url(`/${i}`)).then((r) => r.text()),
        fetch(b.url(`/${i}`)).then((r) => r.text()),
      ]).flat(),
    );
    assert.equal(a.arrivals.length + b.arrivals.length, 10);
    assert.equal(total.peak, 2);
  });

  it('spaces arrivals by the rate of an origin, and only of that origin', async (t) => {
    const h = new Harness(t);
    const paced = await h.serve((_req, res) => {
      reply(res, 200, {}, 'ok');
    });
    const free = await h.serve(answerAfter(50));
    const fetch = h.fetch({ origins: { [paced.origin]: { rate: '10/s' } } });
    // One request first, so that the measured ones go over an open connection: the time to
    // connect would otherwise delay the first arrival and shorten the first gap.
    await (await fetch(paced.url('/warm-up'))).text();
    await Promise.all(
      Array.from({ length: 5 }, (_, i) => [
        fetch(paced.url(`/${i}`)).then((r) => r.text()),
        fetch(free.url(`/${i}`)).then((r) => r.text()),
      ]).flat(),
    );
    const arrivals = paced.arrivals.slice(1).map((a) => a.at);
    for (const gap of gaps(arrivals)) {
      assert.ok(gap >= 85, `arrivals ${gap.toFixed(1)}ms apart at 10/s`);
    }
    const span = arrivals.at(-1)! - arrivals[0]!;
    assert.ok(span >= 385 && span < 2_000, `5 arrivals at 10/s over ${span.toFixed(1)}ms`);
    assert.equal(free.peak, 5, 'the origin without a rate had all five in flight at once');
  });
});

describe('createFetch: retries', { timeout: 10_000 }, () => {
  it('retries a GET that gets 503 twice, then delivers the 200', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence(503, 503, 200));
    const fetch = h.fetch();
    const { list, onReport } = reports();
    const response = await fetch(server.url('/'), { onReport });
    assert.equal(response.status, 200);
    assert.equal(await response.text(), 'attempt 3');
    assert.equal(server.arrivals.length, 3);
    assert.equal(list[0]!.attempts, 3);
    assert.deepEqual(
      list[0]!.retries.map((r) => r.status),
      [503, 503],
    );
  });

  it('retries idempotent methods only, by default', async (t) => {
    const h = new Harness(t);
    const fetch = h.fetch({ retry: { retries: 1, minDelay: 1 } });
    for (const [method, retried] of [
      ['GET', true],
      ['HEAD', true],
      ['OPTIONS', true],
      ['PUT', true],
      ['DELETE', true],
      ['POST', false],
      ['PATCH', false],
    ] as const) {
      const server = await h.serve(sequence(503, 200));
      const response = await fetch(server.url('/'), { method });
      await response.arrayBuffer();
      assert.equal(response.status, retried ? 200 : 503, method);
      assert.equal(server.arrivals.length, retried ? 2 : 1, method);
      assert.ok(server.arrivals.every((a) => a.method === method));
    }
  });

  it('retries 408, 429, 500, 502, 503 and 504, and no other status', async (t) => {
    const h = new Harness(t);
    const fetch = h.fetch({ retry: { retries: 1, minDelay: 1 } });
    for (const [status, retried] of [
      [408, true],
      [429, true],
      [500, true],
      [502, true],
      [503, true],
      [504, true],
      [400, false],
      [404, false],
      [501, false],
      [505, false],
    ] as const) {
      const server = await h.serve(sequence(status, 200));
      const response = await fetch(server.url('/'));
      await response.arrayBuffer();
      assert.equal(response.status, retried ? 200 : status, String(status));
      assert.equal(server.arrivals.length, retried ? 2 : 1, String(status));
    }
  });

  it('delivers a POST that gets 503 without retrying it', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence(503, 200));
    const fetch = h.fetch();
    const { list, onReport } = reports();
    const response = await fetch(server.url('/'), { method: 'POST', body: 'data', onReport });
    assert.equal(response.status, 503);
    assert.equal(await response.text(), 'attempt 1');
    assert.equal(server.arrivals.length, 1);
    assert.equal(list[0]!.attempts, 1);
    assert.deepEqual(list[0]!.retries, []);
  });

  it('retries a GET whose connection the server drops', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('destroy', 200));
    const fetch = h.fetch({ retry: { retries: 2, minDelay: 1 } });
    const { list, onReport } = reports();
    const response = await fetch(server.url('/'), { onReport });
    assert.equal(await response.text(), 'attempt 2');
    assert.equal(server.arrivals.length, 2);
    const [report] = list;
    assert.equal(report!.attempts, 2);
    assert.equal(report!.retries.length, 1);
    assert.equal(report!.retries[0]!.status, undefined);
    assert.match(report!.retries[0]!.error ?? '', /fetch failed/);
  });

  it('does not retry a POST whose connection the server drops', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('destroy', 200));
    const fetch = h.fetch({ retry: { retries: 2, minDelay: 1 } });
    await assert.rejects(fetch(server.url('/'), { method: 'POST', body: 'x' }), TypeError);
    assert.equal(server.arrivals.length, 1);
  });

  it('turns retries off with `retry: 0`', async (t) => {
    const h = new Harness(t);
    const unavailable = await h.serve(sequence(503, 200));
    const dropping = await h.serve(sequence('destroy', 200));
    const fetch = h.fetch({ retry: 0 });
    const { list, onReport } = reports();
    const response = await fetch(unavailable.url('/'), { onReport });
    assert.equal(response.status, 503);
    await response.text();
    assert.equal(unavailable.arrivals.length, 1);
    assert.equal(list[0]!.attempts, 1);
    await assert.rejects(fetch(dropping.url('/')), TypeError);
    assert.equal(dropping.arrivals.length, 1);
  });

  it('delivers the last response, with its status and body, when the retries run out', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence(502));
    const fetch = h.fetch({ retry: { retries: 2, minDelay: 1 } });
    const { list, onReport } = reports();
    const response = await fetch(server.url('/'), { onReport });
    assert.equal(response.status, 502);
    assert.equal(response.ok, false);
    assert.equal(await response.text(), 'attempt 3');
    assert.equal(server.arrivals.length, 3);
    assert.equal(list[0]!.attempts, 3);
    assert.equal(list[0]!.status, 502);
    assert.equal(list[0]!.ok, false);
  });

  it('rejects with a RetryError naming the attempts when every attempt fails to connect', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('destroy'));
    const fetch = h.fetch({ retry: { retries: 2, minDelay: 1 } });
    const error = await fetch(server.url('/')).then(
      () => assert.fail('expected a rejection'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RetryError);
    assert.equal(error.attempts, 3);
    assert.ok(error.cause instanceof TypeError);
    assert.equal(server.arrivals.length, 3);
  });
});

/**
 * Serves `first`, then 200, through a fetch of `h`, and checks that the retry came about a second
 * later and was reported with a delay of at least that: returns the call's report.
 */
async function retriedASecondLater(h: Harness, first: Step): Promise<RequestReport> {
  const server = await h.serve(sequence(first, 200));
  const fetch = h.fetch();
  const { list, onReport } = reports();
  const response = await fetch(server.url('/'), { onReport });
  assert.equal(response.status, 200);
  await response.text();
  const [gap] = gaps(server.arrivals.map((a) => a.at));
  assert.ok(gap! >= 1_000 && gap! < 1_600, `the retry came ${gap!.toFixed(1)}ms later`);
  assert.ok(list[0]!.retries[0]!.delayMs >= 1_000, `a delay of ${list[0]!.retries[0]!.delayMs}`);
  return list[0]!;
}

describe('createFetch: what the server asks for', { timeout: 15_000 }, () => {
  it('waits the delay-seconds of a Retry-After before the next attempt', async (t) => {
    const h = new Harness(t);
    const report = await retriedASecondLater(h, { status: 503, headers: { 'retry-after': '1' } });
    assert.equal(report.retries[0]!.status, 503);
  });

  it('waits until the HTTP-date of a Retry-After, read against the response Date', async (t) => {
    const h = new Harness(t);
    // The server's clock is an hour behind: by the client's clock the date is long past.
    const date = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;
    const report = await retriedASecondLater(h, {
      status: 503,
      headers: {
        date: new Date(date).toUTCString(),
        'retry-after': new Date(date + 1_000).toUTCString(),
      },
    });
    assert.deepEqual(report.serverWait, undefined, 'the final 200 asked for nothing');
  });

  it('waits the reset of an exhausted RateLimit before the next attempt', async (t) => {
    const h = new Harness(t);
    const report = await retriedASecondLater(h, {
      status: 429,
      headers: { ratelimit: '"default";r=0;t=1', 'ratelimit-policy': '"default";q=5;w=1' },
    });
    assert.equal(report.retries[0]!.status, 429);
  });

  it('pauses the origin for every caller after a 429 with Retry-After', async (t) => {
    const h = new Harness(t);
    let sentAt = 0;
    const server = await h.serve((req, res) => {
      if (req.url === '/limited') {
        sentAt = performance.now();
        reply(res, 429, { 'retry-after': '1' });
      } else {
        reply(res, 200, {}, 'other');
      }
    });
    const fetch = h.fetch({ retry: 0 });
    const started = performance.now();
    const limited = await fetch(server.url('/limited'));
    assert.equal(limited.status, 429);
    await limited.text();
    assert.ok(performance.now() - started < 800, 'the 429 itself is delivered at once');
    const { list, onReport } = reports();
    const other = await fetch(server.url('/other'), { onReport });
    assert.equal(await other.text(), 'other');
    const arrived = server.arrivals.find((a) => a.path === '/other')!.at;
    assert.ok(
      arrived - sentAt >= 1_000,
      `another caller reached the server ${(arrived - sentAt).toFixed(1)}ms after the 429`,
    );
    assert.ok(list[0]!.waitMs >= 800, `it waited ${list[0]!.waitMs.toFixed(1)}ms`);
  });

  it('delivers a 429 at once, unretried, when its wait is longer than maxRetryAfter', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence({ status: 429, headers: { 'retry-after': '30' } }, 200));
    const fetch = h.fetch({ maxRetryAfter: 200 });
    const { list, onReport } = reports();
    const started = performance.now();
    const response = await within(1_000, fetch(server.url('/'), { onReport }), 'the 429');
    assert.ok(performance.now() - started < 1_000, 'delivered without waiting');
    assert.equal(response.status, 429);
    assert.equal(await response.text(), 'attempt 1');
    assert.equal(server.arrivals.length, 1);
    const [report] = list;
    assert.equal(report!.attempts, 1);
    assert.equal(report!.status, 429);
    assert.equal(report!.ok, false);
    assert.match(report!.error ?? '', /30s.*maxRetryAfter \(200ms\)/);
    assert.deepEqual(report!.serverWait, { ms: 30_000, source: 'retry-after' });
  });

  it('ignores a malformed Retry-After and backs off as usual', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(
      sequence({ status: 503, headers: { 'retry-after': 'whenever' } }, 200),
    );
    const fetch = h.fetch({ retry: { retries: 1, minDelay: 1 } });
    const { list, onReport } = reports();
    const response = await fetch(server.url('/'), { onReport });
    assert.equal(response.status, 200);
    await response.text();
    assert.equal(server.arrivals.length, 2);
    assert.ok(list[0]!.retries[0]!.delayMs <= 1, `a delay of ${list[0]!.retries[0]!.delayMs}ms`);
  });
});

describe('createFetch: timeouts and signals', { timeout: 10_000 }, () => {
  it('times out an attempt the server never answers, and retries it for a GET', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('hang'));
    const fetch = h.fetch({ timeout: 150, retry: { retries: 1, minDelay: 1 } });
    const { list, onReport } = reports();
    const error = await within(2_000, fetch(server.url('/'), { onReport }), 'the timeouts').then(
      () => assert.fail('expected a rejection'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RetryError, String(error));
    assert.equal(error.attempts, 2);
    assert.ok(error.cause instanceof TimeoutError);
    assert.equal(server.arrivals.length, 2);
    const [report] = list;
    assert.equal(report!.ok, false);
    assert.equal(report!.status, undefined);
    assert.match(report!.retries[0]!.error ?? '', /timed out after 150ms/);
    assert.match(report!.error ?? '', /^failed after 2 attempts: the task timed out after 150ms/);
  });

  it('rejects with a TimeoutError when retries are off or the method is not idempotent', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('hang'));
    const noRetry = h.fetch({ timeout: 100, retry: 0 });
    await assert.rejects(within(1_000, noRetry(server.url('/get')), 'the timeout'), TimeoutError);
    const post = h.fetch({ timeout: 100, retry: { retries: 2, minDelay: 1 } });
    await assert.rejects(
      within(1_000, post(server.url('/post'), { method: 'POST', body: 'x' }), 'the timeout'),
      TimeoutError,
    );
    assert.deepEqual(
      server.arrivals.map((a) => a.path),
      ['/get', '/post'],
    );
  });

  it('counts the body in the timeout of an attempt', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((_req, res) => {
      res.writeHead(200);
      res.write('never finished');
    });
    const fetch = h.fetch({ timeout: 150, retry: 0 });
    const started = performance.now();
    const response = await fetch(server.url('/'));
    assert.equal(response.status, 200);
    await assert.rejects(
      within(1_000, response.text(), 'the timeout'),
      (e) => !(e instanceof Stalled),
    );
    const took = performance.now() - started;
    assert.ok(took >= 150 && took < 1_500, `the body failed after ${took.toFixed(1)}ms`);
  });

  it('aborts every request, in flight or waiting, with the client signal', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('hang'));
    const controller = new AbortController();
    const fetch = h.fetch({ signal: controller.signal, perOrigin: { concurrency: 1 } });
    const inFlight = fetch(server.url('/a'));
    const waiting = fetch(server.url('/b'));
    await until(() => server.arrivals.length === 1, 'the first request arrives');
    const reason = new Error('shutting down');
    controller.abort(reason);
    await assert.rejects(within(1_000, inFlight, 'the abort'), (e) => e === reason);
    await assert.rejects(within(1_000, waiting, 'the abort'), (e) => e === reason);
    await assert.rejects(fetch(server.url('/c')), (e) => e === reason);
    assert.equal(server.arrivals.length, 1);
  });

  it('aborts one request with its own signal, and gives its slot back', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((req, res) => {
      if (req.url !== '/free') return; // the others hang
      reply(res, 200, {}, 'free');
    });
    const fetch = h.fetch({ perOrigin: { concurrency: 1 } });
    const first = new AbortController();
    const second = new AbortController();
    const inFlight = fetch(server.url('/a'), { signal: first.signal });
    const waiting = fetch(server.url('/b'), { signal: second.signal });
    await until(() => server.arrivals.length === 1, 'the first request arrives');
    second.abort();
    await assert.rejects(within(1_000, waiting, 'the abort'), { name: 'AbortError' });
    first.abort();
    await assert.rejects(within(1_000, inFlight, 'the abort'), { name: 'AbortError' });
    const free = await within(2_000, fetch(server.url('/free')), 'a request after the aborts');
    assert.equal(await free.text(), 'free');
    assert.deepEqual(
      server.arrivals.map((a) => a.path),
      ['/a', '/free'],
    );
  });
});

describe('what a gate that learns is told of each attempt', { timeout: 10_000 }, () => {
  /** [ok, dropped] of each outcome, in the order the permits came back; null for none. */
  const told = (gate: { released: (ReleaseOutcome | undefined)[] }) =>
    gate.released.map((o) => (o === undefined ? null : [o.ok, o.dropped === true]));

  for (const kind of ['createFetch', 'createExchange'] as const) {
    it(`${kind}: a 429 or 503 is a drop, retried or delivered; a 200 and a 404 are not`, async (t) => {
      const h = new Harness(t);
      const server = await h.serve((req, res) => {
        const status = Number(req.url?.slice(1));
        reply(res, status, {}, String(status));
      });
      const gate = new RecordingGate(4);
      const options: HttpOptions = { concurrency: gate, retry: { retries: 1, minDelay: 1 } };
      const get = async (path: string, method = 'GET'): Promise<number> => {
        if (kind === 'createExchange') {
          const exchange = createExchange(options);
          t.after(() => exchange.close());
          return (await exchange(server.url(path), { method })).status;
        }
        const response = await h.fetch(options)(server.url(path), { method });
        await response.text();
        return response.status;
      };
      assert.equal(await get('/200'), 200);
      assert.equal(await get('/404'), 404);
      assert.equal(await get('/429'), 429, 'retried once, then delivered');
      assert.equal(await get('/503', 'POST'), 503, 'delivered at once: a POST is not retried');
      await until(() => gate.released.length === 5, 'every permit is back');
      assert.deepEqual(told(gate), [
        [true, false],
        [true, false],
        [false, true],
        [true, true],
        [true, true],
      ]);
    });
  }

  it('a timeout is a drop; an abort tells nothing', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(() => undefined); // never answers
    const gate = new RecordingGate(4);
    const fetch = h.fetch({ concurrency: gate, retry: 0, timeout: 50 });
    await assert.rejects(fetch(server.url('/slow')), TimeoutError);
    const controller = new AbortController();
    const aborted = fetch(server.url('/aborted'), { signal: controller.signal });
    await until(() => server.arrivals.length === 2, 'the second request arrives');
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    await until(() => gate.released.length === 2, 'every permit is back');
    assert.deepEqual(told(gate), [[false, true], null]);
  });
});

describe('createFetch: responses and reports', { timeout: 10_000 }, () => {
  it('settles each call and frees its slot when an onReport listener throws, and rethrows that on its own', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((req, res) => {
      if (req.url === '/drop') req.socket.destroy();
      else reply(res, 200, {}, 'fine');
    });
    const thrown = catchUncaught(t);
    const fetch = h.fetch({
      concurrency: 1,
      retry: 0,
      onReport: () => {
        throw new Error('the listener broke');
      },
    });
    const ok = await within(2000, fetch(server.url('/a')), 'the first call');
    assert.equal(await ok.text(), 'fine');
    await assert.rejects(within(2000, fetch(server.url('/drop')), 'the failing call'), (error) => {
      assert.notEqual((error as Error).message, 'the listener broke');
      return true;
    });
    const again = await within(2000, fetch(server.url('/b')), 'a call after them');
    assert.equal(await again.text(), 'fine');
    await delay(10);
    assert.deepEqual(
      thrown.map((error) => (error as Error).message),
      ['the listener broke', 'the listener broke', 'the listener broke'],
    );
  });

  it('returns a global Response with the status, headers, url and body', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((req, res) => {
      if (req.url === '/moved') {
        reply(res, 302, { location: '/final' });
        return;
      }
      reply(res, 201, { 'content-type': 'application/json', 'x-test': 'yes' }, '{"a":1}');
    });
    const fetch = h.fetch();
    const response = await fetch(server.url('/thing'));
    assert.ok(response instanceof Response);
    assert.ok(response.headers instanceof Headers);
    assert.equal(response.status, 201);
    assert.equal(response.statusText, 'Created');
    assert.equal(response.ok, true);
    assert.equal(response.url, server.url('/thing'));
    assert.equal(response.redirected, false);
    assert.equal(response.headers.get('x-test'), 'yes');
    assert.deepEqual(await response.json(), { a: 1 });
    const moved = await fetch(new URL(server.url('/moved')));
    assert.equal(moved.url, server.url('/final'));
    assert.equal(moved.redirected, true);
    assert.deepEqual(await moved.json(), { a: 1 });
  });

  it('sends the method, headers and body it is given', async (t) => {
    const h = new Harness(t);
    let received = '';
    const server = await h.serve((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        received = Buffer.concat(chunks).toString();
        reply(res, 200);
      });
    });
    const fetch = h.fetch();
    const response = await fetch(server.url('/'), {
      method: 'put',
      headers: { 'x-test': 'yes' },
      body: 'payload',
    });
    await response.text();
    assert.equal(server.arrivals[0]!.method, 'PUT');
    assert.equal(server.arrivals[0]!.headers['x-test'], 'yes');
    assert.equal(received, 'payload');
  });

  it('accepts a Request as input, with its method and headers', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((_req, res) => {
      reply(res, 200, {}, 'ok');
    });
    const fetch = h.fetch();
    const response = await fetch(
      new Request(server.url('/req'), { method: 'DELETE', headers: { 'x-test': 'yes' } }),
    );
    assert.equal(await response.text(), 'ok');
    assert.equal(server.arrivals[0]!.method, 'DELETE');
    assert.equal(server.arrivals[0]!.headers['x-test'], 'yes');
  });

  it('reports attempts, status, timings and retries to the client and to the call', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence(503, 500, 200));
    const client = reports();
    const call = reports();
    const fetch = h.fetch({
      onReport: client.onReport,
      retry: { retries: 2, minDelay: 20, jitter: 'none' },
    });
    const url = server.url('/report');
    const response = await fetch(url, { onReport: call.onReport });
    await response.text();
    assert.equal(client.list.length, 1);
    assert.equal(call.list.length, 1);
    assert.deepEqual(client.list[0], call.list[0]);
    const report = call.list[0]!;
    assert.equal(report.url, url);
    assert.equal(report.method, 'GET');
    assert.equal(report.origin, server.origin);
    assert.equal(report.attempts, 3);
    assert.equal(report.status, 200);
    assert.equal(report.ok, true);
    assert.equal(report.error, undefined);
    assert.equal(report.serverWait, undefined);
    assert.deepEqual(report.retries, [
      { status: 503, delayMs: 20 },
      { status: 500, delayMs: 40 },
    ]);
    assert.equal(report.attemptStarts.length, 3);
    const [s1, s2, s3] = report.attemptStarts as [number, number, number];
    assert.ok(s1 >= 0 && s2 - s1 >= 20 && s3 - s2 >= 40, String(report.attemptStarts));
    assert.ok(
      report.waitMs >= 60 && report.waitMs <= report.ms,
      `${report.waitMs} of ${report.ms}`,
    );
  });

  it('reports the time spent waiting for a slot', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(200));
    const fetch = h.fetch({ perOrigin: { concurrency: 1 } });
    const { list, onReport } = reports();
    await Promise.all(
      ['/first', '/second'].map((path) =>
        fetch(server.url(path), { onReport }).then((r) => r.text()),
      ),
    );
    const second = list.find((r) => r.url.endsWith('/second'))!;
    assert.ok(second.waitMs >= 150, `waited ${second.waitMs.toFixed(1)}ms for the slot`);
    assert.ok(second.ms >= second.waitMs);
  });

  it('reports a failure with its error and no status', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('destroy'));
    const fetch = h.fetch({ retry: 0 });
    const { list, onReport } = reports();
    await assert.rejects(fetch(server.url('/'), { onReport }));
    assert.equal(list.length, 1);
    const [report] = list;
    assert.equal(report!.ok, false);
    assert.equal(report!.status, undefined);
    assert.equal(report!.attempts, 1);
    assert.match(report!.error ?? '', /fetch failed/);
  });

  it('reports the error of a request that failed after retries as the error says it, once', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('destroy'));
    const fetch = h.fetch({ retry: { retries: 1, minDelay: 1 } });
    const { list, onReport } = reports();
    const error = await fetch(server.url('/'), { onReport }).then(
      () => assert.fail('expected a rejection'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RetryError);
    assert.match(error.message, /^failed after 2 attempts: fetch failed/);
    assert.equal(list[0]!.error, error.message);
  });

  it('leaves the global dispatcher alone', async (t) => {
    const h = new Harness(t);
    const key = Symbol.for('undici.globalDispatcher.1');
    const before: unknown = Reflect.get(globalThis, key);
    const server = await h.serve((_req, res) => {
      reply(res, 200, {}, 'ok');
    });
    const fetch = h.fetch();
    assert.equal(await (await fetch(server.url('/'))).text(), 'ok');
    assert.equal(Reflect.get(globalThis, key), before);
    assert.notEqual(fetch.client.agent, before);
  });
});

describe('createFetch: close', { timeout: 10_000 }, () => {
  it('rejects waiting requests with a ClosedError, and later ones too', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(100));
    // Not through the harness: this test closes the client itself.
    const fetch = createFetch({ perOrigin: { concurrency: 1 } });
    let closed = false;
    t.after(async () => {
      if (!closed) await fetch.close();
    });
    const inFlight = fetch(server.url('/a'));
    const waiting = fetch(server.url('/b'));
    await until(() => server.arrivals.length === 1, 'the first request arrives');
    const closing = fetch.close();
    closed = true;
    await assert.rejects(waiting, ClosedError);
    assert.equal(await (await inFlight).text(), 'ok');
    await closing;
    await assert.rejects(fetch(server.url('/c')), ClosedError);
    assert.equal(server.arrivals.length, 1);
  });

  it('delivers a response in flight at close() that asks its origin to pause, and a 429 with Retry-After', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((req, res) =>
      setTimeout(() => {
        if (req.url === '/exhausted') {
          reply(res, 200, { RateLimit: 'limit=10, remaining=0, reset=30' }, 'last one');
        } else {
          reply(res, 429, { 'Retry-After': '1' }, 'slow down');
        }
      }, 100),
    );
    for (const make of [createFetch, createRequest]) {
      const request = make({ retry: 0 });
      let closed = false;
      t.after(async () => {
        if (!closed) await request.close();
      });
      const exhausted = request(server.url('/exhausted'));
      const tooMany = request(server.url('/too-many'));
      const before = server.arrivals.length;
      await until(() => server.arrivals.length === before + 2, 'both requests arrive');
      const closing = request.close();
      closed = true;
      // Closing, the client admits nothing more, so it pauses no origin: what came is delivered.
      const [first, second] = await Promise.all([exhausted, tooMany]);
      assert.deepEqual(
        [first.status, await bodyText(first)],
        [200, 'last one'],
        `${make.name}: the 200`,
      );
      assert.deepEqual(
        [second.status, await bodyText(second)],
        [429, 'slow down'],
        `${make.name}: the 429`,
      );
      await closing;
    }
  });

  it('can be closed twice, and makes no dispatcher once closed', async () => {
    const fetch = createFetch();
    await fetch.close();
    await fetch.close();
    assert.throws(() => fetch.client.agent, ClosedError);
    const used = createFetch();
    const agent = used.client.agent;
    await used.close();
    assert.equal(used.client.agent, agent);
    const request = createRequest();
    await request.close();
    await request.close();
  });

  it('closes by its deadline even while a response body is left unread, aborting that body', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((_req, res) => {
      reply(res, 200, {}, 'unread');
    });
    const fetch = h.fetch();
    const response = await fetch(server.url('/'));
    const closing = fetch.close({ deadline: 50 });
    try {
      await within(500, closing, 'close({ deadline: 50 })');
      await assert.rejects(response.text());
    } finally {
      await response.text().catch(() => undefined);
      await closing;
    }
  });
});

describe('createRequest', { timeout: 10_000 }, () => {
  it('never has more requests in flight at the server than perOrigin.concurrency', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(30));
    const request = h.request({ perOrigin: { concurrency: 2 } });
    const bodies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => request(server.url(`/${i}`)).then((r) => r.body.text())),
    );
    assert.deepEqual(bodies, Array(8).fill('ok'));
    assert.equal(server.peak, 2);
  });

  it('holds the slot until the body has been read', async (t) => {
    const h = new Harness(t);
    let consumed = 0;
    let unfinished = 0;
    const server = await h.serve((_req, res) => {
      unfinished = Math.max(unfinished, server.arrivals.length - consumed);
      reply(res, 200, {}, 'body');
    });
    const request = h.request({ perOrigin: { concurrency: 2 } });
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const response = await request(server.url(`/${i}`));
        await delay(30);
        await response.body.text();
        consumed++;
      }),
    );
    assert.equal(unfinished, 2);
  });

  it('returns the status, headers and body', async (t) => {
    const h = new Harness(t);
    const server = await h.serve((_req, res) => {
      reply(res, 201, { 'content-type': 'application/json', 'x-test': 'yes' }, '{"a":1}');
    });
    const request = h.request();
    const response = await request(new URL(server.url('/')), {
      method: 'PUT',
      headers: { 'x-sent': 'yes' },
      body: 'payload',
    });
    assert.equal(response.status, 201);
    assert.equal(response.headers['x-test'], 'yes');
    assert.deepEqual(await response.body.json(), { a: 1 });
    assert.equal(server.arrivals[0]!.method, 'PUT');
    assert.equal(server.arrivals[0]!.headers['x-sent'], 'yes');
  });

  it('retries a GET that gets 503 twice, and not a POST', async (t) => {
    const h = new Harness(t);
    const get = await h.serve(sequence(503, 503, 200));
    const post = await h.serve(sequence(503, 200));
    const request = h.request();
    const { list, onReport } = reports();
    const response = await request(get.url('/'), { onReport });
    assert.equal(response.status, 200);
    assert.equal(await response.body.text(), 'attempt 3');
    assert.equal(list[0]!.attempts, 3);
    assert.deepEqual(
      list[0]!.retries.map((r) => r.status),
      [503, 503],
    );
    const refused = await request(post.url('/'), { method: 'POST', body: 'x', onReport });
    assert.equal(refused.status, 503);
    await refused.body.dump();
    assert.equal(post.arrivals.length, 1);
    assert.equal(list[1]!.attempts, 1);
  });

  it('retries a 503 whose thrown-away body breaks off, with no unhandled rejection', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(cutShort('destroy'));
    const request = h.request({ retry: { retries: 2, minDelay: 1, maxDelay: 1 } });
    const response = await request(server.url('/'));
    assert.equal(response.status, 200);
    assert.equal(await response.body.text(), 'attempt 2');
  });

  it('takes one retry-budget token for a retry whose thrown-away body times out', async (t) => {
    const h = new Harness(t);
    // The 503's body stops coming while it is being thrown away: the attempt times out.
    const server = await h.serve(cutShort('stall'));
    // One retry in the window, no more.
    const budget = new RetryBudget({ ratio: 0, minPerSecond: 0.1, window: 10_000 });
    const request = h.request({
      retry: { retries: 2, minDelay: 1, maxDelay: 1, budget },
      timeout: 300,
    });
    const { list, onReport } = reports();
    const response = await request(server.url('/'), { onReport });
    assert.equal(response.status, 200);
    assert.equal(await response.body.text(), 'attempt 2');
    assert.equal(list[0]!.attempts, 2);
    // The one token went to that retry: there is none left.
    assert.equal(budget.tryRetry(), false);
  });

  it('waits the reset of X-RateLimit-Remaining: 0 before the next attempt', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(
      sequence(
        { status: 429, headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '1' } },
        200,
      ),
    );
    const request = h.request();
    const response = await request(server.url('/'));
    assert.equal(response.status, 200);
    await response.body.text();
    const [gap] = gaps(server.arrivals.map((a) => a.at));
    assert.ok(gap! >= 1_000 && gap! < 1_600, `the retry came ${gap!.toFixed(1)}ms later`);
  });

  it('times out an attempt the server never answers', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(sequence('hang'));
    const request = h.request({ timeout: 100, retry: 0 });
    await assert.rejects(within(1_000, request(server.url('/')), 'the timeout'), TimeoutError);
    assert.equal(server.arrivals.length, 1);
  });
});

describe('a request undici refuses', { timeout: 15_000 }, () => {
  /** A POST with `Transfer-Encoding: chunked` and a string body: undici refuses it inside dispatch(). */
  const refused = {
    method: 'POST',
    headers: { 'transfer-encoding': 'chunked' },
    body: 'hello',
  } as const;

  it('createExchange: fails it at once, and sends the next requests to its origin', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(0, 'fine'));
    const exchange = createExchange({ perOrigin: { concurrency: 1 }, timeout: 5_000 });
    t.after(() => exchange.close({ deadline: 0 }));
    const [a, b, c] = await within(
      3_000,
      Promise.allSettled([
        exchange(server.url('/a'), refused),
        exchange(server.url('/b'), refused),
        exchange(server.url('/c'), { keepBody: true }),
      ]),
      'three calls, one slot',
    );
    for (const outcome of [a, b]) {
      assert.equal(outcome.status, 'rejected');
      assert.match(String(outcome.reason), /transfer-encoding/);
    }
    assert.equal(c.status === 'fulfilled' ? c.value.body?.toString() : c.reason, 'fine');
    assert.deepEqual(
      server.arrivals.map((a) => a.path),
      ['/c'],
    );
    await assertAtRest(exchange.client, [server.origin]);
  });

  for (const api of ['createFetch', 'createRequest'] as const) {
    it(`${api}: fails it at once, and sends the next requests to its origin`, async (t) => {
      const h = new Harness(t);
      const server = await h.serve(answerAfter(0, 'fine'));
      const options: HttpOptions = { perOrigin: { concurrency: 1 }, timeout: 5_000 };
      const get =
        api === 'createFetch'
          ? (() => {
              const fetch = h.fetch(options);
              return Object.assign(
                (path: string, init?: typeof refused) =>
                  fetch(server.url(path), init).then((r) => r.text()),
                { client: fetch.client },
              );
            })()
          : (() => {
              const request = h.request(options);
              return Object.assign(
                (path: string, init?: typeof refused) =>
                  request(server.url(path), init).then((r) => r.body.text()),
                { client: request.client },
              );
            })();
      const outcomes = await within(
        3_000,
        Promise.allSettled([get('/a', refused), get('/b', refused), get('/c')]),
        'three calls, one slot',
      );
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ['rejected', 'rejected', 'fulfilled'],
      );
      assert.equal((outcomes[2] as PromiseFulfilledResult<string>).value, 'fine');
      await assertAtRest(get.client, [server.origin]);
    });
  }

  it('sluice fetch: writes a record for every line and exits 1', async (t) => {
    const h = new Harness(t);
    const server = await h.serve(answerAfter(0, 'fine'));
    const line = (path: string, request: object = {}) =>
      JSON.stringify({ url: server.url(path), ...request });
    const stdin = [line('/a', refused), line('/b', refused), line('/c')].join('\n') + '\n';
    const run = await within(5_000, cli(['fetch', '-', '-c', '1'], { stdin }), 'sluice fetch');
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(
      run.records.map((r) => [r.index, r.ok]),
      [
        [0, false],
        [1, false],
        [2, true],
      ],
    );
  });

  it('createExchange: ends an attempt at its timeout while undici is still connecting', async (t) => {
    // A TCP server that never answers the TLS handshake: undici has not started the request
    // (it is waiting for its connection) when the attempt times out.
    const sockets: Socket[] = [];
    const silent = createNetServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    t.after(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const origin = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const exchange = createExchange({ perOrigin: { concurrency: 1 }, timeout: 200, retry: 0 });
    t.after(() => exchange.close({ deadline: 0 }));
    const started = performance.now();
    await assert.rejects(within(3_000, exchange(`${origin}/a`), 'the timeout'), TimeoutError);
    // Its slot is back well before undici's own connect timeout (10 s).
    await within(3_000, exchange.client.limiter.onIdle(), 'the slot back');
    assert.ok(performance.now() - started < 3_000);
    await assertAtRest(exchange.client, [origin]);
  });
});

describe('methods no fetch client may send (CONNECT, TRACE, TRACK)', { timeout: 15_000 }, () => {
  for (const method of ['CONNECT', 'TRACE', 'track']) {
    it(`${method}: every API refuses it at once, sends nothing, and holds nothing`, async (t) => {
      const h = new Harness(t);
      const server = await h.serve(answerAfter(0, 'fine'));
      const exchange = createExchange();
      const request = createRequest();
      const fetch = createFetch();
      t.after(async () => {
        await Promise.all([exchange.close(), request.close(), fetch.close()]);
      });
      const outcomes = await within(
        3_000,
        Promise.allSettled([
          exchange(server.url('/x'), { method }),
          request(server.url('/x'), { method }),
          fetch(server.url('/x'), { method }),
        ]),
        `three ${method} calls`,
      );
      for (const outcome of outcomes) {
        assert.equal(outcome.status, 'rejected');
        assert.ok(outcome.reason instanceof TypeError, String(outcome.reason));
      }
      assert.deepEqual(server.arrivals, []);
      for (const client of [exchange.client, request.client, fetch.client]) {
        await assertAtRest(client, []);
      }
    });
  }
});
