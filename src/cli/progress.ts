/**
 * Progress on stderr: on a terminal, one live line redrawn in place at most ten times a second;
 * otherwise a plain line every few seconds (a log must not fill with redraws); with `--quiet`,
 * nothing. Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or
 * TERM is "dumb"; without colour, no escape codes of any kind.
 */
import type { CliIo } from './io.ts';
import { every, type Cancel } from '../_clock.ts';

/** The counters a run keeps and the progress line shows. */
export interface RunStats {
  /** Lines with a record, whatever it says. */
  records: number;
  /** Lines that ran and failed (not those cancelled or not run). */
  failed: number;
  /** Lines that were running when the run was stopped. */
  cancelled: number;
  /** Lines that never started. */
  notRun: number;
  /** Lines whose record was copied from `--resume`. */
  resumed: number;
  /** Responses with status 429, retried ones included. */
  tooMany: number;
  /** Non-empty input lines, once known. */
  total: number | undefined;
}

/** A new run's counters. */
export function newStats(): RunStats {
  return {
    records: 0,
    failed: 0,
    cancelled: 0,
    notRun: 0,
    resumed: 0,
    tooMany: 0,
    total: undefined,
  };
}

/** Lines that ran to their end, ok or failed: what the rate counts. */
function ran(stats: RunStats): number {
  return stats.records - stats.cancelled - stats.notRun - stats.resumed;
}

export interface ProgressOptions {
  /** 'fetch' or 'exec': names the unit ("req/s", "jobs/s"). */
  command: 'fetch' | 'exec';
  quiet: boolean;
  /** Milliseconds between plain lines when stderr is not a terminal. @default 5000 */
  plainInterval?: number;
  /** Work in flight now. */
  inFlight: () => number;
  /**
   * Whether the jobs are typed on a terminal: then it says once how to end them, and draws no
   * line over what is typed (only the summary, at the end).
   */
  typed?: boolean;
}

const LIVE_INTERVAL = 100;
const BAR = 20;

export class Progress {
  readonly #io: CliIo;
  readonly #stats: RunStats;
  readonly #options: ProgressOptions;
  readonly #live: boolean;
  readonly #color: boolean;
  readonly #unit: string;
  readonly #started = performance.now();
  /** Recent (time, done) samples: the rate is measured over the last few seconds. */
  readonly #samples: [number, number][] = [];
  #timer: Cancel | undefined;
  #lastWidth = 0;

  constructor(io: CliIo, stats: RunStats, options: ProgressOptions) {
    this.#io = io;
    this.#stats = stats;
    this.#options = options;
    this.#live = io.stderrIsTTY;
    this.#color = io.stderrIsTTY && !io.env.NO_COLOR && io.env.TERM !== 'dumb';
    this.#unit = options.command === 'fetch' ? 'req/s' : 'jobs/s';
  }

  start(): void {
    if (this.#options.quiet) return;
    if (this.#options.typed === true) {
      this.#io.stderr.write(
        `sluice ${this.#options.command}: reading jobs from stdin; end with Ctrl-D\n`,
      );
      return;
    }
    const interval = this.#live ? LIVE_INTERVAL : (this.#options.plainInterval ?? 5000);
    this.#timer = every(interval, this.#tick, true);
  }

  /** Stops, and prints the summary (unless quiet), with how the run ended if it ended early. */
  stop(ending?: string): void {
    this.#timer?.();
    this.#timer = undefined;
    if (this.#options.quiet) return;
    const summary = this.summary(ending);
    if (this.#live) this.#draw(summary, true);
    else this.#io.stderr.write(`${summary}\n`);
  }

  /** The line shown while running: how far through the input, and how fast it runs. */
  line(): string {
    const now = performance.now();
    const { records: done, failed, tooMany, total } = this.#stats;
    const rate = this.#rate(now, ran(this.#stats));
    const parts: string[] = [];
    if (total !== undefined && this.#live) parts.push(this.#bar(done / Math.max(total, 1)));
    parts.push(total === undefined ? `${done} done` : `${done}/${total} done`);
    parts.push(this.#paint(`${failed} failed`, failed > 0 ? 31 : 0));
    parts.push(`${this.#options.inFlight()} in flight`);
    parts.push(`${formatRate(rate)} ${this.#unit}`);
    if (this.#options.command === 'fetch')
      parts.push(this.#paint(`${tooMany} 429s`, tooMany > 0 ? 33 : 0));
    if (total !== undefined && rate > 0)
      parts.push(`ETA ${formatDuration(((total - done) / rate) * 1000)}`);
    const text = parts.join(this.#live ? '  ' : ', ');
    return this.#live ? text : `sluice ${this.#options.command}: ${text}`;
  }

  /**
   * The last line: what ran to its end ("done", of which some failed), what was cancelled, not
   * run or copied from `--resume`, in how long, and the rate of what ran.
   */
  summary(ending?: string): string {
    const { failed, cancelled, notRun, resumed, tooMany } = this.#stats;
    const done = ran(this.#stats);
    const elapsed = performance.now() - this.#started;
    const rate = elapsed > 0 ? (done * 1000) / elapsed : 0;
    const parts = [`${done} done`, failed > 0 ? this.#paint(`${failed} failed`, 31) : '0 failed'];
    if (cancelled > 0) parts.push(this.#paint(`${cancelled} cancelled`, 33));
    if (notRun > 0) parts.push(`${notRun} not run`);
    if (resumed > 0) parts.push(`${resumed} resumed`);
    if (this.#options.command === 'fetch' && tooMany > 0) parts.push(`${tooMany} 429s`);
    const end = ending === undefined ? '' : this.#paint(` (${ending})`, 33);
    return `sluice ${this.#options.command}: ${parts.join(', ')} in ${formatDuration(elapsed)} (${formatRate(rate)} ${this.#unit})${end}`;
  }

  readonly #tick = (): void => {
    const line = this.line();
    if (this.#live) this.#draw(line, false);
    else this.#io.stderr.write(`${line}\n`);
  };

  /**
   * Redraws the live line in place; `last` ends it with a newline, and is written whole (nothing
   * redraws it: it may wrap).
   */
  #draw(line: string, last: boolean): void {
    // A terminal may report 0 columns (a serial console, some emulators as they start).
    const reported = (this.#io.stderr as { columns?: number }).columns;
    const columns = reported !== undefined && reported >= 2 ? reported : 80;
    // A line longer than the terminal wraps, and `\r` then redraws only its last row.
    // eslint-disable-next-line no-control-regex -- the SGR sequences #paint() wrote
    const visible = this.#color ? line.replace(/\x1b\[[0-9;]*m/g, '') : line;
    let text = line;
    if (!last && visible.length > columns - 1) text = visible.slice(0, columns - 1);
    const width = Math.min(visible.length, columns - 1);
    let clear = '';
    if (this.#color) clear = '\x1b[K';
    else if (width < this.#lastWidth) clear = ' '.repeat(this.#lastWidth - width);
    this.#lastWidth = width;
    this.#io.stderr.write(`\r${text}${clear}${last ? '\n' : ''}`);
  }

  #bar(fraction: number): string {
    const filled = Math.max(0, Math.min(BAR, Math.round(fraction * BAR)));
    return `[${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}]`;
  }

  #paint(text: string, code: number): string {
    return this.#color && code !== 0 ? `\x1b[${code}m${text}\x1b[0m` : text;
  }

  /** Lines run per second over the last ~5 s (since the start, before that). */
  #rate(now: number, done: number): number {
    const samples = this.#samples;
    samples.push([now, done]);
    while (samples.length > 2 && now - samples[0]![0] > 5000) samples.shift();
    const [then, before] = samples.length > 1 ? samples[0]! : [this.#started, 0];
    return now > then ? ((done - before) * 1000) / (now - then) : 0;
  }
}

function formatRate(rate: number): string {
  return rate >= 100 ? String(Math.round(rate)) : rate.toFixed(1);
}

/** "850ms", "12.3s", "4m05s", "2h03m". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const total = Math.round(s);
  if (total < 3600) return `${Math.floor(total / 60)}m${String(total % 60).padStart(2, '0')}s`;
  return `${Math.floor(total / 3600)}h${String(Math.floor((total % 3600) / 60)).padStart(2, '0')}m`;
}
