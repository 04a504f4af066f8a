/**
 * Faults injected into every step of the HTTP request path, each synchronously and asynchronously
 * in turn, through real seams: a server on 127.0.0.1 that misbehaves (garbage, resets, a body cut
 * short, silence), a request undici refuses inside `dispatch()`, a header that cannot be written,
 * a port nothing listens on, a caller's signal, a closed client, a priority the limiter refuses, a
 * timeout, a `retry.random` that throws, listeners that throw or reject, and an output stream that
 * fails.
 *
 * "Sync" is a fault that surfaces in the step's own call stack (the wire reader throws as it
 * parses, undici refuses inside `dispatch()`, the limiter refuses inside `schedule`, a listener
 * throws); "async" one that surfaces later (a socket error, an abort, a timer, a rejection).
 *
 * Whatever the fault, for `createExchange()`, `createFetch()` and `createRequest()`: every call
 * settles; every slot comes back (the client's limiter goes idle, and each origin's holds nothing,
 * runs nothing, waits for nothing); and a request after the fault is served, unless the fault
 * closed the client. For `sluice fetch` (run in-process), with the same fault as input lines: one
 * record per line, and exit code 0 or 1.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { ClosedError } from '../src/index.ts';
import {
  createExchange,
  createFetch,
  createRequest,
  type HttpClient,
  type HttpOptions,
  type RequestReport,
} from '../src/http/index.ts';
import { main } from '../src/cli/main.ts';
import { rawServer, response, type RawServer, type ReadRequest } from './_helpers/raw-server.ts';
import { assertAtRest } from './_helpers/at-rest.ts';
import { catchUncaught } from './_helpers/uncaught.ts';
import { within } from './_helpers/within.ts';
import { cli, indexes, ROOT } from './cli-helpers.ts';

type Api = 'createExchange' | 'createFetch' | 'createRequest';
const APIS: readonly Api[] = ['createExchange', 'createFetch', 'createRequest'];

/** What a call asks for, whatever the API it goes through. */
interface Init {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  priority?: number;
  onReport?: (report: RequestReport) => void;
  /** `createExchange()` only. */
  onStatus?: (status: number) => void;
}

/** A client of one API: a call resolves once the whole body has been read. */
interface Client {
  readonly client: HttpClient;
  call(url: string, init?: Init): Promise<string>;
  close(options?: { deadline?: number }): Promise<void>;
}

function client(api: Api, options: HttpOptions): Client {
  switch (api) {
    case 'createExchange': {
      const exchange = createExchange(options);
      return {
        client: exchange.client,
        call: async (url, init) =>
          (await exchange(url, { ...init, keepBody: true })).body?.toString() ?? '',
        close: (o) => exchange.close(o),
      };
    }
    case 'createFetch': {
      const fetch = createFetch(options);
      return {
        client: fetch.client,
        call: async (url, { onStatus: _, ...init } = {}) => (await fetch(url, init)).text(),
        close: (o) => fetch.close(o),
      };
    }
    case 'createRequest': {
      const request = createRequest(options);
      return {
        client: request.client,
        call: async (url, { onStatus: _, ...init } = {}) => (await request(url, init)).body.text(),
        close: (o) => request.close(o),
      };
    }
  }
}

/** What a fault's calls have to work with. */
interface Setup {
  server: RawServer;
  /** The origin of a port nothing listens on. */
  closedPort: string;
}

/** One way a step fails. */
interface Scenario {
  /** What it is, as the test's name says it. */
  what: string;
  /** The URL the faulty calls ask for. */
  url(setup: Setup): string;
  /** What the faulty calls send (made afresh for each call). */
  init?: (setup: Setup) => Init;
  /** Client options over the defaults. */
  options?: HttpOptions;
  /** The APIs it applies to. @default all three */
  apis?: readonly Api[];
  /** Done to the client before the calls. */
  before?: (client: Client) => Promise<void>;
  /** Done while the calls run. */
  during?: (client: Client) => Promise<void>;
  /** Whether the client is closed by the fault (later calls are refused, not served). */
  closes?: boolean;
  /** Whether each faulty call's listener fails (its exception is rethrown on its own). */
  rethrown?: boolean;
  /** The same fault as a `sluice fetch` input line, and its extra arguments. */
  cli?: { line(setup: Setup): string; args?: string[] };
}

/** A named fault of one step, made synchronously and asynchronously. */
interface Fault {
  step: string;
  name: string;
  sync: Scenario[];
  async: Scenario[];
}

/** The server's routes: what each path gets. */
function route(request: ReadRequest): void {
  const socket = request.socket;
  switch (request.path) {
    case '/ok':
      socket.write(response(200, 'ok'));
      break;
    case '/garbage':
      socket.write('SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n'); // and never a blank line
      break;
    case '/reset':
      socket.resetAndDestroy();
      break;
    case '/cut':
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789');
      setImmediate(() => socket.resetAndDestroy());
      break;
    case '/503':
      socket.write(response(503, 'busy'));
      break;
    case '/503-cut':
      socket.write('HTTP/1.1 503 X\r\nContent-Length: 100\r\n\r\n0123456789');
      setImmediate(() => socket.resetAndDestroy());
      break;
    case '/stall':
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789');
      break;
    case '/slow':
      setTimeout(() => socket.write(response(200, 'ok')), 300);
      break;
    case '/hang':
      break;
    default:
      socket.write(response(404, 'no such route'));
  }
}

/** A JSON input line for `sluice fetch`. */
function jsonLine(url: string, request: object = {}): string {
  return JSON.stringify({ url, ...request });
}

const onPath = (path: string) => (setup: Setup) => setup.server.url(path);

const thrower = (): never => {
  throw new Error('the listener broke');
};
/** An async listener that fails: typed as the void listener it is passed as (as JS would). */
const rejecter = ((): Promise<never> =>
  Promise.reject(new Error('the listener broke'))) as () => void;

const faults: Fault[] = [
  {
    step: 'wire reader',
    name: "the server's response is bad or breaks off",
    sync: [
      {
        what: 'the server speaks another protocol (the reader throws as it parses)',
        url: onPath('/garbage'),
        cli: { line: (s) => s.server.url('/garbage') },
      },
    ],
    async: [
      {
        what: 'the server resets the connection mid-body (a socket error)',
        url: onPath('/cut'),
        cli: { line: (s) => s.server.url('/cut') },
      },
    ],
  },
  {
    step: 'wire reader',
    name: 'the request cannot be sent',
    sync: [
      {
        what: 'a header value with a line break (refused as the request is written)',
        url: onPath('/ok'),
        init: () => ({ headers: { 'x-bad': 'a\nb' } }),
        cli: { line: (s) => jsonLine(s.server.url('/ok'), { headers: { 'x-bad': 'a\nb' } }) },
      },
    ],
    async: [
      {
        what: 'nothing listens on the port (a connect error)',
        url: (s) => `${s.closedPort}/x`,
        cli: { line: (s) => `${s.closedPort}/x` },
      },
    ],
  },
  {
    step: 'undici dispatch',
    name: 'undici refuses or fails the request',
    sync: [
      {
        what: 'Transfer-Encoding with a string body (refused inside dispatch())',
        url: onPath('/ok'),
        init: () => ({ method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: 'x' }),
        cli: {
          line: (s) =>
            jsonLine(s.server.url('/ok'), {
              method: 'POST',
              headers: { 'transfer-encoding': 'chunked' },
              body: 'x',
            }),
        },
      },
    ],
    async: [
      {
        what: 'the server resets a request undici sent',
        url: onPath('/reset'),
        // A header about the connection sends an exchange's request through undici.
        init: () => ({ headers: { connection: 'keep-alive' } }),
        cli: {
          line: (s) => jsonLine(s.server.url('/reset'), { headers: { connection: 'keep-alive' } }),
        },
      },
    ],
  },
  {
    step: 'limiter',
    name: "the caller's signal aborts",
    sync: [
      {
        what: 'aborted before the call',
        url: onPath('/ok'),
        init: () => ({ signal: AbortSignal.abort(new Error('aborted before')) }),
      },
    ],
    async: [
      {
        what: 'aborted while in flight or waiting for the slot',
        url: onPath('/hang'),
        init: () => ({ signal: AbortSignal.timeout(100) }),
      },
      {
        what: 'aborted during the backoff before a retry',
        url: onPath('/reset'),
        init: () => ({ signal: AbortSignal.timeout(100) }),
        options: { retry: { retries: 1, minDelay: 400, maxDelay: 400, jitter: 'none' } },
      },
    ],
  },
  {
    step: 'limiter',
    name: 'the client closes',
    sync: [
      {
        what: 'closed before the call',
        url: onPath('/ok'),
        before: (c) => c.close(),
        closes: true,
      },
    ],
    async: [
      {
        what: 'closed, with no deadline to wait, while one call is in flight and others wait',
        url: onPath('/hang'),
        during: async (c) => {
          await delay(50);
          await c.close({ deadline: 0 });
        },
        closes: true,
      },
    ],
  },
  {
    step: 'limiter',
    name: 'the limiter refuses or gives up on the attempt',
    sync: [
      {
        what: 'a priority that is not a number (refused as the task is scheduled)',
        url: onPath('/ok'),
        init: () => ({ priority: Number.NaN }),
      },
    ],
    async: [
      {
        what: 'the attempt times out before the response',
        url: onPath('/hang'),
        options: { timeout: 100 },
        cli: { line: (s) => s.server.url('/hang'), args: ['--timeout', '100ms'] },
      },
      {
        what: 'the attempt times out mid-body',
        url: onPath('/stall'),
        options: { timeout: 100 },
        cli: { line: (s) => s.server.url('/stall'), args: ['--timeout', '100ms'] },
      },
    ],
  },
  {
    step: 'retries',
    name: 'a retry cannot be decided or its response breaks',
    sync: [
      {
        what: 'retry.random throws, deciding the retry of a 503',
        url: onPath('/503'),
        options: { retry: { retries: 1, random: thrower } },
      },
      {
        what: 'retry.random throws, deciding the retry of a reset connection',
        url: onPath('/reset'),
        options: { retry: { retries: 1, random: thrower } },
      },
    ],
    async: [
      {
        what: 'the body of a 503 thrown away for a retry breaks off',
        url: onPath('/503-cut'),
        cli: { line: (s) => s.server.url('/503-cut') },
      },
    ],
  },
  {
    step: 'listeners',
    name: 'an onReport listener fails',
    sync: [
      {
        what: 'it throws',
        url: onPath('/ok'),
        init: () => ({ onReport: thrower }),
        rethrown: true,
      },
    ],
    async: [
      {
        what: 'it rejects',
        url: onPath('/ok'),
        init: () => ({ onReport: rejecter }),
        rethrown: true,
      },
    ],
  },
  {
    step: 'listeners',
    name: 'an onStatus listener fails',
    sync: [
      {
        what: 'it throws',
        url: onPath('/ok'),
        init: () => ({ onStatus: thrower }),
        apis: ['createExchange'],
        rethrown: true,
      },
    ],
    async: [
      {
        what: 'it rejects',
        url: onPath('/ok'),
        init: () => ({ onStatus: rejecter }),
        apis: ['createExchange'],
        rethrown: true,
      },
    ],
  },
];

/** A port nothing listens on (one that was free a moment ago). */
async function closedPort(): Promise<string> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return `http://127.0.0.1:${port}`;
}

async function setup(t: TestContext): Promise<Setup> {
  const server = await rawServer(route);
  t.after(() => server.close());
  return { server, closedPort: await closedPort() };
}

/** The calls of one scenario through one API: two faulty ones, then a good one, in one slot. */
async function runLibrary(t: TestContext, api: Api, scenario: Scenario): Promise<void> {
  const s = await setup(t);
  const thrown = catchUncaught(t);
  const c = client(api, {
    perOrigin: { concurrency: 1 },
    retry: { retries: 1, minDelay: 1, maxDelay: 5 },
    timeout: 2_000,
    ...scenario.options,
  });
  t.after(() => c.close({ deadline: 0 }));
  await scenario.before?.(c);
  const url = scenario.url(s);
  const calls = [
    c.call(url, scenario.init?.(s)),
    c.call(url, scenario.init?.(s)),
    c.call(s.server.url('/ok')),
  ];
  const during = scenario.during?.(c);
  const outcomes = await within(5_000, Promise.allSettled(calls), 'every call settling');
  await during;
  const last = outcomes[2];
  if (scenario.closes === true) {
    assert.equal(last?.status, 'rejected');
    assert.ok(last.reason instanceof ClosedError, String(last.reason));
  } else {
    assert.equal(last?.status, 'fulfilled', String(last?.status === 'rejected' && last.reason));
    assert.equal(last.value, 'ok');
  }
  await assertAtRest(c.client, [new URL(url).origin, s.server.origin], scenario.closes === true);
  await delay(10); // a listener's exception is rethrown on the next tick
  assert.equal(thrown.length, scenario.rethrown === true ? 2 : 0, String(thrown[0]));
  for (const error of thrown) assert.equal((error as Error).message, 'the listener broke');
}

/** The scenario as `sluice fetch` input: two faulty lines, then a good one, one at a time. */
async function runCli(t: TestContext, scenario: Scenario): Promise<void> {
  const s = await setup(t);
  const line = (scenario.cli as NonNullable<Scenario['cli']>).line(s);
  const stdin = [line, line, s.server.url('/ok')].join('\n') + '\n';
  const args = ['fetch', '-', '-c', '1', '--retries', '1', ...(scenario.cli?.args ?? [])];
  const run = await within(8_000, cli(args, { stdin }), 'sluice fetch ending');
  assert.ok(run.code === 0 || run.code === 1, `exit code ${run.code}: ${run.stderr}`);
  assert.deepEqual(indexes(run.records), [0, 1, 2]);
  assert.deepEqual(
    run.records.filter((r) => r.index === 2).map((r) => [r.status, r.ok]),
    [[200, true]],
  );
}

for (const fault of faults) {
  describe(`${fault.step}: ${fault.name}`, { timeout: 30_000 }, () => {
    for (const mode of ['sync', 'async'] as const) {
      for (const scenario of fault[mode]) {
        for (const api of scenario.apis ?? APIS) {
          it(`${mode}, ${scenario.what}: ${api} settles every call and gives every slot back`, (t) =>
            runLibrary(t, api, scenario));
        }
        if (scenario.cli !== undefined) {
          it(`${mode}, ${scenario.what}: sluice fetch writes one record per line`, (t) =>
            runCli(t, scenario));
        }
      }
    }
  });
}

/**
 * A stdout that fails: its `write()` throws (sync), or it emits an error (async). Not with EPIPE:
 * an output closed by its reader ends the run quietly, as a Unix filter's does (exit 141).
 */
function failingStdout(mode: 'sync' | 'async'): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      if (mode === 'sync') throw new Error('ENOSPC: no space left on device');
      callback(Object.assign(new Error('write ENOSPC'), { code: 'ENOSPC' }));
    },
  });
}

describe("the CLI's record writer: the output fails", { timeout: 30_000 }, () => {
  for (const mode of ['sync', 'async'] as const) {
    it(`${mode}: sluice fetch ends, exit code 1, saying it cannot write the output`, async (t) => {
      const s = await setup(t);
      const stdin = new PassThrough();
      // The last line is slow: the first records are written while the run goes on.
      stdin.end(['/ok', '/ok', '/slow'].map((path) => s.server.url(path)).join('\n') + '\n');
      let stderr = '';
      const errors = new PassThrough();
      errors.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const code = await within(
        8_000,
        main(['fetch', '-', '-c', '1'], {
          stdin,
          stdout: failingStdout(mode),
          stderr: errors,
          stderrIsTTY: false,
          env: {},
          cwd: ROOT,
          onInterrupt: () => () => undefined,
        }),
        'sluice fetch ending',
      );
      assert.equal(code, 1);
      assert.match(stderr, /cannot write the output: .*ENOSPC/);
    });
  }
});
