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
 *
 * An output that fails (its reader gone: `| head -1`) can take no more records: nothing more is
 * started, what runs is cancelled, and the rest of the input is left unread.
 *
 * Its size (about 430 lines): the loop, its window, its interrupts and its ordering share their
 * state; what a line means is the command's (`fetch.ts`, `exec.ts`).
 */
import { isBlank, type Input } from './input.ts';
import type { CliIo } from './io.ts';
import type { Output } from './output.ts';
import type { Progress, RunStats } from './progress.ts';
import type { ReportSink, RunEntry } from './report-data.ts';
import type { Previous } from './resume.ts';
import { later, type Cancel } from '../_clock.ts';

/** How one line ended. Times are `performance.now()` readings. */
export interface Outcome {
  index: number;
  /** The record, as the line of JSON to write (as UTF-8 bytes when it holds a body). */
  line: string | Buffer;
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
  /**
   * Runs the task and calls `done` once with its outcome, perhaps before returning: what `run()`
   * does, without a promise per line, for a command that can. Never throws.
   */
  start?(task: T, index: number, done: (outcome: Outcome) => void): void;
  /** The outcome of a task that was never started. */
  notRun(task: T, index: number): Outcome;
  /** Whether a previous ok record stands for this task (same line, same request). */
  matches(record: Record<string, unknown>, task: T): boolean;
  /** The outcome for a record copied from `--resume`. */
  resumed(record: Record<string, unknown>, raw: string, index: number): Outcome;
  /** Work in flight now (for the progress line). */
  inFlight(): number;
  /** For a limit that adapts: `listener` hears it (all origins together) as it changes. */
  watchLimit?(listener: (limit: number) => void): void;
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
  /** The output's reader went away (EPIPE): the run ended early, as a filter's does. */
  outputClosed: boolean;
  /** Lines that are not ok: failed, cancelled or not run. */
  failed: number;
  /** The output or the input failed mid-run. */
  error: string | undefined;
}

export class Run<T> {
  readonly #command: Command<T>;
  readonly #o: RunOptions;
  readonly #stats: RunStats;
  readonly #started = performance.now();
  /** Ordered: the lines admitted and not yet written, and the outcomes waiting for earlier ones. */
  readonly #order = new InOrder();
  #active = 0;
  #wake: (() => void) | undefined;
  #interrupted = false;
  #killed = false;
  #grace: Cancel | undefined;
  #error: string | undefined;
  #kill: ((result: RunResult) => void) | undefined;

  constructor(command: Command<T>, options: RunOptions) {
    this.#command = command;
    this.#o = options;
    this.#stats = options.stats;
    options.output.onReady = this.#notify;
    options.output.onFailed = this.#onOutputFailed;
    const report = options.report;
    if (report?.limit !== undefined) {
      command.watchLimit?.((limit) => {
        report.limit?.(performance.now() - this.#started, limit);
      });
    }
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
      this.#grace?.();
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
    this.#o.progress.stop(this.#ending());
    try {
      await this.#o.output.close();
    } catch (error) {
      this.#error ??= `cannot write the output: ${(error as Error).message}`;
    }
    await this.#command.close().catch(() => undefined); // the records are out: nothing is lost
    return this.#result();
  }

  #result(): RunResult {
    const output = this.#o.output;
    const failure = output.closedByReader ? undefined : output.failure;
    return {
      interrupted: this.#interrupted,
      killed: this.#killed,
      outputClosed: output.closedByReader,
      failed: this.#stats.failed + this.#stats.cancelled + this.#stats.notRun,
      error:
        this.#error ??
        (failure === undefined ? undefined : `cannot write the output: ${failure.message}`),
    };
  }

  /** What the summary says of how the run ended, if it ended early. */
  #ending(): 'interrupted' | 'output closed' | undefined {
    if (this.#o.output.closedByReader) return 'output closed';
    return this.#interrupted ? 'interrupted' : undefined;
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
            this.#stats.resumed++;
            this.#done(command.resumed(record, raw, at));
            continue;
          }
        }
        while (
          !this.#interrupted &&
          (output.blocked ||
            this.#active >= window ||
            (ordered && this.#active + this.#order.waiting >= 2 * window))
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
        if (command.start !== undefined) command.start(task, at, this.#onOutcome);
        else command.run(task, at).then(this.#onDone, this.#onCrash);
      }
    }
  }

  /** Whether to stop reading: a second interrupt, or an output that failed. */
  #over(): boolean {
    return this.#killed || this.#o.output.failure !== undefined;
  }

  #admit(index: number): void {
    if (this.#o.ordered) this.#order.admit(index);
  }

  readonly #onDone = (outcome: Outcome): void => {
    this.#active--;
    this.#done(outcome);
    this.#notify();
  };

  /**
   * `#onDone` for `Command.start()`, which may call it from deep inside the command (a response
   * handler): a failure here must not unwind into that code.
   */
  readonly #onOutcome = (outcome: Outcome): void => {
    try {
      this.#onDone(outcome);
    } catch (error) {
      this.#error ??= `internal error: ${error instanceof Error ? error.message : String(error)}`;
      this.#command.stop();
      this.#command.cancel();
      this.#notify();
    }
  };

  /**
   * No record can be written any more: nothing more is started, and what runs is cancelled (its
   * record could not be written either), so that the run ends now.
   */
  readonly #onOutputFailed = (): void => {
    this.#command.stop();
    this.#command.cancel();
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
    stats.records++;
    if (outcome.skipped === 'cancelled') stats.cancelled++;
    else if (outcome.skipped === 'not run') stats.notRun++;
    else if (!outcome.ok) stats.failed++;
    stats.tooMany += outcome.tooMany;
    if (!this.#o.ordered) {
      this.#write(outcome);
      return;
    }
    const order = this.#order;
    order.finish(outcome);
    for (let next = order.take(); next !== undefined; next = order.take()) this.#write(next);
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
    this.#grace?.();
    this.#grace = undefined;
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
      this.#grace = later(this.#o.graceMs, () => {
        this.#grace = undefined;
        this.#command.cancel();
      });
      this.#notify();
      return;
    }
    if (this.#killed) return;
    this.#killed = true;
    this.#o.progress.stop('interrupted');
    this.#command.kill();
    this.#notify();
    this.#kill?.(this.#result());
  };
}

/**
 * The lines admitted and not yet written, in input order, each with its outcome once it has one: a
 * ring of slots (not a Map from index to outcome, whose churn would keep dead tables, and the
 * outcomes in them, alive into the old generation; see `_signals.ts`).
 *
 * Invariants: indexes are admitted in increasing order; `take()` gives the outcomes in that order,
 * each once, and only while all before it have been given.
 */
class InOrder {
  #indexes: number[] = new Array<number>(16).fill(-1);
  #outcomes: (Outcome | undefined)[] = new Array<Outcome | undefined>(16).fill(undefined);
  #head = 0;
  #size = 0;
  /** Outcomes in the ring, waiting for an earlier line's. */
  waiting = 0;

  admit(index: number): void {
    if (this.#size === this.#indexes.length) this.#grow();
    const at = (this.#head + this.#size) & (this.#indexes.length - 1);
    this.#indexes[at] = index;
    this.#outcomes[at] = undefined;
    this.#size++;
  }

  /** Puts an admitted line's outcome in its slot (found by bisection: the indexes increase). */
  finish(outcome: Outcome): void {
    const mask = this.#indexes.length - 1;
    let low = 0;
    let high = this.#size - 1;
    while (low <= high) {
      const mid = (low + high) >>> 1;
      const index = this.#indexes[(this.#head + mid) & mask]!;
      if (index < outcome.index) low = mid + 1;
      else if (index > outcome.index) high = mid - 1;
      else {
        this.#outcomes[(this.#head + mid) & mask] = outcome;
        this.waiting++;
        return;
      }
    }
    throw new Error(`line ${outcome.index} finished without having been admitted`);
  }

  /** The oldest line's outcome, if it has one (then it leaves the ring). */
  take(): Outcome | undefined {
    if (this.#size === 0) return undefined;
    const head = this.#head;
    const outcome = this.#outcomes[head];
    if (outcome === undefined) return undefined;
    this.#outcomes[head] = undefined;
    this.#head = (head + 1) & (this.#indexes.length - 1);
    this.#size--;
    this.waiting--;
    return outcome;
  }

  #grow(): void {
    const capacity = this.#indexes.length;
    const indexes = new Array<number>(2 * capacity).fill(-1);
    const outcomes = new Array<Outcome | undefined>(2 * capacity).fill(undefined);
    for (let i = 0; i < this.#size; i++) {
      const at = (this.#head + i) & (capacity - 1);
      indexes[i] = this.#indexes[at]!;
      outcomes[i] = this.#outcomes[at];
    }
    this.#indexes = indexes;
    this.#outcomes = outcomes;
    this.#head = 0;
  }
}
