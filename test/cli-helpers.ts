/**
 * Helpers for the CLI tests: local HTTP servers, the CLI run in-process with injected streams,
 * and the real executable spawned as a child process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { main } from '../src/cli/main.ts';
import type { CliIo } from '../src/cli/io.ts';

export const ROOT = new URL('..', import.meta.url).pathname;

/** A local server that records what it received. */
export interface TestServer {
  url: string;
  /** Requests received, in arrival order. */
  requests: {
    method: string;
    url: string;
    headers: IncomingMessage['headers'];
    /** The headers as sent: names in their case, repeats kept. */
    rawHeaders: string[];
    body: string;
  }[];
  /** Responses held back (by handlers that never answer), ended by `close()`. */
  held: ServerResponse[];
  close(): Promise<void>;
}

export type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  body: string,
  server: TestServer,
) => void;

export async function startServer(handler: Handler): Promise<TestServer> {
  const server = createServer();
  const state: TestServer = {
    url: '',
    requests: [],
    held: [],
    close: async () => {
      for (const res of state.held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    },
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      state.requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body,
      });
      handler(req, res, body, state);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

/** Answers every request with 200 "ok". */
export const ok: Handler = (_req, res) => {
  res.end('ok');
};

/**
 * A fresh temporary directory, removed by `remove()`; `file(name, lines)` writes a file of lines
 * in it (each ended by a newline) and returns its path.
 */
export function tempDir(): {
  dir: string;
  remove: () => void;
  file: (name: string, lines: string[]) => string;
} {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'));
  return {
    dir,
    remove: () => {
      rmSync(dir, { recursive: true, force: true });
    },
    file: (name, lines) => {
      const path = join(dir, name);
      writeFileSync(path, lines.map((line) => `${line}\n`).join(''));
      return path;
    },
  };
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  records: Record<string, unknown>[];
}

export interface InProcess {
  /** Resolves when `main()` returns. */
  done: Promise<CliRun>;
  /** Sends an interrupt, as Ctrl-C would. */
  interrupt(): void;
  /** What stdout has received so far. */
  stdoutSoFar(): string;
  stdin: PassThrough;
}

export interface CliOptions {
  /** stdin's content; with `openStdin`, stdin stays open for the test to write. */
  stdin?: string | Readable;
  openStdin?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  tty?: boolean;
  /** Whether stdin is a terminal. */
  stdinTty?: boolean;
  columns?: number;
  /** Where the records go instead of a stream the run's `stdout` collects. */
  stdout?: Writable;
}

/** Parses JSONL, failing on any line that is not JSON. */
export function parseRecords(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Runs `main(argv)` in this process with injected streams. */
export function startCli(argv: string[], options: CliOptions = {}): InProcess {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough() as PassThrough & { columns?: number };
  if (options.columns !== undefined) stderr.columns = options.columns;
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
  const listeners = new Set<() => void>();
  const io: CliIo = {
    stdin: typeof options.stdin === 'object' ? options.stdin : stdin,
    stdout: options.stdout ?? stdout,
    stderr,
    stderrIsTTY: options.tty === true,
    stdinIsTTY: options.stdinTty === true,
    env: { PATH: process.env.PATH, ...options.env },
    cwd: options.cwd ?? ROOT,
    onInterrupt(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
  };
  if (typeof options.stdin === 'string') stdin.end(options.stdin);
  else if (options.openStdin !== true && options.stdin === undefined) stdin.end();
  const done = main(argv, io).then((code) => ({
    code,
    stdout: out,
    stderr: err,
    get records() {
      return parseRecords(out);
    },
  }));
  return {
    done,
    interrupt: () => {
      for (const listener of [...listeners]) listener();
    },
    stdoutSoFar: () => out,
    stdin,
  };
}

/** Runs `main(argv)` in this process to its end. */
export function cli(argv: string[], options: CliOptions = {}): Promise<CliRun> {
  return startCli(argv, options).done;
}

export interface Spawned {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
  /** What stdout has received so far. */
  stdoutSoFar(): string;
}

/**
 * Spawns the real CLI (`node --import tsx src/cli/bin.ts …`); with `stderrToStdout`, through a
 * shell that sends its stderr into the stdout pipe (`2>&1`).
 */
export function spawnCli(
  argv: string[],
  options: { env?: Record<string, string>; stdin?: string; stderrToStdout?: boolean } = {},
): Spawned {
  const command = [process.execPath, '--import', 'tsx', 'src/cli/bin.ts', ...argv];
  const [file, args] =
    options.stderrToStdout === true
      ? ['/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', ...command]]
      : [process.execPath, command.slice(1)];
  const child = spawn(file, args, {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
  child.stdin.end(options.stdin ?? '');
  const done = new Promise<{
    code: number | null;
    signal: string | null;
    stdout: string;
    stderr: string;
  }>((resolve) => {
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  return { child, done, stdoutSoFar: () => out };
}

/** Resolves once `check()` holds, polling; rejects after `ms`. */
export async function until(
  check: () => boolean,
  ms = 5000,
  what = 'the condition',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Indexes of the records, sorted: to check there is exactly one per line. */
export function indexes(records: Record<string, unknown>[]): number[] {
  return records.map((r) => r.index as number).sort((a, b) => a - b);
}

/** 0, 1, …, n - 1. */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
