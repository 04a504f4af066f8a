/**
 * `sluice exec`: one shell command per input line (the `xargs -P` / GNU parallel job), run by
 * `/bin/sh -c` in a process group of its own, within a concurrency and rates (a `Limiter`), with
 * retries of failed commands and a timeout per attempt. One record per line:
 * `{ index, cmd, code, signal, ok, attempts, ms, stdout, stderr, error }`.
 *
 * A timeout (or a cancel) kills the command's whole process group — what the command started
 * too — with SIGTERM, then SIGKILL after a short grace. stdout and stderr are captured up to a
 * cap each; beyond it they are read and dropped, and the record says how much there was.
 *
 * A command ends when its shell has exited and its output has closed. Output still open
 * `OUTPUT_GRACE` after the shell exited is held by something the command left behind: a job it
 * put in the background, or a process that left the group (`setsid`) and that no group kill
 * reaches. sluice then stops reading, kills what is left of the group, and ends the record (its
 * stderr says so), so a slot is never held longer than the command itself (plus the kill grace,
 * after a timeout) plus `OUTPUT_GRACE`.
 *
 * Invariants: every spawned process group is waited for (its shell exited, its stdio closed or
 * given up after `OUTPUT_GRACE`) before its outcome is given; a group that was timed out,
 * cancelled or whose output was given up is sent SIGKILL before that, so nothing it started in
 * the group outlives it.
 */
import { spawn } from 'node:child_process';
import { kill } from 'node:process';
import { later, type Cancel } from '../_clock.ts';
import { ClosedError } from '../errors.ts';
import { Limiter } from '../limiter.ts';
import type { CliIo } from './io.ts';
import type { Command, Outcome } from './run.ts';

/** What `sluice exec` was asked, parsed and checked. */
export interface ExecSettings {
  concurrency: number;
  rates: string[];
  retries: number;
  timeoutMs: number | undefined;
  /** Bytes of stdout and of stderr kept per command. */
  maxOutput: number;
}

export interface ExecTask {
  cmd: string;
}

/** Milliseconds between SIGTERM and SIGKILL. */
const KILL_GRACE = 500;

/**
 * Milliseconds the output may stay open after the shell exited. What the command wrote before it
 * exited is already in the pipes and is read within a few turns of the event loop; the rest of
 * the second lets a short-lived background job finish writing, even on a loaded machine. Longer
 * would hold the slot for nothing: a process still holding the output after a second is one the
 * command did not wait for.
 */
const OUTPUT_GRACE = 1000;

/** How one attempt ended. */
interface Attempt {
  start: number;
  end: number;
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Why it failed, when it did. */
  error: string | null;
  cancelled: boolean;
}

/** A command that failed (exited non-zero, was killed, timed out): what the limiter may retry. */
class CommandFailed extends Error {
  readonly attempt: Attempt;

  constructor(attempt: Attempt) {
    super(attempt.error ?? 'failed');
    this.attempt = attempt;
  }
}

/** Keeps the first `cap` bytes of a stream and counts the rest. */
class Capture {
  readonly #cap: number;
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #total = 0;

  constructor(cap: number) {
    this.#cap = cap;
  }

  readonly add = (chunk: Buffer): void => {
    this.#total += chunk.length;
    const room = this.#cap - this.#kept;
    if (room <= 0) return;
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.#chunks.push(part);
    this.#kept += part.length;
  };

  text(): string {
    const text = Buffer.concat(this.#chunks, this.#kept).toString('utf8');
    if (this.#total <= this.#kept) return text;
    return `${text}\n[sluice: output truncated: ${this.#total} bytes, the first ${this.#kept} kept]`;
  }
}

/** `text` with `note` on a line of its own at the end. */
function withNote(text: string, note: string): string {
  return text === '' || text.endsWith('\n') ? `${text}${note}` : `${text}\n${note}`;
}

/** Sends `signal` to process group `pid`; false if there is no such group any more. */
function killGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

export class ExecCommand implements Command<ExecTask> {
  readonly #settings: ExecSettings;
  readonly #io: CliIo;
  readonly #limiter: Limiter;
  readonly #controller = new AbortController();
  /** Process groups running now, by leader pid. */
  readonly #groups = new Set<number>();

  constructor(settings: ExecSettings, io: CliIo) {
    this.#settings = settings;
    this.#io = io;
    // Each attempt is a start of the limiter's task: a retry waits for the concurrency and the
    // rates as the first attempt does, after a backoff the limiter's retry driver decides.
    this.#limiter = new Limiter({
      concurrency: settings.concurrency,
      ...(settings.rates.length > 0 ? { rate: settings.rates } : {}),
      retry: {
        retries: settings.retries,
        minDelay: 200,
        maxDelay: 10_000,
        retryIf: (error) => error instanceof CommandFailed && !error.attempt.cancelled,
      },
    });
  }

  parse(line: string): ExecTask {
    return { cmd: line };
  }

  matches(record: Record<string, unknown>, task: ExecTask): boolean {
    return record.cmd === task.cmd;
  }

  resumed(record: Record<string, unknown>, raw: string, index: number): Outcome {
    return {
      index,
      line: raw,
      ok: true,
      target: typeof record.cmd === 'string' ? record.cmd : '',
      status: typeof record.code === 'number' ? record.code : undefined,
      attempts: typeof record.attempts === 'number' ? record.attempts : 1,
      attemptStarts: [],
      base: 0,
      end: performance.now(),
      ms: typeof record.ms === 'number' ? record.ms : 0,
      retriedStatuses: [],
      tooMany: 0,
    };
  }

  notRun(task: ExecTask, index: number): Outcome {
    return this.#outcome(task, index, [], undefined, 'not run');
  }

  async run(task: ExecTask, index: number): Promise<Outcome> {
    const attempts: Attempt[] = [];
    let closed = false;
    try {
      // No signal here: aborting one would reject a running attempt before its process is
      // reaped. Stopping closes the limiter instead, which rejects only what waits (in line, or
      // backing off before a retry).
      await this.#limiter.schedule(async () => {
        const attempt = await this.#spawn(task.cmd);
        attempts.push(attempt);
        if (attempt.error !== null) throw new CommandFailed(attempt);
      });
    } catch (error) {
      closed = error instanceof ClosedError;
    }
    const last = attempts.at(-1);
    let skipped: 'cancelled' | 'not run' | undefined;
    if (last === undefined) skipped = 'not run';
    else if (last.cancelled || (closed && last.error !== null)) skipped = 'cancelled';
    return this.#outcome(task, index, attempts, last, skipped);
  }

  #outcome(
    task: ExecTask,
    index: number,
    attempts: Attempt[],
    last: Attempt | undefined,
    skipped: 'cancelled' | 'not run' | undefined,
  ): Outcome {
    const ok = last !== undefined && last.error === null && skipped === undefined;
    const error = skipped ?? last?.error ?? null;
    const ms = last === undefined ? 0 : last.end - last.start;
    const record = {
      index,
      cmd: task.cmd,
      code: last?.code ?? null,
      signal: last?.signal ?? null,
      ok,
      attempts: attempts.length,
      ms: Math.round(ms * 10) / 10,
      stdout: last?.stdout ?? '',
      stderr: last?.stderr ?? '',
      error,
    };
    const retriedStatuses: number[] = [];
    for (let i = 0; i < attempts.length - 1; i++) {
      const code = attempts[i]!.code;
      if (code !== null) retriedStatuses.push(code);
    }
    return {
      index,
      line: JSON.stringify(record),
      ok,
      target: task.cmd,
      status: last?.code ?? undefined,
      attempts: attempts.length,
      attemptStarts: attempts.map((a) => a.start),
      base: 0,
      end: last?.end ?? performance.now(),
      ms,
      error: error ?? undefined,
      retriedStatuses,
      skipped,
      tooMany: 0,
    };
  }

  /** Runs one attempt; resolves when the process group's stdio has closed. Never rejects. */
  #spawn(cmd: string): Promise<Attempt> {
    const { timeoutMs, maxOutput } = this.#settings;
    const signal = this.#controller.signal;
    return new Promise<Attempt>((resolve) => {
      const start = performance.now();
      const stdout = new Capture(maxOutput);
      const stderr = new Capture(maxOutput);
      let timedOut = false;
      let cancelled = false;
      let killTimer: Cancel | undefined;
      let timeoutTimer: Cancel | undefined;
      let outputTimer: Cancel | undefined;
      let outputAbandoned = false;
      let settled = false;
      const child = spawn('/bin/sh', ['-c', cmd], {
        cwd: this.#io.cwd,
        env: this.#io.env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const pid = child.pid;
      const terminate = (): void => {
        if (pid === undefined || killTimer !== undefined) return;
        killGroup(pid, 'SIGTERM');
        killTimer = later(KILL_GRACE, () => {
          killGroup(pid, 'SIGKILL');
        });
      };
      const onAbort = (): void => {
        cancelled = true;
        terminate();
      };
      const finish = (code: number | null, exitSignal: string | null, failure?: Error): void => {
        if (settled) return;
        settled = true;
        timeoutTimer?.();
        killTimer?.();
        outputTimer?.();
        signal.removeEventListener('abort', onAbort);
        if (pid !== undefined) {
          this.#groups.delete(pid);
          // Whatever the timed-out or cancelled command started dies with it, and so does what
          // an exited command left holding its output.
          if (timedOut || cancelled || outputAbandoned) killGroup(pid, 'SIGKILL');
        }
        let error: string | null = null;
        if (failure !== undefined) error = `cannot run the command: ${failure.message}`;
        else if (cancelled) error = 'cancelled';
        else if (timedOut) error = `timed out after ${timeoutMs}ms`;
        else if (exitSignal !== null) error = `killed by ${exitSignal}`;
        else if (code !== 0) error = `exit code ${code}`;
        resolve({
          start,
          end: performance.now(),
          code,
          signal: exitSignal,
          stdout: stdout.text(),
          stderr: outputAbandoned
            ? withNote(
                stderr.text(),
                `[sluice: the output was still open ${OUTPUT_GRACE}ms after the command exited: stopped reading it, and killed what was left of its process group]`,
              )
            : stderr.text(),
          error,
          cancelled,
        });
      };
      child.on('error', (error) => {
        finish(null, null, error);
      });
      child.on('close', (code, exitSignal) => {
        finish(code, exitSignal);
      });
      child.on('exit', (code, exitSignal) => {
        // The command is over: a timeout can no longer apply. Its output gets a grace to close.
        timeoutTimer?.();
        outputTimer = later(OUTPUT_GRACE, () => {
          outputAbandoned = true;
          child.stdout.destroy();
          child.stderr.destroy();
          finish(code, exitSignal);
        });
      });
      if (pid === undefined) return; // spawning failed: 'error' follows
      this.#groups.add(pid);
      child.stdout.on('data', stdout.add);
      child.stderr.on('data', stderr.add);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timeoutTimer = later(timeoutMs, () => {
          timedOut = true;
          terminate();
        });
      }
    });
  }

  inFlight(): number {
    return this.#limiter.activeCount;
  }

  stop(): void {
    // Rejects what waits in line (never started: "not run"); what runs goes on.
    void this.#limiter.close();
  }

  cancel(): void {
    void this.#limiter.close();
    this.#controller.abort(new Error('cancelled'));
  }

  kill(): void {
    this.cancel();
    for (const pid of this.#groups) killGroup(pid, 'SIGKILL');
  }

  async close(): Promise<void> {
    await this.#limiter.close();
  }
}
