/**
 * Real Redis servers for the tests: each test starts its own `redis-server` on a free port on
 * 127.0.0.1, with nothing saved to disk, so that it can kill it, pause it and restart it (its data
 * lost, as after a crash) without touching any other test.
 *
 * Where `redis-server` is missing, the tests that need it are skipped, except in CI (`CI=true`),
 * where they fail: `.ci/run` installs it.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient, Reply, Script, Subscription } from '../../src/redis/_client.ts';
import { TimeoutError } from '../../src/errors.ts';

/** Whether `redis-server` can be run here. */
export const redisInstalled: boolean =
  spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;

/**
 * What a test that needs Redis passes to `it()` / `describe()`: skipped when there is no
 * `redis-server`, unless in CI, where the test then fails on its own.
 */
export const needsRedis: { skip: string | false } = {
  skip: redisInstalled || process.env.CI === 'true' ? false : 'redis-server is not installed',
};

/** Polls `probe` until it returns true, failing after `ms`. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean> | boolean,
  ms = 10_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await probe())) {
    if (performance.now() > deadline) assert.fail(`${what}: not within ${ms}ms`);
    await sleep(10);
  }
}

/** A free TCP port on 127.0.0.1 (free when asked; a server started at once gets it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  return port;
}

/** Sends one inline command and resolves to the first line of the reply. */
function ask(port: number, command: string, password?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      socket.write(`${password === undefined ? '' : `AUTH ${password}\r\n`}${command}\r\n`);
    });
    socket.on('data', (chunk: string) => {
      reply += chunk;
      const lines = reply.split('\r\n');
      const wanted = password === undefined ? 1 : 2;
      if (lines.length > wanted) {
        socket.destroy();
        resolve(lines[wanted - 1]!);
      }
    });
    socket.on('error', reject);
  });
}

export interface RedisServerOptions {
  /** `requirepass`: clients must AUTH. */
  password?: string;
  /** More `redis-server` arguments (`['--cluster-enabled', 'yes']`). */
  args?: string[];
}

/** A `redis-server` process of a test's own. */
export class RedisServer {
  readonly port: number;
  readonly #options: RedisServerOptions;
  readonly #dir: string;
  #process: ChildProcess | undefined;

  private constructor(port: number, options: RedisServerOptions) {
    this.port = port;
    this.#options = options;
    this.#dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'));
  }

  /** Starts a server on a free port and resolves once it answers PING. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), options);
    await server.#spawn();
    return server;
  }

  /** `redis://127.0.0.1:PORT` (with the password, if it has one). */
  get url(): string {
    const auth = this.#options.password === undefined ? '' : `:${this.#options.password}@`;
    return `redis://${auth}127.0.0.1:${this.port}`;
  }

  /** The server process's id (undefined while it is not running). */
  get pid(): number | undefined {
    return this.#process?.pid;
  }

  async #spawn(): Promise<void> {
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      this.#dir,
      '--protected-mode',
      'no',
      ...(this.#options.password === undefined ? [] : ['--requirepass', this.#options.password]),
      ...(this.#options.args ?? []),
    ];
    const child = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    this.#process = child;
    child.on('exit', () => {
      if (this.#process === child) this.#process = undefined;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        if ((await ask(this.port, 'PING', this.#options.password)) === '+PONG') return;
      } catch {
        // not listening yet
      }
      if ((this.#process as ChildProcess | undefined) === undefined) {
        throw new Error(`redis-server on ${this.port} exited`);
      }
      if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not start`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Sends one command (inline) and resolves to the first line of its reply. */
  command(command: string): Promise<string> {
    return ask(this.port, command, this.#options.password);
  }

  /** SIGSTOP: the server stops answering, its connections stay open. */
  pause(): void {
    this.#process?.kill('SIGSTOP');
  }

  /** SIGCONT, after `pause()`. */
  resume(): void {
    this.#process?.kill('SIGCONT');
  }

  /** Kills the server at once (SIGKILL), as a crash would; resolves once it has exited. */
  async kill(): Promise<void> {
    const child = this.#process;
    if (child === undefined) return;
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  }

  /** Kills it and starts it again on the same port: its data is lost, as after a crash. */
  async restart(): Promise<void> {
    await this.kill();
    await this.#spawn();
  }

  /** Stops the server and removes its directory. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** One turn of the event loop: the promise reactions due now have run. */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A `RedisClient` around another that knows which of its calls are out. `settled()` resolves once
 * none is, and the answers started no other: a shared gate has then done what it was asked. The
 * client is looked up at each call, so a factory can make one before the server is up.
 */
export class TrackedClient implements RedisClient {
  readonly #inner: () => RedisClient;
  readonly #out = new Set<Promise<unknown>>();
  /** Scripts run through it so far. */
  runs = 0;

  constructor(inner: () => RedisClient) {
    this.#inner = inner;
  }

  run(script: Script, keys: readonly string[], args: readonly (string | number)[]): Promise<Reply> {
    this.runs++;
    return this.#track(this.#inner().run(script, keys, args));
  }

  subscribe(channel: string, listener: (message: string) => void): Promise<Subscription> {
    return this.#track(this.#inner().subscribe(channel, listener));
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#out.add(promise);
    const done = (): void => {
      this.#out.delete(promise);
    };
    promise.then(done, done);
    return promise;
  }

  async settled(): Promise<void> {
    for (;;) {
      await turn();
      if (this.#out.size > 0) await Promise.allSettled([...this.#out]);
      else {
        await turn();
        if (this.#out.size === 0) return;
      }
    }
  }
}

/**
 * Calls `call` until it is sent (not failed at once because Redis was silent: the calls sent
 * before are answered first once Redis is back), and resolves with its result.
 */
export async function untilSent<T>(call: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof TimeoutError && error.message.includes('not sent'))) throw error;
      await sleep(20);
    }
  }
}
