/**
 * `_h1.ts`, the plain-HTTP/1.1 client behind `createExchange()`'s `http:` requests, against real
 * TCP servers on 127.0.0.1. Most servers here are `node:net` ones that read the requests
 * themselves and write hand-made response bytes, so that framing edge cases can be produced
 * (chunk extensions, bare LF, heads split anywhere, lengths that disagree); `node:http` serves
 * where a normal server is enough. The tests judge the client by what its handler heard and by
 * what the server saw: connections accepted and closed, requests received.
 *
 * Every network wait is bounded (`within`, `until`), and every test closes its wires, clients and
 * servers in an `after` hook (servers drop their connections, so nothing is left waiting).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  createServer as createHttpServer,
  maxHeaderSize,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import fc from 'fast-check';
import {
  prepare,
  Wire,
  type WireControl,
  type WireHandler,
  type WireRequest,
} from '../src/http/_h1.ts';
import { createExchange, type ExchangeFunction, type HttpOptions } from '../src/http/index.ts';
import { seeded } from './_helpers/random.ts';
import { readRequests } from './_helpers/raw-server.ts';
import { stepWallClock } from './_helpers/wall-clock.ts';
import { within } from './_helpers/within.ts';

// ---------------------------------------------------------------------------------------------
// Bounded waits
// ---------------------------------------------------------------------------------------------

/** Waits until `condition()` holds (checked every few ms), for at most `ms`. */
async function until(condition: () => boolean, what: string, ms = 3_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await delay(2);
  }
}

/** A turn of the event loop, so that a read or a close on loopback can be handled. */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------------

type Headers = Record<string, string | string[] | undefined>;

interface Hooks {
  keepsBody?: boolean;
  onRequestStart?: (control: WireControl, recorder: Recorder) => void;
  onResponseStart?: (control: WireControl, recorder: Recorder) => void;
  onResponseData?: (control: WireControl, chunk: Buffer, recorder: Recorder) => void;
  onResponseEnd?: (control: WireControl, recorder: Recorder) => void;
}

/** A WireHandler that records everything it hears, and settles on the first end or error. */
class Recorder implements WireHandler {
  readonly keepsBody: boolean;
  /** The control of every onRequestStart (more than one when the request was resent). */
  readonly controls: WireControl[] = [];
  /** The status of every onResponseStart. */
  readonly statuses: number[] = [];
  headers: Headers | undefined = undefined;
  /** Each chunk copied as it came (valid whatever `keepsBody` says). */
  readonly copies: Buffer[] = [];
  /** Each chunk as it was passed, kept only when `keepsBody` says it may be. */
  readonly kept: Buffer[] = [];
  ends = 0;
  readonly errors: Error[] = [];
  readonly #hooks: Hooks;
  readonly #settled: Promise<void>;
  #settle: () => void = () => undefined;

  constructor(hooks: Hooks = {}) {
    this.keepsBody = hooks.keepsBody ?? false;
    this.#hooks = hooks;
    this.#settled = new Promise((resolve) => {
      this.#settle = resolve;
    });
  }

  get starts(): number {
    return this.controls.length;
  }

  get status(): number | undefined {
    return this.statuses.at(-1);
  }

  get body(): Buffer {
    return Buffer.concat(this.copies);
  }

  /** The code of the one error heard. */
  get code(): unknown {
    const error: (Error & { code?: unknown }) | undefined = this.errors[0];
    return error?.code;
  }

  /** Resolves once the handler heard onResponseEnd or onResponseError (at most 3 s). */
  async settled(what = 'the response'): Promise<this> {
    await within(3_000, this.#settled, what);
    return this;
  }

  onRequestStart(control: WireControl): void {
    this.controls.push(control);
    this.#hooks.onRequestStart?.(control, this);
  }

  onResponseStart(control: WireControl, status: number, headers: Headers): void {
    this.statuses.push(status);
    this.headers = headers;
    this.#hooks.onResponseStart?.(control, this);
  }

  onResponseData(control: WireControl, chunk: Buffer): void {
    // The chunk is only valid now (unless keepsBody): copy it before anything else runs.
    this.copies.push(Buffer.from(chunk));
    if (this.keepsBody) this.kept.push(chunk);
    this.#hooks.onResponseData?.(control, chunk, this);
  }

  onResponseEnd(control: WireControl): void {
    this.ends++;
    this.#settle();
    this.#hooks.onResponseEnd?.(control, this);
  }

  onResponseError(_control: WireControl, error: Error): void {
    this.errors.push(error);
    this.#settle();
  }
}

/** Asserts that `r` heard exactly one error, with `code` (a string, or a pattern for it). */
function assertFailed(r: Recorder, code: string | RegExp): void {
  assert.equal(r.ends, 0, 'no onResponseEnd');
  assert.equal(r.errors.length, 1, `one onResponseError, got ${r.errors.length}`);
  if (typeof code === 'string') assert.equal(r.code, code, r.errors[0]?.message);
  else assert.match(String(r.code), code, r.errors[0]?.message);
}

/** Asserts that `r` heard exactly one end, with `status` and `body`. */
function assertDelivered(r: Recorder, status: number, body: string | Buffer): void {
  assert.deepEqual(r.errors, [], 'no onResponseError');
  assert.equal(r.ends, 1, 'one onResponseEnd');
  assert.equal(r.status, status);
  assert.deepEqual(r.body, typeof body === 'string' ? Buffer.from(body, 'latin1') : body);
}

/** A request `prepare()` must be able to write. */
function prepared(
  method: string,
  url: URL,
  headers?: Record<string, string>,
  body: string | Uint8Array | null = null,
): WireRequest {
  const request = prepare(method, url.pathname + url.search, url.host, headers, body);
  assert.ok(request !== undefined, `prepare(${method} ${url.href}) gave undefined`);
  return request;
}

/** Dispatches `request` to `url`'s origin through `wire`; `handler` hears what comes back. */
function dispatch(
  wire: Wire,
  url: URL,
  request: WireRequest = prepared('GET', url),
  handler: Recorder = new Recorder(),
): Recorder {
  wire.pool(url.origin, url).dispatch(request, handler);
  return handler;
}

/** {@link dispatch}, resolved with the handler once it heard the end or an error. */
function send(wire: Wire, url: URL, request?: WireRequest, handler?: Recorder): Promise<Recorder> {
  return dispatch(wire, url, request, handler).settled(`the response to ${url.pathname}`);
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/** A request as the raw server read it. */
interface RawRequest {
  /** 1-based, in order of arrival at the server. */
  readonly n: number;
  /** The 1-based number of the connection it came on. */
  readonly connection: number;
  /** Request line and headers, blank line included. */
  readonly head: string;
  readonly method: string;
  readonly path: string;
  readonly body: Buffer;
  readonly socket: Socket;
}

type Responder = (request: RawRequest) => void | Promise<void>;

interface RawServer {
  readonly origin: string;
  url(path?: string): URL;
  /** Connections accepted, and closed (by either side). */
  connections: number;
  closed: number;
  readonly requests: RawRequest[];
  /** The connection sockets, in order of arrival. */
  readonly sockets: Socket[];
}

interface HttpServer {
  readonly origin: string;
  url(path?: string): URL;
  connections: number;
  /** Connections open now. */
  open: number;
  /** Requests in flight, and the most there ever were. */
  active: number;
  peak: number;
  readonly requests: { method: string; path: string; headers: IncomingMessage['headers'] }[];
}

/** Writes `bytes` as separate writes split at `cuts`, a turn of the event loop between them. */
async function writeSplit(socket: Socket, bytes: Buffer, cuts: readonly number[]): Promise<void> {
  const at = [...new Set(cuts.filter((c) => c > 0 && c < bytes.length))].sort((a, b) => a - b);
  let from = 0;
  for (const to of [...at, bytes.length]) {
    if (socket.destroyed) return;
    socket.write(bytes.subarray(from, to));
    from = to;
    if (to < bytes.length) {
      await turn();
      await turn();
    }
  }
}

/** Writes `bytes` and closes the connection at once, as a server closing an idle one does. */
function writeAndClose(socket: Socket, bytes: string | Buffer): void {
  socket.write(bytes);
  if (socket.writableLength === 0) socket.destroy();
  else socket.end(() => socket.destroy());
}

/** A server's origin and URLs, before it listens (`#listen()` sets the origin). */
function unlistened(): { origin: string; url(path?: string): URL } {
  return {
    origin: '',
    url(path = '/') {
      return new URL(path, this.origin);
    },
  };
}

/** The wires, clients and servers of one test (or of one property run), closed at its end. */
class Harness {
  readonly #clients: (() => unknown)[] = [];
  readonly #servers: (() => Promise<void>)[] = [];

  constructor(t?: TestContext) {
    t?.after(() => this.close());
  }

  async close(): Promise<void> {
    const closing = this.#clients.map((close) => close());
    await Promise.all(this.#servers.map((close) => close()));
    await Promise.all(closing);
  }

  wire(): Wire {
    const wire = new Wire();
    this.#clients.push(() => {
      wire.close(true, new Error('the test is over'));
    });
    return wire;
  }

  exchange(options?: HttpOptions): ExchangeFunction {
    const exchange = createExchange(options);
    this.#clients.push(() => exchange.close({ deadline: 0 }));
    return exchange;
  }

  /** Starts `server` on 127.0.0.1 and sets `state.origin`; at the end, `stop()`, then it closes. */
  async #listen(server: Server, state: { origin: string }, stop: () => void): Promise<void> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    state.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    this.#servers.push(async () => {
      stop();
      await new Promise((resolve) => server.close(resolve));
    });
  }

  /** A `node:net` server that reads requests (Content-Length bodies) and lets `respond` answer. */
  async raw(respond: Responder): Promise<RawServer> {
    const state: RawServer = {
      ...unlistened(),
      connections: 0,
      closed: 0,
      requests: [],
      sockets: [],
    };
    const server = createServer((socket) => {
      const connection = ++state.connections;
      state.sockets.push(socket);
      socket.on('error', () => undefined); // a client resetting is part of some tests
      socket.on('close', () => {
        state.closed++;
      });
      readRequests(socket, (head, method, path, body) => {
        const request = {
          n: state.requests.length + 1,
          connection,
          head,
          method,
          path,
          body,
          socket,
        };
        state.requests.push(request);
        void Promise.resolve(respond(request)).catch(() => socket.destroy());
      });
    });
    await this.#listen(server, state, () => {
      for (const socket of state.sockets) socket.destroy();
    });
    return state;
  }

  /** A `node:http` server (keep-alive) that counts its connections and requests in flight. */
  async http(
    handler: (req: IncomingMessage, res: ServerResponse, n: number) => void,
  ): Promise<HttpServer> {
    const state: HttpServer = {
      ...unlistened(),
      connections: 0,
      open: 0,
      active: 0,
      peak: 0,
      requests: [],
    };
    const server = createHttpServer();
    server.on('connection', (socket: Socket) => {
      state.connections++;
      state.open++;
      socket.on('close', () => {
        state.open--;
      });
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      state.requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers });
      state.active++;
      state.peak = Math.max(state.peak, state.active);
      res.once('close', () => {
        state.active--;
      });
      req.resume();
      handler(req, res, state.requests.length);
    });
    await this.#listen(server, state, () => {
      server.closeAllConnections();
    });
    return state;
  }
}

/** A raw server that answers every request with `response` (written in one write). */
function answering(h: Harness, response: string | Buffer): Promise<RawServer> {
  return h.raw(({ socket }) => {
    socket.write(response);
  });
}

/**
 * Serves `responses` in turn, one per request, and checks that each request gets its body, all
 * on one connection.
 */
async function deliversInTurn(
  t: TestContext,
  responses: readonly (readonly [response: string, body: string])[],
): Promise<void> {
  const h = new Harness(t);
  const server = await h.raw(({ n, socket }) => {
    socket.write(responses[n - 1]![0]);
  });
  const wire = h.wire();
  for (const [, body] of responses) assertDelivered(await send(wire, server.url()), 200, body);
  assert.equal(server.connections, 1);
}

/** A server that answers the first request with "first" and closes, then the others with "again N". */
function closingAfterFirst(h: Harness): Promise<RawServer> {
  return h.raw(({ n, socket }) => {
    if (n === 1) writeAndClose(socket, ok('first'));
    else socket.write(ok(`again ${n}`));
  });
}

/**
 * Sends /first (which a {@link closingAfterFirst} server answers, then closes), and from its
 * `onResponseEnd`, before the client can have read the server's close, dispatches `url`: the
 * request is written on the connection the server is closing. Resolves once that one settles.
 */
async function sendAfterFirst(
  wire: Wire,
  server: RawServer,
  url: URL,
  request?: WireRequest,
): Promise<Recorder> {
  const next = new Recorder();
  const first = new Recorder({
    onResponseEnd: () => {
      dispatch(wire, url, request, next);
    },
  });
  assertDelivered(await send(wire, server.url('/first'), undefined, first), 200, 'first');
  await next.settled();
  return next;
}

/** `HTTP/1.1 200 OK` with a Content-Length body. */
function ok(body: string, extra = ''): string {
  return `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body, 'latin1')}\r\n${extra}\r\n${body}`;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe('_h1: bodies and framing', { timeout: 10_000 }, () => {
  it('delivers a Content-Length body, its status and its headers', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('hello, world', 'X-Test: yes\r\n'));
    const r = await send(h.wire(), server.url('/a?b=1'));
    assertDelivered(r, 200, 'hello, world');
    assert.equal(r.headers?.['x-test'], 'yes');
    assert.equal(r.headers['content-length'], '12');
    assert.equal(r.starts, 1);
    assert.deepEqual(r.statuses, [200]);
    assert.equal(server.requests[0]?.path, '/a?b=1');
  });

  it('delivers a Content-Length body that comes in many reads, copied by a handler that does not keep chunks', async (t) => {
    const h = new Harness(t);
    const body = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
    const server = await h.raw(async ({ socket }) => {
      const bytes = Buffer.concat([
        Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`),
        body,
      ]);
      const random = seeded(11);
      await writeSplit(
        socket,
        bytes,
        Array.from({ length: 12 }, () => Math.floor(random() * bytes.length)),
      );
    });
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, body);
    assert.ok(r.copies.length > 1, `${r.copies.length} chunks`);
  });

  it('keeps every chunk intact after later reads when keepsBody is true', async (t) => {
    const h = new Harness(t);
    const pieces = ['aaaaaaaa', 'bbbbbbbb', 'cccccccc', 'dddddddd'];
    let next = 1;
    let socket: Socket | undefined;
    const server = await h.raw((request) => {
      socket = request.socket;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 32\r\n\r\n${pieces[0]!}`);
    });
    // The server writes a piece only once the previous one was handed over: one read each, every
    // read into the same place if the client did not copy.
    const r = new Recorder({
      keepsBody: true,
      onResponseData: () => {
        const piece = pieces[next++];
        if (piece !== undefined) setImmediate(() => socket?.write(piece));
      },
    });
    await send(h.wire(), server.url(), undefined, r);
    assertDelivered(r, 200, pieces.join(''));
    assert.equal(r.kept.length, 4);
    assert.deepEqual(
      r.kept.map((chunk) => chunk.toString('latin1')),
      pieces,
    );
  });

  it('hands a handler that does not keep chunks the same bytes, valid during the call', async (t) => {
    const h = new Harness(t);
    const pieces = ['11111111', '22222222', '33333333'];
    let next = 1;
    let socket: Socket | undefined;
    const server = await h.raw((request) => {
      socket = request.socket;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n${pieces[0]!}`);
    });
    const seen: string[] = [];
    const r = new Recorder({
      keepsBody: false,
      onResponseData: (_control, chunk) => {
        seen.push(chunk.toString('latin1'));
        const piece = pieces[next++];
        if (piece !== undefined) setImmediate(() => socket?.write(piece));
      },
    });
    await send(h.wire(), server.url(), undefined, r);
    assertDelivered(r, 200, pieces.join(''));
    assert.deepEqual(seen, pieces);
  });

  it('delivers a chunked body with chunk extensions, uppercase hex and trailers', async (t) => {
    const h = new Harness(t);
    const server = await answering(
      h,
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '5;a=b\r\nhello\r\n' +
        'A ; name="q;x"\r\n0123456789\r\n' +
        '1a\r\nabcdefghijklmnopqrstuvwxyz\r\n' +
        '0;last\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n',
    );
    const wire = h.wire();
    const r = await send(wire, server.url());
    assertDelivered(r, 200, 'hello0123456789abcdefghijklmnopqrstuvwxyz');
    // The trailers were read in full: the connection carries the next request.
    const again = await send(wire, server.url('/2'));
    assertDelivered(again, 200, 'hello0123456789abcdefghijklmnopqrstuvwxyz');
    assert.equal(server.connections, 1);
  });

  it('takes a bare LF at the end of head and trailer lines (RFC 9112 §2.2)', async (t) => {
    const h = new Harness(t);
    const server = await answering(
      h,
      'HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-T: 1\n\n',
    );
    const wire = h.wire();
    assertDelivered(await send(wire, server.url()), 200, 'hello world');
    assertDelivered(await send(wire, server.url()), 200, 'hello world');
    assert.equal(server.connections, 1);
  });

  // Chunk framing has no such leniency (RFC 9112 §7.1): a reader that took a bare LF there could
  // find the end of a chunk where another reader of the same bytes does not.
  for (const [where, body] of [
    ['a chunk-size line', '5\nhello\r\n0\r\n\r\n'],
    ['the end of a chunk', '5\r\nhello\n0\r\n\r\n'],
    ['the last chunk', '5\r\nhello\r\n0\n\r\n'],
  ]) {
    it(`fails a chunked body with a bare LF ending ${where}`, async (t) => {
      const h = new Harness(t);
      const server = await answering(
        h,
        `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
      );
      assertFailed(await send(h.wire(), server.url()), 'HPE_INVALID_CHUNK_SIZE');
    });
  }

  it('accepts the same Content-Length listed more than once', async (t) => {
    await deliversInTurn(t, [
      ['HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello', 'hello'],
      ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc', 'abc'],
      ['HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', ''],
    ]);
  });

  it('takes chunked as the last of several codings, in any case, and an empty chunked body', async (t) => {
    await deliversInTurn(t, [
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n', 'abc'],
      [
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n',
        'de',
      ],
      ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n', ''],
    ]);
  });

  it('reads a body with no length until the server closes the connection', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(async ({ socket }) => {
      socket.write('HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nfirst ');
      await turn();
      socket.write('second');
      await turn();
      socket.end();
    });
    const wire = h.wire();
    const r = await send(wire, server.url());
    assertDelivered(r, 200, 'first second');
    // The next request needs a new connection.
    assertDelivered(await send(wire, server.url()), 200, 'first second');
    assert.equal(server.connections, 2);
  });

  it('reads a body whose transfer coding is not chunked until the connection closes', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ socket }) => {
      socket.end(
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      );
    });
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, '5\r\nhello\r\n0\r\n\r\n');
  });

  it('reads an HTTP/1.0 body with no length until close', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ socket }) => {
      socket.end('HTTP/1.0 200 OK\r\n\r\nold school');
    });
    assertDelivered(await send(h.wire(), server.url()), 200, 'old school');
  });

  it('reads no body for HEAD, 204 or 304 even with a Content-Length, and reuses the connection', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, path, socket }) => {
      if (n === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n');
      else if (path === '/204')
        socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n');
      else if (path === '/304')
        socket.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n');
      else if (path === '/chunked-head')
        socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
      else socket.write(ok('after'));
    });
    const wire = h.wire();
    const head = await send(wire, server.url('/'), prepared('HEAD', server.url('/')));
    assertDelivered(head, 200, '');
    assert.equal(head.headers?.['content-length'], '5');
    assertDelivered(await send(wire, server.url('/204')), 204, '');
    assertDelivered(await send(wire, server.url('/304')), 304, '');
    assertDelivered(
      await send(wire, server.url('/chunked-head'), prepared('HEAD', server.url('/chunked-head'))),
      200,
      '',
    );
    assertDelivered(await send(wire, server.url('/last')), 200, 'after');
    assert.equal(server.connections, 1);
    assert.deepEqual(
      server.requests.map((r) => r.method),
      ['HEAD', 'GET', 'GET', 'HEAD', 'GET'],
    );
  });

  it('skips 100 and 103 interim responses and delivers the final one', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(async ({ n, socket }) => {
      if (n === 1) {
        socket.write(
          'HTTP/1.1 100 Continue\r\n\r\n' +
            'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n' +
            ok('final', 'X-Final: 1\r\n'),
        );
      } else {
        // The same, each head in its own read, split inside its lines.
        await writeSplit(
          socket,
          Buffer.from(
            'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n' +
              ok('final', 'X-Final: 2\r\n'),
          ),
          [5, 24, 25, 30, 50, 61, 62, 70],
        );
      }
    });
    const wire = h.wire();
    for (const n of [1, 2]) {
      const r = await send(wire, server.url());
      assertDelivered(r, 200, 'final');
      assert.deepEqual(r.statuses, [200], 'onResponseStart only for the final response');
      assert.equal(r.headers?.['x-final'], String(n));
      assert.equal(r.headers.link, undefined);
    }
    assert.equal(server.connections, 1);
  });

  it('fails a 101 Switching Protocols that was not asked for', async (t) => {
    const h = new Harness(t);
    const server = await answering(
      h,
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    );
    const r = await send(h.wire(), server.url());
    assertFailed(r, /^HPE_/);
    assert.deepEqual(r.statuses, []);
    await until(() => server.closed === 1, 'the server saw the connection close');
  });
});

/** One response of the property test, and how its bytes are written. */
interface Scripted {
  status: number;
  body: Uint8Array;
  chunked: boolean;
  /** Where the body is cut into chunks. */
  chunkCuts: number[];
  extensions: boolean;
  trailers: boolean;
  /** Whether the head's and the trailers' lines end in a bare LF (chunk framing's never do). */
  bareLf: boolean;
  caseSeed: number;
  /** How the response's bytes are split into writes. */
  split: 'random' | 'cr' | 'lf' | 'bytes';
  cuts: number[];
}

/** The bytes of response `i` of the property test. */
function serialize(s: Scripted, i: number): Buffer {
  const random = seeded(s.caseSeed);
  const mix = (text: string): string =>
    text.replace(/[a-z]/gi, (c) => (random() < 0.5 ? c.toUpperCase() : c.toLowerCase()));
  const eol = s.bareLf ? '\n' : '\r\n';
  const body = Buffer.from(s.body);
  let head = `HTTP/1.1 ${s.status} Some Reason${eol}${mix('X-Index')}: ${i}${eol}`;
  if (!s.chunked) {
    head += `${mix('Content-Length')}: ${body.length}${eol}${eol}`;
    return Buffer.concat([Buffer.from(head, 'latin1'), body]);
  }
  head += `${mix('Transfer-Encoding')}: ${mix('chunked')}${eol}${eol}`;
  const parts = [Buffer.from(head, 'latin1')];
  const bounds = [
    ...new Set([0, ...s.chunkCuts.map((c) => c % (body.length + 1)), body.length]),
  ].sort((a, b) => a - b);
  for (let k = 1; k < bounds.length; k++) {
    const data = body.subarray(bounds[k - 1], bounds[k]);
    const ext = s.extensions ? `;ext${k}=${k}` : '';
    parts.push(
      Buffer.from(`${mix(data.length.toString(16))}${ext}\r\n`),
      data,
      Buffer.from('\r\n'),
    );
  }
  const last = `0${s.extensions ? ';end' : ''}\r\n`;
  const trailers = s.trailers ? `${mix('X-Trailer')}: ${i}${eol}X-More: m${eol}` : '';
  parts.push(Buffer.from(`${last}${trailers}${eol}`));
  return Buffer.concat(parts);
}

/** Where to split `bytes` into writes. */
function cutsOf(s: Scripted, bytes: Buffer): number[] {
  const cuts = s.cuts.map((c) => c % bytes.length);
  for (let at = 0; at < bytes.length; at++) {
    // Byte by byte through the head and the end (the last chunk lines, trailers): not the whole
    // body, which would take a turn of the event loop per byte.
    if (s.split === 'bytes' && (at < 80 || at > bytes.length - 40)) cuts.push(at);
    else if (s.split === 'cr' && bytes[at] === 0x0d)
      cuts.push(at + 1); // between \r and \n
    else if (s.split === 'lf' && bytes[at] === 0x0a) cuts.push(at); // just before each \n
  }
  return cuts;
}

const scripted: fc.Arbitrary<Scripted> = fc.record({
  status: fc.constantFrom(200, 201, 203, 299, 404, 418, 500, 503),
  body: fc.oneof(
    { arbitrary: fc.constant(new Uint8Array(0)), weight: 1 },
    { arbitrary: fc.uint8Array({ maxLength: 24 }), weight: 2 },
    { arbitrary: fc.uint8Array({ maxLength: 400 }), weight: 2 },
  ),
  chunked: fc.boolean(),
  chunkCuts: fc.array(fc.nat(), { maxLength: 6 }),
  extensions: fc.boolean(),
  trailers: fc.boolean(),
  bareLf: fc.boolean(),
  caseSeed: fc.integer(),
  split: fc.constantFrom('random', 'random', 'cr', 'lf', 'bytes'),
  cuts: fc.array(fc.nat(), { maxLength: 8 }),
});

describe('_h1: responses split anywhere on one keep-alive connection', { timeout: 10_000 }, () => {
  it('gives each of several sequential requests exactly its status and body, on one connection', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(scripted, { minLength: 1, maxLength: 5 }),
        fc.boolean(),
        async (responses, keepsBody) => {
          const h = new Harness();
          try {
            const server = await h.raw(async ({ n, socket }) => {
              const s = responses[n - 1];
              if (s === undefined) {
                socket.destroy();
                return;
              }
              const bytes = serialize(s, n);
              await writeSplit(socket, bytes, cutsOf(s, bytes));
            });
            const wire = h.wire();
            for (const [i, s] of responses.entries()) {
              const r = await send(
                wire,
                server.url(`/${i + 1}`),
                undefined,
                new Recorder({ keepsBody }),
              );
              assertDelivered(r, s.status, Buffer.from(s.body));
              assert.equal(r.starts, 1);
              assert.deepEqual(r.statuses, [s.status]);
              assert.equal(r.headers?.['x-index'], String(i + 1));
              if (keepsBody) assert.deepEqual(Buffer.concat(r.kept), Buffer.from(s.body));
            }
            assert.equal(server.connections, 1, 'one connection');
            assert.equal(server.closed, 0, 'the connection was not closed');
            assert.deepEqual(
              server.requests.map((r) => r.path),
              responses.map((_, i) => `/${i + 1}`),
            );
          } finally {
            await h.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('_h1: keep-alive', { timeout: 10_000 }, () => {
  it('sends sequential requests on one socket', async (t) => {
    const h = new Harness(t);
    const server = await h.http((_req, res, n) => {
      res.end(`response ${n}`);
    });
    const wire = h.wire();
    for (const n of [1, 2, 3, 4]) {
      assertDelivered(await send(wire, server.url(`/${n}`)), 200, `response ${n}`);
    }
    assert.equal(server.connections, 1);
    assert.equal(server.open, 1);
  });

  // An idle connection's keep-alive is an interval: a step of the wall clock must not end it
  // (nor stretch it past what the server keeps).
  it('reuses an idle connection after the wall clock steps forward a day', async (t) => {
    const h = new Harness(t);
    const server = await h.http((_req, res, n) => {
      res.end(`response ${n}`);
    });
    const wire = h.wire();
    assertDelivered(await send(wire, server.url('/1')), 200, 'response 1');
    const restore = stepWallClock(86_400_000);
    try {
      assertDelivered(await send(wire, server.url('/2')), 200, 'response 2');
    } finally {
      restore();
    }
    assert.equal(server.connections, 1);
  });

  // Close among other connection options, in any case, as well as alone.
  for (const header of ['Connection: close', 'Connection: Keep-Alive, CLOSE']) {
    it(`closes the connection after a response with "${header}" and opens another for the next request`, async (t) => {
      const h = new Harness(t);
      // The server says close but leaves the socket open: the client must close it.
      const server = await h.raw(({ n, socket }) => {
        socket.write(n === 1 ? ok('one', `${header}\r\n`) : ok('two'));
      });
      const wire = h.wire();
      assertDelivered(await send(wire, server.url()), 200, 'one');
      await until(() => server.closed === 1, 'the client closed the first connection');
      assertDelivered(await send(wire, server.url()), 200, 'two');
      assert.equal(server.connections, 2);
      assert.deepEqual(
        server.requests.map((r) => r.connection),
        [1, 2],
      );
    });
  }

  it('does not reuse the connection of an HTTP/1.0 response, unless it says keep-alive', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, socket }) => {
      if (n === 1) socket.write('HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\none');
      else
        socket.write('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\ntwo');
    });
    const wire = h.wire();
    assertDelivered(await send(wire, server.url()), 200, 'one');
    await until(() => server.closed === 1, 'the client closed the HTTP/1.0 connection');
    assertDelivered(await send(wire, server.url()), 200, 'two');
    assertDelivered(await send(wire, server.url()), 200, 'two');
    assert.equal(server.connections, 2);
    assert.deepEqual(
      server.requests.map((r) => r.connection),
      [1, 2, 2],
    );
  });

  it('does not reuse a connection whose Keep-Alive timeout leaves no margin', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ socket }) => {
      socket.write(ok('short', 'Keep-Alive: timeout=1\r\n'));
    });
    const wire = h.wire();
    assertDelivered(await send(wire, server.url()), 200, 'short');
    const pool = wire.pool(server.origin, server.url());
    assertDelivered(await send(wire, server.url()), 200, 'short');
    assert.equal(server.connections, 2);
    await until(() => server.closed >= 1, 'the client closed the expired connection');
    // Closing the expired connection left the pool empty for a moment; the new one keeps it the
    // origin's pool, so its connection is found for the next request.
    assert.equal(wire.pool(server.origin, server.url()), pool);
    assert.equal(pool.open.size, 1);
  });

  it('reuses a connection whose Keep-Alive timeout is longer than the margin', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ socket }) => {
      socket.write(ok('long', 'Keep-Alive: max=100, timeout=5\r\n'));
    });
    const wire = h.wire();
    for (let i = 0; i < 3; i++) assertDelivered(await send(wire, server.url()), 200, 'long');
    assert.equal(server.connections, 1);
  });

  it('resends a GET on a new connection when the server closed the reused one as it was sent', async (t) => {
    const h = new Harness(t);
    const server = await closingAfterFirst(h);
    const wire = h.wire();
    const second = await sendAfterFirst(wire, server, server.url('/second'));
    assertDelivered(second, 200, 'again 2');
    assert.equal(second.starts, 2, 'onRequestStart once per connection');
    assert.notEqual(second.controls[0], second.controls[1]);
    assert.equal(server.connections, 2);
    assert.deepEqual(
      server.requests.map((r) => [r.path, r.connection]),
      [
        ['/first', 1],
        ['/second', 2],
      ],
    );
  });

  it('sends a GET on a new connection when the client already saw the server close the idle one', async (t) => {
    const h = new Harness(t);
    const server = await closingAfterFirst(h);
    const wire = h.wire();
    assertDelivered(await send(wire, server.url('/first')), 200, 'first');
    await until(() => server.closed === 1, 'the server closed the first connection');
    const pool = wire.pool(server.origin, server.url());
    await until(() => pool.open.size === 0, 'the client saw the close');
    const second = await send(wire, server.url('/second'));
    assertDelivered(second, 200, 'again 2');
    assert.ok(second.starts === 1 || second.starts === 2, `${second.starts} starts`);
    assert.equal(server.connections, 2);
  });

  it('fails a POST with ECONNRESET, without resending it, when the server closed the reused connection', async (t) => {
    const h = new Harness(t);
    const server = await closingAfterFirst(h);
    const wire = h.wire();
    const url = server.url('/post');
    const post = await sendAfterFirst(wire, server, url, prepared('POST', url, {}, 'data'));
    assertFailed(post, 'ECONNRESET');
    assert.equal(post.starts, 1);
    assert.deepEqual(post.statuses, []);
    // A later request still works, and the POST never reached a server.
    assertDelivered(await send(wire, server.url('/after')), 200, 'again 2');
    assert.deepEqual(
      server.requests.map((r) => r.path),
      ['/first', '/after'],
    );
  });

  it('resends an idempotent PUT with its body', async (t) => {
    const h = new Harness(t);
    const server = await closingAfterFirst(h);
    const wire = h.wire();
    const url = server.url('/put');
    const body = new Uint8Array([1, 2, 3, 0x0d, 0x0a, 4]);
    const put = await sendAfterFirst(wire, server, url, prepared('PUT', url, { 'X-A': '1' }, body));
    assertDelivered(put, 200, 'again 2');
    assert.equal(put.starts, 2);
    const resent = server.requests[1];
    assert.equal(resent?.connection, 2);
    assert.equal(resent.method, 'PUT');
    assert.deepEqual(new Uint8Array(resent.body), body);
  });

  it('resends a GET only once', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, socket }) => {
      if (n === 1) writeAndClose(socket, ok('first'));
      else socket.destroy(); // the resend fails too
    });
    const wire = h.wire();
    const second = await sendAfterFirst(wire, server, server.url('/second'));
    assertFailed(second, 'ECONNRESET');
    assert.equal(second.starts, 2);
    await until(() => server.closed === 2, 'both connections closed');
    assert.equal(server.connections, 2);
    assert.equal(second.errors.length, 1);
  });

  it('does not resend a GET whose reused connection closed after part of the response came', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, socket }) => {
      if (n === 1) socket.write(ok('first'));
      else if (n === 2) writeAndClose(socket, 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
      else socket.write(ok('third'));
    });
    const wire = h.wire();
    assertDelivered(await send(wire, server.url()), 200, 'first');
    const r = await send(wire, server.url());
    assertFailed(r, 'ECONNRESET');
    assert.equal(r.starts, 1);
    assert.deepEqual(r.statuses, [200]);
    assert.equal(r.body.toString(), 'abc');
    assert.equal(server.requests.length, 2);
  });

  it('closes an idle connection on which the server sends bytes nobody asked for', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(async ({ n, socket }) => {
      socket.write(ok(`r${n}`));
      if (n === 1) {
        await turn();
        socket.write('HTTP/1.1 200 OK\r\n');
      }
    });
    const wire = h.wire();
    assertDelivered(await send(wire, server.url()), 200, 'r1');
    await until(() => server.closed === 1, 'the client closed the connection');
    assertDelivered(await send(wire, server.url()), 200, 'r2');
    assert.equal(server.connections, 2);
  });

  it('delivers a response with bytes past its Content-Length, and does not reuse its connection', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, socket }) => {
      socket.write(
        n === 1 ? 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhelloEXTRA' : ok('clean'),
      );
    });
    const wire = h.wire();
    const r = await send(wire, server.url());
    assertDelivered(r, 200, 'hel');
    await until(() => server.closed === 1, 'the client closed the connection');
    assertDelivered(await send(wire, server.url()), 200, 'clean');
    assert.deepEqual(
      server.requests.map((q) => q.connection),
      [1, 2],
    );
  });
});

describe('_h1: errors', { timeout: 10_000 }, () => {
  it('fails with ECONNREFUSED when nothing listens on the port', async (t) => {
    const h = new Harness(t);
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const wire = h.wire();
    const url = new URL(`http://127.0.0.1:${port}/`);
    const r = await send(wire, url);
    assertFailed(r, 'ECONNREFUSED');
    assert.equal(r.starts, 1);
    await turn();
    assert.equal(r.errors.length, 1);
    assert.equal(wire.pool(url.origin, url).open.size, 0);
  });

  /**
   * What is wrong, the response, the error's code, and whether its status reaches onResponseStart
   * (a bad head or framing fails before the handler hears of the response; a bad body after).
   */
  const malformed: [string, string, string | RegExp, boolean][] = [
    ['a status line that is not HTTP', 'HTCPCP/1.0 200 OK\r\n\r\n', 'HPE_INVALID_CONSTANT', false],
    ['an HTTP/2 status line', 'HTTP/2 200\r\n\r\n', /^HPE_/, false],
    ['an HTTP/1.2 status line', 'HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n', /^HPE_/, false],
    ['a status with two digits', 'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n', /^HPE_/, false],
    ['a status with four digits', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n', /^HPE_/, false],
    ['a header line without a colon', 'HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n', /^HPE_/, false],
    ['a header name with a space', 'HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', /^HPE_/, false],
    ['a space before the colon', 'HTTP/1.1 200 OK\r\nX-A : x\r\n\r\n', /^HPE_/, false],
    ['an empty header name', 'HTTP/1.1 200 OK\r\n: x\r\n\r\n', /^HPE_/, false],
    [
      'both Transfer-Encoding and Content-Length',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      /^HPE_/,
      false,
    ],
    [
      'differing Content-Length values',
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
      'HPE_INVALID_CONTENT_LENGTH',
      false,
    ],
    [
      'differing values in one Content-Length',
      'HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!',
      'HPE_INVALID_CONTENT_LENGTH',
      false,
    ],
    [
      'a Content-Length that is not a number',
      'HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello',
      'HPE_INVALID_CONTENT_LENGTH',
      false,
    ],
    [
      'a negative Content-Length',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello',
      'HPE_INVALID_CONTENT_LENGTH',
      false,
    ],
    [
      'a chunk size that is not hex',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
      'HPE_INVALID_CHUNK_SIZE',
      true,
    ],
    [
      'a chunk size with a 0x prefix',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n',
      'HPE_INVALID_CHUNK_SIZE',
      true,
    ],
    [
      'a chunk size too large',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n',
      'HPE_INVALID_CHUNK_SIZE',
      true,
    ],
    [
      'a chunk longer than its size',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n',
      'HPE_INVALID_CHUNK_SIZE',
      true,
    ],
    [
      'a control byte in a header value',
      'HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n',
      'HPE_INVALID_HEADER_TOKEN',
      false,
    ],
    [
      'DEL in a header value',
      'HTTP/1.1 200 OK\r\nX-A: a\x7f\r\n\r\n',
      'HPE_INVALID_HEADER_TOKEN',
      false,
    ],
    [
      'a bad Content-Length on a 204, which has no body anyway',
      'HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n',
      'HPE_INVALID_CONTENT_LENGTH',
      false,
    ],
    [
      'both Transfer-Encoding and Content-Length on a 304',
      'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n',
      'HPE_UNEXPECTED_CONTENT_LENGTH',
      false,
    ],
    [
      'whitespace after a chunk size, with no extension',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n',
      'HPE_INVALID_CHUNK_SIZE',
      true,
    ],
    [
      'an empty chunk extension',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;;\r\nhello\r\n0\r\n\r\n',
      'HPE_INVALID_CHUNK_SIZE',
      true,
    ],
    [
      'a trailer line without a colon',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\n',
      'HPE_INVALID_HEADER_TOKEN',
      true,
    ],
    [
      'a chunk-size line longer than 1 KiB',
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;${'x'.repeat(2000)}`,
      /^HPE_/,
      true,
    ],
  ];
  for (const [what, response, code, heard] of malformed) {
    it(`fails a response with ${what} with an HPE_ error, once, and closes the connection`, async (t) => {
      const h = new Harness(t);
      const server = await answering(h, response);
      const r = await send(h.wire(), server.url());
      assertFailed(r, code);
      assert.equal(r.statuses.length, heard ? 1 : 0, `onResponseStart ${heard ? 'once' : 'never'}`);
      await until(() => server.closed === 1, 'the client closed the connection');
      await turn();
      assert.equal(r.errors.length + r.ends, 1, 'exactly one of end and error');
    });
  }

  /**
   * A server that speaks another protocol may never send the blank line a head ends with: its
   * first bytes are enough to fail the request (what came, split as it came, and the error).
   */
  const notHttp: [string, string[], string][] = [
    [
      'an SSH server',
      ['SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n'],
      'the server\'s response does not start with HTTP/1. (got "SSH-2.0-Open…")',
    ],
    [
      'a TLS alert',
      ['\x15\x03\x01\x00\x02\x02\x46'],
      'the server\'s response does not start with HTTP/1. (got "\\u0015\\u0003\\u0001\\u0000\\u0002\\u0002F")',
    ],
    [
      'HTTP/2, in two reads',
      ['HT', 'TP/2 200\r\n'],
      'the server\'s response does not start with HTTP/1. (got "HTTP/2 200\\r\\n")',
    ],
    [
      'lower case, after empty lines',
      ['\r\n\r\n', 'http/1.1 200 OK\r\n'],
      'the server\'s response does not start with HTTP/1. (got "http/1.1 200…")',
    ],
  ];
  for (const [what, reads, message] of notHttp) {
    it(`fails at once a response from ${what}, saying it does not start with HTTP/1.`, async (t) => {
      const h = new Harness(t);
      const server = await h.raw(async ({ socket }) => {
        for (const read of reads) {
          socket.write(Buffer.from(read, 'latin1'));
          await turn();
          await turn();
        }
      });
      const r = await send(h.wire(), server.url()); // the connection stays open: no close to wait for
      assertFailed(r, 'HPE_INVALID_CONSTANT');
      assert.equal(r.errors[0]?.message, message);
      await until(() => server.closed === 1, 'the client closed the connection');
    });
  }

  it('skips empty lines before the status line, as Node’s parser does', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, `\r\n\n\r\n${ok('after empty lines')}`);
    assertDelivered(await send(h.wire(), server.url()), 200, 'after empty lines');
  });

  it('fails a response head larger than http.maxHeaderSize with HPE_HEADER_OVERFLOW', async (t) => {
    const h = new Harness(t);
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(maxHeaderSize)}\r\nContent-Length: 2\r\n\r\nok`;
    const server = await h.raw(async ({ n, socket }) => {
      if (n === 1) socket.write(big);
      else await writeSplit(socket, Buffer.from(big), [100, 5000, 10_000, 15_000, 17_000]);
    });
    const wire = h.wire();
    for (const _ of [1, 2]) {
      const r = await send(wire, server.url());
      assertFailed(r, 'HPE_HEADER_OVERFLOW');
    }
    await until(() => server.closed === 2, 'the client closed both connections');
  });

  it('accepts a head a little under http.maxHeaderSize, even split across reads', async (t) => {
    const h = new Harness(t);
    const response = ok('fits', `X-Big: ${'b'.repeat(maxHeaderSize - 200)}\r\n`);
    const server = await h.raw(async ({ socket }) => {
      await writeSplit(socket, Buffer.from(response), [10, 4000, 8000, 12_000, 16_000]);
    });
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, 'fits');
    assert.equal(r.headers?.['x-big'], 'b'.repeat(maxHeaderSize - 200));
  });

  it('fails a response cut short by the server with ECONNRESET, after the part that came', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ socket }) => {
      writeAndClose(
        socket,
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nwo',
      );
    });
    const r = await send(h.wire(), server.url());
    assertFailed(r, 'ECONNRESET');
    assert.equal(r.body.toString(), 'hellowo');
  });
});

describe('_h1: abort', { timeout: 10_000 }, () => {
  /** A server that sends a head and part of the body, and then nothing. */
  function stalling(h: Harness, chunked: boolean): Promise<RawServer> {
    return h.raw(({ socket }) => {
      socket.write(
        chunked
          ? 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n'
          : 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello',
      );
    });
  }

  it('fails the request with the reason once, and closes the socket, when aborted from onResponseStart', async (t) => {
    const h = new Harness(t);
    const server = await stalling(h, false);
    const reason = new Error('x');
    const r = new Recorder({
      onResponseStart: (control) => {
        control.abort(reason);
        control.abort(new Error('again'));
      },
    });
    await send(h.wire(), server.url(), undefined, r);
    assert.deepEqual(r.errors, [reason]);
    assert.equal(r.errors[0], reason);
    assert.equal(r.ends, 0);
    assert.deepEqual(r.copies, [], 'no body after the abort');
    await until(() => server.closed === 1, 'the server saw the close');
    assert.equal(r.errors.length, 1);
  });

  for (const chunked of [false, true]) {
    it(`fails the request with the reason once when aborted mid-body (${chunked ? 'chunked' : 'Content-Length'})`, async (t) => {
      const h = new Harness(t);
      const server = await stalling(h, chunked);
      const reason = new Error('x');
      const r = new Recorder({
        onResponseData: (control) => {
          control.abort(reason);
        },
      });
      await send(h.wire(), server.url(), undefined, r);
      assert.equal(r.errors.length, 1);
      assert.equal(r.errors[0], reason);
      assert.equal(r.ends, 0);
      assert.equal(r.body.toString(), 'hello');
      await until(() => server.closed === 1, 'the server saw the close');
      assert.equal(r.errors.length + r.ends, 1);
    });
  }

  it('fails the request when aborted on its last chunk of body, and does not end it too', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('whole'));
    const reason = new Error('x');
    const r = new Recorder({
      onResponseData: (control) => {
        control.abort(reason);
      },
    });
    await send(h.wire(), server.url(), undefined, r);
    await until(() => server.closed === 1, 'the server saw the close');
    assert.deepEqual(r.errors, [reason]);
    assert.equal(r.ends, 0);
  });

  it('fails the request without writing it when aborted from onRequestStart', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('never'));
    const reason = new Error('x');
    const wire = h.wire();
    const r = new Recorder({
      onRequestStart: (control) => {
        control.abort(reason);
      },
    });
    await send(wire, server.url(), undefined, r);
    assert.deepEqual(r.errors, [reason]);
    assert.equal(r.ends, 0);
    assert.equal(wire.pool(server.origin, server.url()).open.size, 0);
    await turn();
    assert.equal(server.requests.length, 0);
  });

  it('ignores abort() on a control once its response has ended', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('done'));
    const wire = h.wire();
    const r = await send(wire, server.url());
    r.controls[0]!.abort(new Error('late'));
    assertDelivered(r, 200, 'done');
    assert.equal(r.errors.length, 0);
    // The connection is still good.
    assertDelivered(await send(wire, server.url()), 200, 'done');
    assert.equal(server.connections, 1);
  });

  it('does not let the control of a finished request abort the next request on the same connection', async (t) => {
    const h = new Harness(t);
    let release: () => void = () => undefined;
    const server = await h.raw(({ n, socket }) => {
      if (n === 1) socket.write(ok('first'));
      else
        release = () => {
          socket.write(ok('second'));
        };
    });
    const wire = h.wire();
    const first = await send(wire, server.url());
    const second = dispatch(wire, server.url());
    await until(() => server.requests.length === 2, 'the second request arrived');
    assert.equal(server.connections, 1, 'the same connection carries both');
    first.controls[0]!.abort(new Error('stale'));
    release();
    await second.settled();
    assertDelivered(second, 200, 'second');
  });
});

describe('_h1: response headers', { timeout: 10_000 }, () => {
  it('lower-cases names, makes arrays of repeated headers and joins obs-fold lines', async (t) => {
    const h = new Harness(t);
    const server = await answering(
      h,
      ok(
        'x',
        'X-MiXeD-CaSe: v\r\n' +
          'Set-Cookie: a=1\r\n' +
          'set-cookie: b=2\r\n' +
          'SET-COOKIE: c=3\r\n' +
          'X-Folded: first\r\n' +
          '   second\r\n' +
          '\tthird\r\n' +
          'X-Dup: one\r\n' +
          'X-Dup: two\r\n' +
          ' two-more\r\n' +
          'X-Empty:\r\n' +
          'X-Spaces:   padded value \t\r\n',
      ),
    );
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, 'x');
    const headers = r.headers!;
    assert.equal(headers['x-mixed-case'], 'v');
    assert.equal(headers['X-MiXeD-CaSe'], undefined);
    assert.deepEqual(headers['set-cookie'], ['a=1', 'b=2', 'c=3']);
    assert.equal(headers['x-folded'], 'first second third');
    assert.deepEqual(headers['x-dup'], ['one', 'two two-more']);
    assert.equal(headers['x-empty'], '');
    assert.equal(headers['x-spaces'], 'padded value');
  });

  it('fails a header value with a bare CR or a NUL, as Node’s parser does', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, socket }) => {
      socket.write(ok('x', n === 1 ? 'X-A: a\rb\r\n' : 'X-A: a\0b\r\n'));
    });
    const wire = h.wire();
    for (const _ of [1, 2]) assertFailed(await send(wire, server.url()), /^HPE_/);
  });

  it('stores a header named __proto__ as a plain key, leaving the prototype alone', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('x', '__proto__: polluted\r\nX-After: a\r\n'));
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, 'x');
    const headers = r.headers!;
    assert.ok(Object.hasOwn(headers, '__proto__'), 'an own key');
    assert.equal(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value, 'polluted');
    assert.deepEqual(Object.keys(headers).sort(), ['__proto__', 'content-length', 'x-after']);
    assert.ok(!Array.isArray(Object.getPrototypeOf(headers)), 'the prototype was not replaced');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('stores headers named like Object.prototype members as plain string values', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('x', 'Constructor: c\r\ntoString: s\r\n'));
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, 'x');
    const headers = r.headers!;
    assert.equal(Object.getOwnPropertyDescriptor(headers, 'constructor')?.value, 'c');
    assert.equal(headers.tostring, 's');
  });

  it('reads header values as latin1 bytes, a trailing 0xA0 byte included', async (t) => {
    const h = new Harness(t);
    const value = Buffer.from('voilà', 'utf8'); // ends in C3 A0
    const server = await answering(
      h,
      Buffer.concat([
        Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Name: '),
        value,
        Buffer.from('\r\nX-Lead: '),
        Buffer.from([0xa0, 0x41]),
        Buffer.from('\r\n\r\n'),
      ]),
    );
    const r = await send(h.wire(), server.url());
    assertDelivered(r, 200, '');
    assert.equal(r.headers?.['x-name'], value.toString('latin1'));
    assert.equal(r.headers['x-lead'], '\u00a0A');
  });
});

describe('_h1: prepare()', () => {
  it('builds the exact request head, Host first and user headers as given', () => {
    const request = prepare(
      'GET',
      '/a/b?c=1&d=%20',
      'example.com:8080',
      {
        Accept: 'text/plain',
        'x-trace': 'abc, def',
      },
      null,
    );
    assert.deepEqual(request, {
      head: 'GET /a/b?c=1&d=%20 HTTP/1.1\r\nhost: example.com:8080\r\nAccept: text/plain\r\nx-trace: abc, def\r\n\r\n',
      body: null,
      bodiless: false,
      idempotent: true,
    });
  });

  it('counts the Content-Length of a body in bytes, for strings and Uint8Arrays', () => {
    const text = 'héllo → ✓ 😀';
    const fromString = prepare('POST', '/', 'h', undefined, text);
    assert.equal(
      fromString?.head,
      `POST / HTTP/1.1\r\nhost: h\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n`,
    );
    assert.equal(Buffer.byteLength(text), 19);
    assert.equal(fromString.body, text);
    assert.equal(fromString.idempotent, false);
    const backing = new Uint8Array(64);
    const view = new Uint8Array(backing.buffer, 8, 10);
    const fromBytes = prepare(
      'PUT',
      '/x',
      'h',
      { 'Content-Type': 'application/octet-stream' },
      view,
    );
    assert.equal(
      fromBytes?.head,
      'PUT /x HTTP/1.1\r\nhost: h\r\nContent-Type: application/octet-stream\r\ncontent-length: 10\r\n\r\n',
    );
    assert.equal(fromBytes.idempotent, true);
    assert.equal(
      prepare('POST', '/', 'h', undefined, '')?.head,
      'POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n',
    );
  });

  it('says content-length: 0 for a POST, PUT or PATCH without a body, and nothing for others', () => {
    for (const method of ['POST', 'PUT', 'PATCH']) {
      assert.equal(
        prepare(method, '/', 'h', undefined, null)?.head,
        `${method} / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n`,
      );
    }
    for (const method of ['GET', 'DELETE', 'OPTIONS', 'HEAD']) {
      assert.equal(
        prepare(method, '/', 'h', undefined, null)?.head,
        `${method} / HTTP/1.1\r\nhost: h\r\n\r\n`,
      );
    }
    assert.equal(prepare('HEAD', '/', 'h', undefined, null)?.bodiless, true);
    assert.equal(prepare('GET', '/', 'h', undefined, null)?.bodiless, false);
    assert.equal(prepare('PATCH', '/', 'h', undefined, null)?.idempotent, false);
    assert.equal(prepare('DELETE', '/', 'h', undefined, null)?.idempotent, true);
  });

  it('lets a Host header, in any case, replace the default one', () => {
    const request = prepare(
      'GET',
      '/',
      'default.example',
      { 'X-A': '1', HoSt: 'other.example' },
      null,
    );
    assert.equal(request?.head, 'GET / HTTP/1.1\r\nhost: other.example\r\nX-A: 1\r\n\r\n');
  });

  it('leaves CONNECT and headers about the connection to undici', () => {
    assert.equal(
      prepare('CONNECT', 'example.com:443', 'example.com:443', undefined, null),
      undefined,
    );
    for (const name of [
      'connection',
      'Connection',
      'transfer-encoding',
      'Transfer-Encoding',
      'content-length',
      'CONTENT-LENGTH',
      'expect',
      'Expect',
      'upgrade',
      'UpGrade',
      'keep-alive',
      'te',
      'trailer',
      'proxy-connection',
    ]) {
      assert.equal(prepare('GET', '/', 'h', { [name]: 'x' }, null), undefined, name);
    }
  });

  it('leaves headers whose values are not strings to undici', () => {
    for (const value of [1, ['a', 'b'], undefined, null, true]) {
      const headers = { 'x-a': value } as unknown as Record<string, string>;
      assert.equal(prepare('GET', '/', 'h', headers, null), undefined, String(value));
    }
  });

  it('leaves a method that is not a token, or a path that is not encoded, to undici', () => {
    assert.equal(prepare('GE T', '/', 'h', undefined, null), undefined);
    assert.equal(prepare('GET', '/a b', 'h', undefined, null), undefined);
    assert.equal(prepare('GET', '/é', 'h', undefined, null), undefined);
  });

  it('throws a TypeError for a header name that is not a token or a value with CR, LF or NUL', () => {
    for (const name of ['bad name', 'x:y', '', 'é', 'a\r\nb']) {
      assert.throws(
        () => prepare('GET', '/', 'h', { [name]: 'v' }, null),
        TypeError,
        JSON.stringify(name),
      );
    }
    for (const value of ['a\r\nb', 'a\nb', 'a\rb', 'a\0b', 'a\x7fb', '€']) {
      assert.throws(
        () => prepare('GET', '/', 'h', { 'x-a': value }, null),
        TypeError,
        JSON.stringify(value),
      );
    }
    assert.doesNotThrow(() => prepare('GET', '/', 'h', { 'x-a': 'tab\there, café' }, null));
  });

  it('writes a request the server reads as sent: path, headers and a multi-byte body', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('ok'));
    const wire = h.wire();
    const text = 'héllo → ✓';
    const url = server.url('/submit?x=1');
    await send(wire, url, prepared('POST', url, { 'X-Name': 'café' }, text));
    const bytes = new Uint8Array([0, 1, 2, 0xff, 0x0d, 0x0a]);
    await send(wire, url, prepared('PUT', url, undefined, bytes));
    const [post, put] = server.requests;
    assert.equal(
      post?.head,
      `POST /submit?x=1 HTTP/1.1\r\nhost: ${url.host}\r\nX-Name: caf\xe9\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n`,
    );
    assert.equal(post.body.toString('utf8'), text);
    assert.deepEqual(new Uint8Array(put!.body), bytes);
    assert.equal(server.connections, 1);
  });
});

describe('_h1: Wire.close()', { timeout: 10_000 }, () => {
  it('close(false) closes idle connections and refuses to make a pool for a new origin', async (t) => {
    const h = new Harness(t);
    const a = await answering(h, ok('a'));
    const b = await answering(h, ok('b'));
    const wire = h.wire();
    assertDelivered(await send(wire, a.url()), 200, 'a');
    assertDelivered(await send(wire, b.url()), 200, 'b');
    wire.close(false, new Error('closing'));
    await until(() => a.closed === 1 && b.closed === 1, 'both servers saw the close');
    const other = new URL('http://127.0.0.1:1/');
    assert.throws(
      () => wire.pool(other.origin, other),
      (error: Error & { code?: unknown }) => error.code === 'ERR_CLOSED',
    );
    assert.throws(() => wire.pool(a.origin, a.url()), { code: 'ERR_CLOSED' });
  });

  it('close(false) lets a request in flight finish', async (t) => {
    const h = new Harness(t);
    let release: () => void = () => undefined;
    const server = await h.raw(({ socket }) => {
      release = () => socket.write(ok('finished'));
    });
    const wire = h.wire();
    const r = dispatch(wire, server.url());
    await until(() => server.requests.length === 1, 'the request arrived');
    wire.close(false, new Error('closing'));
    release();
    await r.settled();
    assertDelivered(r, 200, 'finished');
  });

  it('close(false) closes a busy connection once its response has ended', async (t) => {
    const h = new Harness(t);
    let release: () => void = () => undefined;
    const server = await h.raw(({ socket }) => {
      release = () => socket.write(ok('finished'));
    });
    const wire = h.wire();
    const pool = wire.pool(server.origin, server.url());
    const r = dispatch(wire, server.url());
    await until(() => server.requests.length === 1, 'the request arrived');
    wire.close(false, new Error('closing'));
    release();
    await r.settled();
    assertDelivered(r, 200, 'finished');
    // Whether the connection is kept is decided as the response ends, before the handler hears.
    assert.deepEqual(pool.idle, [], 'not kept idle');
    assert.equal(pool.open.size, 0, 'closed');
    await until(() => server.closed === 1, 'the server saw the close');
  });

  it('close(true) fails a request in flight with the reason and closes its connection', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(() => undefined); // never answers
    const wire = h.wire();
    const r = dispatch(wire, server.url());
    await until(() => server.requests.length === 1, 'the request arrived');
    const reason = new Error('forced');
    wire.close(true, reason);
    await r.settled();
    assert.deepEqual(r.errors, [reason]);
    assert.equal(r.errors[0], reason);
    assert.equal(r.ends, 0);
    await until(() => server.closed === 1, 'the server saw the close');
    assert.equal(r.errors.length, 1);
  });
});

describe('_h1 through createExchange()', { timeout: 10_000 }, () => {
  it('never loads undici for plain-HTTP requests, and loads it when its agent is first used', async () => {
    // In a process of its own, where nothing else has loaded undici yet.
    const code = `
      import { createRequire } from 'node:module';
      import { createServer } from 'node:http';
      import { createExchange } from './src/http/index.ts';
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((f) => /[\\\\/]undici[\\\\/]/.test(f));
      const server = createServer((_req, res) => res.end('ok')).listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      const exchange = createExchange({ concurrency: 2 });
      const { status } = await exchange('http://127.0.0.1:' + server.address().port + '/');
      const before = loaded();
      const agent = exchange.client.agent;
      console.log(JSON.stringify({ status, before, after: loaded(), same: agent === exchange.client.agent }));
      await exchange.close();
      server.close();`;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '--eval', code],
      { cwd: new URL('..', import.meta.url), timeout: 9_000 },
    );
    assert.deepEqual(JSON.parse(stdout), { status: 200, before: false, after: true, same: true });
  });

  it('delivers status, headers, bytes and, with keepBody, the body', async (t) => {
    const h = new Harness(t);
    const server = await answering(
      h,
      ok('hello exchange', 'X-Test: yes\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n'),
    );
    const exchange = h.exchange();
    const kept = await within(3_000, exchange(server.url('/kept?q=1'), { keepBody: true }), 'kept');
    assert.equal(kept.status, 200);
    assert.equal(kept.headers['x-test'], 'yes');
    assert.deepEqual(kept.headers['set-cookie'], ['a', 'b']);
    assert.equal(kept.bytes, 14);
    assert.equal(kept.body?.toString(), 'hello exchange');
    const counted = await within(3_000, exchange(server.url('/counted')), 'counted');
    assert.equal(counted.status, 200);
    assert.equal(counted.bytes, 14);
    assert.equal(counted.body, undefined);
    // Written by _h1.ts (undici would add its own headers), on one connection.
    assert.equal(
      server.requests[0]?.head,
      `GET /kept?q=1 HTTP/1.1\r\nhost: ${server.url().host}\r\n\r\n`,
    );
    assert.equal(server.connections, 1);
  });

  it('takes the URL as a string too, and rejects one that is no URL with a TypeError', async (t) => {
    const h = new Harness(t);
    const server = await answering(h, ok('by string'));
    const exchange = h.exchange();
    const got = await within(3_000, exchange(server.url('/s').href, { keepBody: true }), 'string');
    assert.equal(got.status, 200);
    assert.equal(got.body?.toString(), 'by string');
    assert.equal(server.requests[0]?.head.split('\r\n')[0], 'GET /s HTTP/1.1');
    await assert.rejects(exchange('not a url'), (error: unknown) => {
      assert.ok(error instanceof TypeError);
      assert.equal((error as { code?: unknown }).code, 'ERR_INVALID_URL');
      return true;
    });
  });

  it('retries a 503 and delivers the 200 that follows', async (t) => {
    const h = new Harness(t);
    const server = await h.raw(({ n, socket }) => {
      socket.write(
        n === 1 ? 'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy' : ok('fine'),
      );
    });
    const exchange = h.exchange({ retry: { retries: 2, minDelay: 1, maxDelay: 5 } });
    const response = await within(3_000, exchange(server.url(), { keepBody: true }), 'the retry');
    assert.equal(response.status, 200);
    assert.equal(response.body?.toString(), 'fine');
    assert.equal(server.requests.length, 2);
    assert.equal(server.connections, 1);
  });

  it('never has more requests at the server than perOrigin.concurrency, and close() leaves no socket open', async (t) => {
    const h = new Harness(t);
    const server = await h.http((_req, res, n) => {
      setTimeout(() => res.end(`r${n}`), 5);
    });
    const exchange = h.exchange({ perOrigin: { concurrency: 3 } });
    const responses = await within(
      5_000,
      Promise.all(
        Array.from({ length: 20 }, (_, i) => exchange(server.url(`/${i}`), { keepBody: true })),
      ),
      '20 responses',
    );
    assert.deepEqual(
      responses.map((r) => r.status),
      Array<number>(20).fill(200),
    );
    assert.equal(server.requests.length, 20);
    assert.ok(server.peak <= 3, `peak ${server.peak}`);
    assert.ok(server.connections <= 3, `${server.connections} connections`);
    assert.ok(server.open > 0);
    await within(3_000, exchange.close(), 'close()');
    await until(() => server.open === 0, 'the server saw every connection close');
  });
});
