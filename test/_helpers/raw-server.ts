/**
 * A TCP server on 127.0.0.1 that reads HTTP/1.1 requests itself (a head, then a Content-Length
 * body) and hands each to a function that writes whatever bytes it likes on the socket: a good
 * response, part of one, garbage, or nothing; or resets the connection. What misbehaving servers
 * are made of, where `node:http` would not let a test break the protocol.
 */
import { createServer, type AddressInfo, type Socket } from 'node:net';

/** A request as the server read it. */
export interface ReadRequest {
  /** The request line and headers, blank line included. */
  readonly head: string;
  readonly method: string;
  readonly path: string;
  /** Header values by lower-case name (the last of repeated ones). */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly socket: Socket;
  /** 1 for the first request to arrive with this path, 2 for the second, … */
  readonly nth: number;
}

export interface RawServer {
  /** `http://127.0.0.1:<port>`. */
  readonly origin: string;
  url(path?: string): string;
  /** Every request, in order of arrival. */
  readonly requests: ReadRequest[];
  /** Closes every connection, then the server. */
  close(): Promise<void>;
}

/** Starts a server whose every request is answered (or not) by `respond`. */
export async function rawServer(respond: (request: ReadRequest) => void): Promise<RawServer> {
  const sockets = new Set<Socket>();
  const requests: ReadRequest[] = [];
  const counts = new Map<string, number>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined); // a client that resets is part of the tests
    readRequests(socket, (head, method, path, body) => {
      const headers: Record<string, string> = {};
      for (const line of head.split('\r\n').slice(1, -2)) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const nth = (counts.get(path) ?? 0) + 1;
      counts.set(path, nth);
      const request = { head, method, path, headers, body, socket, nth };
      requests.push(request);
      respond(request);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    url: (path = '/') => `${origin}${path}`,
    requests,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Reads the requests that come on `socket` (a head, then a Content-Length body), each handed to
 * `onRequest` once whole, in order.
 */
export function readRequests(
  socket: Socket,
  onRequest: (head: string, method: string, path: string, body: Buffer) => void,
): void {
  let buffered = Buffer.alloc(0);
  socket.on('data', (data: Buffer) => {
    buffered = Buffer.concat([buffered, data]);
    for (;;) {
      const end = buffered.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buffered.toString('latin1', 0, end + 4);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buffered.length < end + 4 + length) return;
      const body = Buffer.from(buffered.subarray(end + 4, end + 4 + length));
      buffered = buffered.subarray(end + 4 + length);
      const [method = '', path = ''] = head.split(' ', 2);
      onRequest(head, method, path, body);
    }
  });
}

/** A whole response: `status` with a Content-Length body. */
export function response(status: number, body: string, headers = ''): string {
  return `HTTP/1.1 ${status} X\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${headers}\r\n${body}`;
}
