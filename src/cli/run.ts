/**
 * The loop under `sluice fetch` and `sluice exec`: reads input lines lazily, runs each through the
 * command within a bounded window, and writes one record per line, in input order (`--ordered`)
 * or as they finish.
 *
 * Invariants:
 * - every non-empty input line gets exactly one record: run, copied from `--resume`, cancelled,
 *   or "not run"; blank lines are not requests and get none;
 * - at most `window` lines are running, and (ordered) at most `2 × window` lines are between
 *   admission and their record, so memory is bounded whatever the input's length;
 * - nothing is admitted while the output pushes back.
 *
 * Interrupts: the first stops admitting (and the command refuses what waits in its own queues:
 * "not run"), lets what runs finish for a grace period, then cancels it ("cancelled"); the rest
 * of the input is then read and a "not run" record written for each line. The second makes
 * `run()` resolve at once, nothing flushed.
 */
import { Deque } from '../_deque.ts';
import { isBlank, type Input } from './input.ts';
import type { CliIo } from './io.ts';
import type { Output } from './output.ts';
import type { Progress, RunStats } from './progress.ts';
import type { ReportSink, RunEntry } from './report-data.ts';
import type { Previous } from './resume.ts';

/** How one line ended. Times are `performance.now()` readings. */
export interface Outcome {
  index: number;
  /** The record, as the line of JSON to write. */
  line: string;
  ok: boolean;
  /** What the line asked for (a URL, a command), for the report. */
  target: string;
  status?: number | undefined;
  attempts: number;
  /** When each attempt started, in milliseconds after `base`. */
  attemptStarts: readonly number[];
  base: number;
  end: number;
  ms: number;
  bytes?: number | undefined;
  error?: string | undefined;
  retriedStatuses: readonly number[];
  skipped?: 'cancelled' | 'not run' | undefined;
  /** Responses with status 429 among the attempts. */
  tooMany: number;
}

/** What `fetch` and `exec` do with a line. */
export interface Command<T> {
  /** Reads a line. Never throws: a bad line becomes a task whose run reports the error. */
  parse(line: string, index: number): T;
  /** Runs the task; never rejects (failures are outcomes). */
  run(task: T, index: number): Promise<Outcome>;
  /** The outcome of a task that was never started. */
  notRun(task: T, index: number): Outcome;
  /** Whether a previous ok record stands for this task (same line, same request). */
  matches(record: Record<string, unknown>, task: T): boolean;
  /** The outcome for a record copied from `--resume`. */
  resumed(record: Record<string, unknown>, raw: string, index: number): Outcome;
  /** Work in flight now (for the progress line). */
  inFlight(): number;
  /** Refuses what waits to start (it ends as "not run"); what runs goes on. */
  stop(): void;
  /** Cancels everything: what runs ends as "cancelled", what waits as "not run". */
  cancel(): void;
  /** Ends everything now (the second Ctrl-C). */
  kill(): void;
  close(): Promise<void>;
}

export interface RunOptions {
  io: CliIo;
  input: Input;
  output: Output;
  ordered: boolean;
  /** Lines running at once, at most. */
  window: number;
  resume: Previous | undefined;
  progress: Progress;
  stats: RunStats;
  report: ReportSink | undefined;
  /** Milliseconds what runs may take to finish after the first interrupt. */
  graceMs: number;
}

/** How a run ended. */
export interface RunResult {
  interrupted: boolean;
  /** A second interrupt: nothing was flushed. */
  killed: boolean;
  failed: number;
  /** The output or the input failed mid-run. */
  error: string | undefined;
}

export class Run<T> {
  readonly #command: Command<T>;
  readonly #o: RunOptions;
  readonly #stats: RunStats;
  readonly #started = performance.now();
  /** Ordered: indexes admitted and not yet written, oldest first. */
  readonly #order = new Deque<number>();
  /** Ordered: finished outcomes waiting for earlier ones. */
  readonly #finished = new Map<number, Outcome>();
  #active = 0;
  #wake: (() => void) | undefined;
  #interrupted = false;
  #killed = false;
  #grace: ReturnType<typeof setTimeout> | undefined;
  #error: string | undefined;
  #kill: ((result: RunResult) => void) | undefined;

  constructor(command: Command<T>, options: RunOptions) {
    this.#command = command;
    this.#o = options;
    this.#stats = options.stats;
    options.output.onReady = this.#notify;
  }

  /** Runs to the end, or until a second interrupt. */
  async run(): Promise<RunResult> {
    const unsubscribe = this.#o.io.onInterrupt(this.#onInterrupt);
    void this.#o.input.total.then((total) => {
      this.#stats.total = total;
    });
    this.#o.progress.start();
    const killed = new Promise<RunResult>((resolve) => (this.#kill = resolve));
    try {
      return await Promise.race([this.#finish(), killed]);
    } finally {
      unsubscribe();
      if (this.#grace !== undefined) clearTimeout(this.#grace);
    }
  }

  async #finish(): Promise<RunResult> {
    try {
      await this.#loop();
    } catch (error) {
      this.#error = `cannot read ${this.#o.input.name}: ${(error as Error).message}`;
      this.#command.stop();
      this.#command.cancel();
    }
    await this.#idle();
    if (this.#killed) return this.#result();
    this.#o.progress.stop(this.#interrupted);
    try {
      await this.#o.output.close();
    } catch (error) {
      this.#error ??= `cannot write the output: ${(error as Error).message}`;
    }
    await this.#command.close().catch(() => undefined); // the records are out: nothing is lost
    return this.#result();
  }

  #result(): RunResult {
    const failure = this.#o.output.failure;
    return {
      interrupted: this.#interrupted,
      killed: this.#killed,
      failed: this.#stats.failed,
      error:
        this.#error ??
        (failure === undefined ? undefined : `cannot write the output: ${failure.message}`),
    };
  }

  async #loop(): Promise<void> {
    const command = this.#command;
    const output = this.#o.output;
    const resume = this.#o.resume;
    const window = this.#o.window;
    const ordered = this.#o.ordered;
    let index = 0;
    for await (const batch of this.#o.input.batches) {
      for (const line of batch) {
        const at = index++;
        if (isBlank(line)) continue;
        if (this.#over()) return;
        const task = command.parse(line, at);
        const previous = resume?.take(at);
        if (previous !== undefined) {
          const { raw, record } = await previous;
          if (command.matches(record, task)) {
            while (output.blocked) await this.#sleep();
            this.#admit(at);
            this.#done(command.resumed(record, raw, at));
            continue;
          }
        }
        while (
          !this.#interrupted &&
          (output.blocked ||
            this.#active >= window ||
            (ordered && this.#active + this.#finished.size >= 2 * window))
        ) {
          await this.#sleep();
        }
        if (this.#over()) return;
        if (this.#interrupted) {
          // Not run: after what ran has ended, so that cancelled records come first.
          await this.#idle();
          while (output.blocked) await this.#sleep();
          if (this.#over()) return;
          this.#admit(at);
          this.#done(command.notRun(task, at));
          continue;
        }
        this.#admit(at);
        this.#active++;
        command.run(task, at).then(this.#onDone, this.#onCrash);
      }
    }
  }

  /** Whether to stop reading: a second interrupt, or an output that failed. */
  #over(): boolean {
    return this.#killed || this.#o.output.failure !== undefined;
  }

  #admit(index: number): void {
    if (this.#o.ordered) this.#order.push(index);
  }

  readonly #onDone = (outcome: Outcome): void => {
    this.#active--;
    this.#done(outcome);
    this.#notify();
  };

  /** A command broke its promise never to reject: the run cannot account for the line. */
  readonly #onCrash = (error: unknown): void => {
    this.#active--;
    this.#error ??= `internal error: ${error instanceof Error ? error.message : String(error)}`;
    this.#command.stop();
    this.#command.cancel();
    this.#notify();
  };

  #done(outcome: Outcome): void {
    if (this.#killed) return;
    const stats = this.#stats;
    stats.done++;
    if (!outcome.ok) stats.failed++;
    stats.tooMany += outcome.tooMany;
    if (!this.#o.ordered) {
      this.#write(outcome);
      return;
    }
    const order = this.#order;
    if (order.peek() !== outcome.index) {
      this.#finished.set(outcome.index, outcome);
      return;
    }
    order.shift();
    this.#write(outcome);
    const finished = this.#finished;
    while (order.size > 0) {
      const next = finished.get(order.peek()!);
      if (next === undefined) break;
      finished.delete(next.index);
      order.shift();
      this.#write(next);
    }
  }

  #write(outcome: Outcome): void {
    this.#o.output.write(outcome.line);
    this.#o.report?.add(this.#entry(outcome));
  }

  #entry(outcome: Outcome): RunEntry {
    const offset = outcome.base - this.#started;
    const starts = outcome.attemptStarts.map((t) => t + offset);
    const entry: RunEntry = {
      index: outcome.index,
      target: outcome.target,
      ok: outcome.ok,
      attempts: outcome.attempts,
      attemptStarts: starts,
      end: outcome.end - this.#started,
      ms: outcome.ms,
      retriedStatuses: [...outcome.retriedStatuses],
    };
    if (starts.length > 0) entry.start = starts[0];
    if (outcome.status !== undefined) entry.status = outcome.status;
    if (outcome.bytes !== undefined) entry.bytes = outcome.bytes;
    if (outcome.error !== undefined) entry.error = outcome.error;
    if (outcome.skipped !== undefined) entry.skipped = outcome.skipped;
    return entry;
  }

  /** Waits until nothing runs. */
  async #idle(): Promise<void> {
    while (this.#active > 0 && !this.#killed) await this.#sleep();
    if (this.#grace !== undefined) {
      clearTimeout(this.#grace);
      this.#grace = undefined;
    }
  }

  #sleep(): Promise<void> {
    return new Promise<void>((resolve) => (this.#wake = resolve));
  }

  readonly #notify = (): void => {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  };

  readonly #onInterrupt = (): void => {
    if (!this.#interrupted) {
      this.#interrupted = true;
      this.#command.stop();
      this.#grace = setTimeout(() => {
        this.#grace = undefined;
        this.#command.cancel();
      }, this.#o.graceMs);
      this.#notify();
      return;
    }
    if (this.#killed) return;
    this.#killed = true;
    this.#o.progress.stop(true);
    this.#command.kill();
    this.#notify();
    this.#kill?.(this.#result());
  };
}
