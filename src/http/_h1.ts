/**
 * A plain-HTTP/1.1 client for whole responses: what `createExchange()` and `sluice fetch` send
 * `http:` requests with. One keep-alive connection per request in flight (no pipelining), the
 * response read straight off the socket into one buffer shared by every connection.
 *
 * Why not undici here: a bare loop of undici `dispatch` calls, started cold, reaches about 0.75×
 * the requests/s of autocannon's CLI on a local server, below what `sluice fetch` must reach, and
 * most of that gap is undici's own machinery (its request objects, queues and the llhttp wasm
 * parser, which also takes long to warm up). Writing one prepared request and reading its
 * response here costs a fraction of that. undici still sends everything else: `https:`, and any
 * request with headers whose meaning is the connection's (see {@link prepare}).
 *
 * Invariants: a connection carries at most one request at a time; a connection is idle (in its
 * origin's list, its socket unreferenced) only between a response read in full and the next
 * request; every dispatched request's handler hears exactly one of `onResponseEnd` or
 * `onResponseError`; bytes from the server when no request is waiting close the connection.
 *
 * Framing follows RFC 9112 §6: no body for HEAD, 1xx, 204 and 304; `Transfer-Encoding` whose last
 * coding is chunked; `Content-Length`; otherwise the body runs to the end of the connection. 1xx
 * interim responses are skipped, and so are empty lines before a status line (as Node's parser
 * does). A response that is not HTTP/1.x (found from its first bytes: a server speaking another
 * protocol may never end a head), a head longer than `http.maxHeaderSize`, or a bad length fails
 * the request with an `HPE_` error, as Node's own parser names them, and the connection is closed.
 *
 * It is as strict as Node's parser, which test/h1-differential.test.ts holds it to: both Content-
 * Length and Transfer-Encoding, or a bad Content-Length, fail even a response without a body; a
 * field with a control byte, a bare CR or a NUL fails (trailers are checked as headers are); chunk
 * framing takes CRLF only, and extensions only as RFC 9112 §7.1.1 writes them. Where RFC 9112
 * lets a reader go either way, it is lenient in the ways that test lists: a bare LF ends a head's
 * or a trailer's line (§2.2), an obs-fold is joined with a space (§5.2), and one Content-Length
 * given more than once is that length (RFC 9110 §8.6).
 */
import { maxHeaderSize } from 'node:http';
import { connect, type Socket } from 'node:net';
import { later, type Cancel } from '../_clock.ts';

/** What receives a response. Chunks are only valid during the call unless `keepsBody`. */
export interface WireHandler {
  /** Whether chunks are kept after `onResponseData` returns (they are then copies). */
  readonly keepsBody: boolean;
  /** The request is on `control`'s connection; called again with another if it is resent. */
  onRequestStart(control: WireControl): void;
  onResponseStart(
    control: WireControl,
    status: number,
    headers: Record<string, string | string[] | undefined>,
  ): void;
  onResponseData(control: WireControl, chunk: Buffer): void;
  onResponseEnd(control: WireControl): void;
  onResponseError(control: WireControl, error: Error): void;
}

/** What the handler can do to its request. */
export interface WireControl {
  /**
   * Fails the request with `reason` (its handler hears it) and closes its connection; nothing
   * once the request has ended.
   */
  abort(reason: Error): void;
}

/** A request ready to be written, as often as it is attempted. */
export interface WireRequest {
  /** The request line and headers, blank line included. */
  readonly head: string;
  readonly body: string | Uint8Array | null;
  /** A HEAD request: its response has no body. */
  readonly bodiless: boolean;
  /** Whether the request may be sent again on a new connection when a reused one was closed. */
  readonly idempotent: boolean;
}

/** How long an idle connection is kept when the server does not say (undici's default). */
const IDLE_MS = 4_000;
/** Taken off a server's `Keep-Alive: timeout=N`, so that we never write as it closes. */
const IDLE_MARGIN_MS = 1_000;
/** undici's default connect timeout. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Headers about the connection itself, or that undici checks: requests with them go to undici. */
const CONNECTION_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'upgrade',
  'expect',
  'te',
  'trailer',
  'proxy-connection',
]);
/** The idempotent methods (RFC 9110 §9.2.2): what may be sent again, here and by retries. */
export const IDEMPOTENT: readonly string[] = ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'];
/** A token (RFC 9110 §5.6.2): what a method or a header name is. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a header value may not contain (undici's rule): controls other than tab, and > 0xff. */
export const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function wireError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * The request to write for `method` `path` on `host` (the Host header's value), or undefined when
 * undici must send it: a method such as CONNECT, or a header about the connection. Throws a
 * TypeError for a header that cannot be written (a bad name, or a value with a line break).
 */
export function prepare(
  method: string,
  path: string,
  host: string,
  headers: Record<string, string> | undefined,
  body: string | Uint8Array | null,
): WireRequest | undefined {
  if (!TOKEN.test(method) || method === 'CONNECT') return undefined;
  if (/[^\x21-\x7e]/.test(path)) return undefined; // a URL's path and query are encoded already
  let lines = '';
  let hostLine = `host: ${host}\r\n`;
  if (headers !== undefined) {
    for (const name of Object.keys(headers)) {
      const value: unknown = headers[name];
      if (typeof value !== 'string') return undefined;
      const lower = name.toLowerCase();
      if (CONNECTION_HEADERS.has(lower)) return undefined;
      if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
      if (BAD_VALUE.test(value))
        throw new TypeError(`invalid ${lower} header: ${JSON.stringify(value)}`);
      if (lower === 'host') hostLine = `host: ${value}\r\n`;
      else lines += `${name}: ${value}\r\n`;
    }
  }
  if (body !== null) {
    const length = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    lines += `content-length: ${length}\r\n`;
  } else if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
    lines += 'content-length: 0\r\n';
  }
  return {
    head: `${method} ${path} HTTP/1.1\r\n${hostLine}${lines}\r\n`,
    body,
    bodiless: method === 'HEAD',
    idempotent: IDEMPOTENT.includes(method),
  };
}

/** Connections to many origins, a pool per origin made when first asked for. */
export class Wire {
  readonly #pools = new Map<string, Pool>();
  #closed = false;

  /** Whether `close()` was called: a connection that finishes its response then closes. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The pool for `url`'s origin (`http:` only). */
  pool(origin: string, url: URL): Pool {
    if (this.#closed) throw wireError('the HTTP client is closed', 'ERR_CLOSED');
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
      pool = new Pool(this, origin, hostname, url.port === '' ? 80 : Number(url.port));
      this.#pools.set(origin, pool);
    }
    return pool;
  }

  /**
   * A pool that opens a connection is the origin's again, if it was forgotten meanwhile (its last
   * connection closed as it was about to make another). @internal
   */
  adopt(pool: Pool): void {
    if (!this.#pools.has(pool.origin)) this.#pools.set(pool.origin, pool);
  }

  /** A pool with no connection left is forgotten. @internal */
  emptied(pool: Pool): void {
    if (this.#pools.get(pool.origin) === pool) this.#pools.delete(pool.origin);
  }

  /** Closes every idle connection, and every busy one too if `force`; no new pool is made. */
  close(force: boolean, reason: Error): void {
    this.#closed = true;
    for (const pool of [...this.#pools.values()]) pool.close(force, reason);
  }
}

/** The connections to one origin. */
export class Pool {
  readonly wire: Wire;
  readonly origin: string;
  readonly host: string;
  readonly port: number;
  /** Idle connections, the most recently used last. */
  readonly idle: Connection[] = [];
  /** Every open connection. */
  readonly open = new Set<Connection>();
  #sweep: Cancel | undefined = undefined;

  constructor(wire: Wire, origin: string, host: string, port: number) {
    this.wire = wire;
    this.origin = origin;
    this.host = host;
    this.port = port;
  }

  /** Writes `request` on an idle connection or a new one; `handler` hears what comes back. */
  dispatch(request: WireRequest, handler: WireHandler): void {
    const now = this.idle.length === 0 ? 0 : performance.now();
    let connection: Connection | undefined;
    while ((connection = this.idle.pop()) !== undefined) {
      if (connection.expires > now) break;
      connection.destroy(); // the server may be closing it as we write
    }
    connection ??= new Connection(this);
    connection.send(request, handler);
  }

  /** `connection` finished a response and can carry another. */
  release(connection: Connection, expires: number): void {
    connection.expires = expires;
    this.idle.push(connection);
    this.#sweep ??= later(IDLE_MS, this.#clean, true);
  }

  /** `connection` was made. */
  opened(connection: Connection): void {
    this.open.add(connection);
    if (this.open.size === 1) this.wire.adopt(this);
  }

  /** `connection` closed. */
  closed(connection: Connection): void {
    this.open.delete(connection);
    const at = this.idle.indexOf(connection);
    if (at !== -1) this.idle.splice(at, 1);
    if (this.open.size === 0) {
      this.#sweep?.();
      this.#sweep = undefined;
      this.wire.emptied(this);
    }
  }

  close(force: boolean, reason: Error): void {
    for (const connection of [...this.open]) {
      if (force || connection.handler === undefined) connection.fail(reason);
    }
  }

  /** Closes the connections idle past their time; checks again while some are idle. */
  readonly #clean = (): void => {
    this.#sweep = undefined;
    const now = performance.now();
    for (const connection of this.idle.filter((c) => c.expires <= now)) connection.destroy();
    if (this.idle.length > 0) this.#sweep = later(IDLE_MS, this.#clean, true);
  };
}

/** Where in a response a connection's reader is. */
const enum Phase {
  /** Reading a status line and headers. */
  Head,
  /** `remaining` bytes of body to come. */
  Length,
  /** A chunk's size line. */
  ChunkSize,
  /** `remaining` bytes of the current chunk. */
  ChunkData,
  /** The CRLF after a chunk's data. */
  ChunkEnd,
  /** Trailer lines, up to an empty one. */
  Trailers,
  /** The body runs to the end of the connection. */
  UntilClose,
  /** The response is whole (the connection may be reused if `#reusable`). */
  Done,
}

/** One request on one connection: the control its handler is given, stale once it has ended. */
class Ticket implements WireControl {
  readonly connection: Connection;

  constructor(connection: Connection) {
    this.connection = connection;
  }

  abort(reason: Error): void {
    if (this.connection.ticket === this) this.connection.fail(reason);
  }
}

/**
 * A response head's own object type: no prototype properties, so that a header named
 * `constructor` or `__proto__` is a key like any other, yet a fast object whose shape repeats
 * from one response to the next (which `Object.create(null)`'s are not).
 */
const HeaderBag = function HeaderBag() {
  // nothing: the headers are set on the instance
} as unknown as new () => Record<string, string | string[] | undefined>;
HeaderBag.prototype = Object.create(null) as object;

/**
 * One buffer that every socket reads into: a read is handled before the next one starts, and a
 * handler that keeps a chunk gets a copy.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

class Connection {
  readonly pool: Pool;
  readonly socket: Socket;
  handler: WireHandler | undefined = undefined;
  /** The current request's control (undefined when idle). */
  ticket: Ticket | undefined = undefined;
  request: WireRequest | undefined = undefined;
  /** When an idle connection must not be used any more (`performance.now()`, not the wall clock). */
  expires = 0;
  /** Whether a request was carried before the current one. */
  #reused = false;
  /** Whether any byte of the current response came. */
  #heard = false;
  #phase = Phase.Head;
  #remaining = 0;
  /** Bytes of a head, a chunk-size line or trailers not yet whole. */
  #pending: Buffer | undefined = undefined;
  #keepAlive = true;
  #keepAliveMs = IDLE_MS;
  #reusable = false;

  constructor(pool: Pool) {
    this.pool = pool;
    this.socket = connect({
      host: pool.host,
      port: pool.port,
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: this.#read },
    });
    this.socket.setTimeout(CONNECT_TIMEOUT_MS);
    this.socket.once('connect', this.#onConnect);
    this.socket.once('timeout', this.#onTimeout);
    this.socket.on('end', this.#onEnd);
    this.socket.on('error', this.#onError);
    this.socket.once('close', this.#onClose);
    pool.opened(this);
  }

  /** Writes `request`; `handler` is told of this connection first (again, when it is a resend). */
  send(request: WireRequest, handler: WireHandler): void {
    const ticket = new Ticket(this);
    this.handler = handler;
    this.request = request;
    this.ticket = ticket;
    this.#heard = false;
    this.#phase = Phase.Head;
    handler.onRequestStart(ticket);
    if (this.ticket !== ticket) return; // aborted at once
    if (this.#reused) this.socket.ref();
    const body = request.body;
    if (body === null) {
      this.socket.write(request.head, 'latin1');
    } else {
      this.socket.cork();
      this.socket.write(request.head, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    }
  }

  /** Closes the connection; its request, if any, fails with `error`. */
  fail(error: Error): void {
    const handler = this.handler;
    const ticket = this.ticket;
    this.handler = undefined;
    this.request = undefined;
    this.ticket = undefined;
    this.destroy();
    if (handler !== undefined) handler.onResponseError(ticket as Ticket, error);
  }

  destroy(): void {
    this.socket.destroy();
    this.pool.closed(this);
  }

  readonly #onConnect = (): void => {
    this.socket.setTimeout(0);
  };

  readonly #onTimeout = (): void => {
    this.fail(wireError(`connect timeout after ${CONNECT_TIMEOUT_MS} ms`, 'ETIMEDOUT'));
  };

  readonly #onEnd = (): void => {
    if (this.handler === undefined) {
      this.destroy();
    } else if (this.#phase === Phase.UntilClose) {
      this.#finish(false); // the body ran to the end of the connection, as it said it would
    } else {
      this.#lost(wireError('other side closed', 'ECONNRESET'));
    }
  };

  readonly #onError = (error: Error): void => {
    if (this.handler === undefined) this.destroy();
    else this.#lost(error);
  };

  readonly #onClose = (): void => {
    if (this.handler === undefined) this.pool.closed(this);
    else this.#lost(wireError('other side closed', 'ECONNRESET'));
  };

  /**
   * The connection broke while a request was on it. On a reused connection that had not answered
   * at all, the server most likely closed it as the request went out: an idempotent request is
   * written again on a new one, once.
   */
  #lost(error: Error): void {
    const handler = this.handler;
    const request = this.request;
    if (
      handler !== undefined &&
      request !== undefined &&
      this.#reused &&
      !this.#heard &&
      request.idempotent
    ) {
      this.handler = undefined;
      this.request = undefined;
      this.ticket = undefined;
      this.destroy();
      new Connection(this.pool).send(request, handler);
      return;
    }
    this.fail(error);
  }

  /** `onread`'s callback: `length` bytes came into READ_BUFFER. Returns true: read on. */
  readonly #read = (length: number): boolean => {
    if (this.handler === undefined) {
      this.fail(wireError('the server sent bytes with no request waiting', 'HPE_INVALID_CONSTANT'));
      return true;
    }
    this.#heard = true;
    try {
      this.#parse(READ_BUFFER, 0, length);
    } catch (error) {
      this.fail(error as Error);
    }
    return true;
  };

  /**
   * Reads `buffer[at, end)`; throws a protocol error. A response that ends before `end` is still
   * delivered, but bytes after it were not asked for: its connection is closed, not reused.
   */
  #parse(buffer: Buffer, at: number, end: number): void {
    const handler = this.handler as WireHandler;
    while (at < end && this.#phase !== Phase.Done) {
      switch (this.#phase) {
        case Phase.Head:
          at = this.#head(buffer, at, end, handler);
          break;
        case Phase.Length:
          at = this.#counted(handler, buffer, at, end);
          if (this.#remaining === 0) this.#done(this.#keepAlive);
          break;
        case Phase.UntilClose:
          this.#data(handler, buffer, at, end);
          at = end;
          break;
        case Phase.ChunkSize:
          at = this.#chunkSize(buffer, at, end);
          break;
        case Phase.ChunkData:
          at = this.#counted(handler, buffer, at, end);
          if (this.#remaining === 0) {
            this.#phase = Phase.ChunkEnd;
            this.#remaining = 2;
          }
          break;
        case Phase.ChunkEnd:
          // The CRLF that ends a chunk's data. Not a bare LF: chunk framing has no leniency
          // (RFC 9112 §7.1), and a reader that took one could split a body where others do not.
          if (buffer[at] !== (this.#remaining === 2 ? 0x0d : 0x0a))
            throw wireError('a chunk is longer than its size says', 'HPE_INVALID_CHUNK_SIZE');
          at++;
          if (--this.#remaining === 0) this.#phase = Phase.ChunkSize;
          break;
        case Phase.Trailers:
          at = this.#trailers(buffer, at, end);
          break;
      }
      if (this.handler !== handler) return; // aborted while it was told something
    }
    if (this.#phase === Phase.Done) this.#finish(this.#reusable && at === end);
  }

  /** The response is whole; it is delivered once the read that ended it has been looked at. */
  #done(reusable: boolean): void {
    this.#phase = Phase.Done;
    this.#reusable = reusable;
  }

  /** Hands on what `buffer[at, end)` holds of the `#remaining` bytes expected; returns where they end. */
  #counted(handler: WireHandler, buffer: Buffer, at: number, end: number): number {
    const n = Math.min(this.#remaining, end - at);
    this.#data(handler, buffer, at, at + n);
    this.#remaining -= n;
    return at + n;
  }

  #data(handler: WireHandler, buffer: Buffer, from: number, to: number): void {
    if (to === from) return;
    const chunk = buffer.subarray(from, to);
    handler.onResponseData(this.ticket as Ticket, handler.keepsBody ? Buffer.from(chunk) : chunk);
  }

  /** Joins what was pending with `buffer[at, end)`, so that a line or head split across reads is whole. */
  #join(buffer: Buffer, at: number, end: number): Buffer {
    const pending = this.#pending;
    return pending === undefined
      ? buffer.subarray(at, end)
      : Buffer.concat([pending, buffer.subarray(at, end)]);
  }

  /** Keeps the unread part of a line or head for the next read, up to `limit` bytes. */
  #keep(bytes: Buffer, limit: number, what: string, code: string): void {
    if (bytes.length > limit) throw wireError(`${what} is longer than ${limit} bytes`, code);
    this.#pending = Buffer.from(bytes);
  }

  /** Reads a status line and headers; returns where the body starts in `buffer`. */
  #head(buffer: Buffer, at: number, end: number, handler: WireHandler): number {
    const bytes = this.#join(buffer, at, end);
    const consumedBefore = this.#pending === undefined ? 0 : this.#pending.length;
    // Empty lines before a status line are skipped, as Node's parser skips them.
    let start = 0;
    while (start < bytes.length && (bytes[start] === 0x0d || bytes[start] === 0x0a)) start++;
    checkStart(bytes, start);
    const stop = headEnd(bytes, start);
    if (stop === -1) {
      this.#keep(bytes, maxHeaderSize, 'the response head', 'HPE_HEADER_OVERFLOW');
      return end;
    }
    if (stop.at > maxHeaderSize)
      throw wireError(
        `the response head is longer than ${maxHeaderSize} bytes`,
        'HPE_HEADER_OVERFLOW',
      );
    this.#pending = undefined;
    const next = at + stop.next - consumedBefore;
    const head = bytes.toString('latin1', start, stop.at);
    this.#respond(head, handler);
    return next;
  }

  /**
   * Takes in one response head: interim ones are skipped, a final one starts its body. Its
   * framing is checked before the handler hears of it.
   */
  #respond(head: string, handler: WireHandler): void {
    let lineEnd = head.indexOf('\n');
    if (lineEnd === -1) lineEnd = head.length;
    const status = statusOf(head, lineEnd);
    const headers = new HeaderBag();
    readFields(head, lineEnd + 1, headers);
    if (status < 200) {
      if (status === 101)
        throw wireError(
          'the server switched protocols, which was not asked for',
          'HPE_INVALID_CONSTANT',
        );
      return; // 100 Continue, 103 Early Hints: the final response follows
    }
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep it.
    const connection = headers.connection;
    this.#keepAlive =
      head.charCodeAt(7) === 0x31
        ? connection === undefined || !hasToken(connection, 'close')
        : connection !== undefined && hasToken(connection, 'keep-alive');
    const keepAlive = headers['keep-alive'];
    this.#keepAliveMs = keepAlive === undefined ? IDLE_MS : keepAliveMs(joined(keepAlive) ?? '');
    const request = this.request as WireRequest;
    const transfer = headers['transfer-encoding'];
    const length = headers['content-length'];
    // Both, or a bad length, even on a response without a body, is how responses are split
    // (RFC 9112 §6.1, §6.3): refused, as Node's parser refuses them.
    if (transfer !== undefined && length !== undefined)
      throw wireError('both Transfer-Encoding and Content-Length', 'HPE_UNEXPECTED_CONTENT_LENGTH');
    const size = length === undefined ? 0 : contentLength(length);
    let phase: Phase;
    let remaining = 0;
    if (request.bodiless || status === 204 || status === 304) {
      phase = Phase.Done;
    } else if (transfer !== undefined) {
      phase = /(?:^|,)\s*chunked\s*$/i.test(joined(transfer) ?? '')
        ? Phase.ChunkSize
        : Phase.UntilClose;
    } else if (length !== undefined) {
      remaining = size;
      phase = remaining === 0 ? Phase.Done : Phase.Length;
    } else {
      phase = Phase.UntilClose;
    }
    if (phase === Phase.UntilClose) this.#keepAlive = false;
    const ticket = this.ticket as Ticket;
    handler.onResponseStart(ticket, status, headers);
    if (this.ticket !== ticket) return; // aborted by the handler
    this.#remaining = remaining;
    if (phase === Phase.Done) this.#done(this.#keepAlive);
    else this.#phase = phase;
  }

  /** Reads a chunk's size line; returns where its data starts. */
  #chunkSize(buffer: Buffer, at: number, end: number): number {
    const bytes = this.#join(buffer, at, end);
    const consumedBefore = this.#pending === undefined ? 0 : this.#pending.length;
    const lf = bytes.indexOf(0x0a);
    if (lf === -1) {
      this.#keep(bytes, 1024, 'a chunk-size line', 'HPE_INVALID_CHUNK_SIZE');
      return end;
    }
    this.#pending = undefined;
    const line = bytes.toString('latin1', 0, lf);
    const match = CHUNK_SIZE.exec(line);
    if (match === null)
      throw wireError(
        `a bad chunk size: ${JSON.stringify(line.slice(0, 40))}`,
        'HPE_INVALID_CHUNK_SIZE',
      );
    const size = Number.parseInt(match[1] as string, 16);
    if (!Number.isSafeInteger(size))
      throw wireError(`a chunk too large: ${line.slice(0, 40)}`, 'HPE_INVALID_CHUNK_SIZE');
    if (size === 0) {
      this.#phase = Phase.Trailers;
    } else {
      this.#phase = Phase.ChunkData;
      this.#remaining = size;
    }
    return at + lf + 1 - consumedBefore;
  }

  /** Reads trailer lines up to an empty one, which ends the response. */
  #trailers(buffer: Buffer, at: number, end: number): number {
    const bytes = this.#join(buffer, at, end);
    const consumedBefore = this.#pending === undefined ? 0 : this.#pending.length;
    // An empty line right away, or the end of trailer lines.
    let next = -1;
    if (bytes[0] === 0x0a) next = 1;
    else if (bytes[0] === 0x0d && bytes.length > 1 && bytes[1] === 0x0a) next = 2;
    else {
      const stop = headEnd(bytes);
      if (stop !== -1) next = stop.next;
    }
    if (next === -1) {
      // "\r" alone may yet become an empty line.
      this.#keep(bytes, maxHeaderSize, 'the trailers', 'HPE_HEADER_OVERFLOW');
      return end;
    }
    if (next > 2) readFields(bytes.toString('latin1', 0, next), 0, undefined);
    this.#pending = undefined;
    this.#done(this.#keepAlive);
    return at + next - consumedBefore;
  }

  /** The response is whole: the connection goes back to its pool (or closes), then the handler hears. */
  #finish(reusable: boolean): void {
    const handler = this.handler as WireHandler;
    const ticket = this.ticket as Ticket;
    this.handler = undefined;
    this.request = undefined;
    this.ticket = undefined;
    this.#phase = Phase.Head;
    this.#pending = undefined;
    if (reusable && !this.socket.destroyed && !this.pool.wire.closed) {
      this.#reused = true;
      this.socket.unref();
      this.pool.release(this, performance.now() + this.#keepAliveMs);
    } else {
      this.destroy();
    }
    handler.onResponseEnd(ticket);
  }
}

/**
 * The status of a status line (`head[0, end)`): "HTTP/1.1 200 OK", "HTTP/1.0 404", reason
 * phrase optional.
 */
function statusOf(head: string, end: number): number {
  const lineEnd = head.charCodeAt(end - 1) === 0x0d ? end - 1 : end;
  const d0 = head.charCodeAt(9) - 48;
  const d1 = head.charCodeAt(10) - 48;
  const d2 = head.charCodeAt(11) - 48;
  const version = head.charCodeAt(7);
  if (
    !head.startsWith('HTTP/1.') ||
    (version !== 0x30 && version !== 0x31) ||
    head.charCodeAt(8) !== 0x20 ||
    !(d0 >= 1 && d0 <= 9 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9) ||
    (lineEnd > 12 && head.charCodeAt(12) !== 0x20) ||
    lineEnd < 12
  ) {
    throw wireError(
      `not an HTTP/1 status line: ${JSON.stringify(head.slice(0, Math.min(lineEnd, 80)))}`,
      'HPE_INVALID_CONSTANT',
    );
  }
  return d0 * 100 + d1 * 10 + d2;
}

/**
 * What no line of a head or of trailers may hold (RFC 9110 §5.5, RFC 9112 §4): a control byte
 * other than HTAB (a CR only before the LF that ends the line), or DEL. Node's parser refuses
 * them in fields too (it takes them in a reason phrase, where RFC 9112 §4 allows none either).
 */
const BAD_BYTE = /\r(?!\n)|[^\t\n\r\x20-\x7e\x80-\xff]/;

/**
 * Reads the field lines of `text` from `from` (header or trailer lines, each ending in CRLF or a
 * bare LF, RFC 9112 §2.2) into `fields` (or only checks them, when undefined); throws a protocol
 * error for a line that is not `token ":" value`, or for a byte that no line of `text` (a whole
 * head, status line included, or trailers) may hold. An obs-fold line continues the previous
 * value, joined by a space (RFC 9112 §5.2).
 */
function readFields(
  text: string,
  from: number,
  fields: Record<string, string | string[] | undefined> | undefined,
): void {
  if (BAD_BYTE.test(text))
    throw wireError(
      'a response holds a control byte, a bare CR or a NUL',
      'HPE_INVALID_HEADER_TOKEN',
    );
  let last = '';
  while (from < text.length) {
    let to = text.indexOf('\n', from);
    if (to === -1) to = text.length;
    const stop = text.charCodeAt(to - 1) === 0x0d ? to - 1 : to;
    const at = from;
    from = to + 1;
    if (stop === at) continue;
    const first = text.charCodeAt(at);
    if ((first === 0x20 || first === 0x09) && last !== '') {
      if (fields === undefined) continue;
      const value = fields[last];
      const more = trimmed(text, at, stop);
      if (Array.isArray(value)) value[value.length - 1] = `${value.at(-1) ?? ''} ${more}`;
      else fields[last] = `${value ?? ''} ${more}`;
      continue;
    }
    const colon = text.indexOf(':', at);
    if (colon <= at || colon >= stop || !TOKEN.test(text.slice(at, colon)))
      throw wireError(
        `a bad header line: ${JSON.stringify(text.slice(at, Math.min(stop, at + 80)))}`,
        'HPE_INVALID_HEADER_TOKEN',
      );
    last = text.slice(at, colon).toLowerCase();
    if (fields === undefined) continue;
    const value = trimmed(text, colon + 1, stop);
    const before = fields[last];
    if (before === undefined) fields[last] = value;
    else if (Array.isArray(before)) before.push(value);
    else fields[last] = [before, value];
  }
}

/** `text[from, to)` without the spaces and tabs around it (not String#trim's other spaces). */
function trimmed(text: string, from: number, to: number): string {
  while (from < to && (text.charCodeAt(from) === 0x20 || text.charCodeAt(from) === 0x09)) from++;
  while (to > from && (text.charCodeAt(to - 1) === 0x20 || text.charCodeAt(to - 1) === 0x09)) to--;
  return text.slice(from, to);
}

/** Whether a comma-separated header value lists `token` (in any case). */
function hasToken(value: string | string[], token: string): boolean {
  const text = (joined(value) ?? '').toLowerCase();
  if (text === token) return true;
  if (!text.includes(',')) return text.trim() === token; // one token, the usual case: no array
  for (const part of text.split(',')) if (part.trim() === token) return true;
  return false;
}
/**
 * A chunk-size line (its LF left off): hex digits, then chunk extensions as RFC 9112 §7.1.1 has
 * them (`BWS ";" BWS token [BWS "=" BWS (token / quoted-string)]`, each), then CR. Nothing else:
 * no whitespace after the size but before a ";", no bare LF line end.
 */
const CHUNK_SIZE =
  /^([0-9A-Fa-f]+)(?:[\t ]*;[\t ]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[\t ]*=[\t ]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t !\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*\r$/;

/** What every HTTP/1 status line starts with. */
const HTTP_1 = Buffer.from('HTTP/1.', 'latin1');

/**
 * Throws unless the bytes at `start` can begin a status line, as far as they go: a server that
 * speaks another protocol (SSH, TLS) may never send the blank line that would end a head.
 */
function checkStart(bytes: Buffer, start: number): void {
  const n = Math.min(HTTP_1.length, bytes.length - start);
  for (let i = 0; i < n; i++) {
    if (bytes[start + i] !== HTTP_1[i]) {
      const got = bytes.toString('latin1', start, start + 12);
      const more = bytes.length - start > 12 ? '…' : '';
      throw wireError(
        `the server's response does not start with HTTP/1. (got ${JSON.stringify(got).slice(0, -1)}${more}")`,
        'HPE_INVALID_CONSTANT',
      );
    }
  }
}

/**
 * Where a head that starts at `from` ends in `bytes` (its blank line), and where what follows it
 * starts; or -1.
 */
function headEnd(bytes: Buffer, from = 0): { at: number; next: number } | -1 {
  const crlf = bytes.indexOf('\n\r\n', from, 'latin1');
  const lf = bytes.indexOf('\n\n', from, 'latin1');
  if (crlf === -1 && lf === -1) return -1;
  if (lf === -1 || (crlf !== -1 && crlf < lf)) return { at: crlf + 1, next: crlf + 3 };
  return { at: lf + 1, next: lf + 2 };
}

function joined(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** A Content-Length's value: one number, or the same number listed more than once. */
function contentLength(value: string | string[]): number {
  if (typeof value === 'string' && value.length < 16 && /^\d+$/.test(value)) return Number(value);
  const values = (Array.isArray(value) ? value.join(',') : value).split(',');
  const first = (values[0] as string).trim();
  for (const other of values) {
    if (other.trim() !== first)
      throw wireError(
        `a bad Content-Length: ${JSON.stringify(joined(value))}`,
        'HPE_INVALID_CONTENT_LENGTH',
      );
  }
  if (!/^\d{1,15}$/.test(first))
    throw wireError(
      `a bad Content-Length: ${JSON.stringify(joined(value))}`,
      'HPE_INVALID_CONTENT_LENGTH',
    );
  return Number(first);
}

/** The `Keep-Alive` value read last, and what it gave. */
const lastKeepAlive = { value: '', ms: IDLE_MS };

/** How long to keep a connection idle, from the server's `Keep-Alive: timeout=N`. */
function keepAliveMs(value: string): number {
  // A server sends the same value every time: the last one read is remembered.
  if (value === lastKeepAlive.value) return lastKeepAlive.ms;
  const match = /(?:^|[,\s])timeout=(\d+)/i.exec(value);
  const ms = match === null ? IDLE_MS : Math.min(IDLE_MS, Number(match[1]) * 1000 - IDLE_MARGIN_MS);
  lastKeepAlive.value = value;
  lastKeepAlive.ms = ms;
  return ms;
}
