/**
 * What `sluice fetch` and `sluice exec` share around their loop: opening the input, the
 * `--resume` file, the output and the report (a file that cannot be used is a usage error, found
 * before anything runs), then the run, its exit code, and the report written at the end.
 */
import { constants } from 'node:fs';
import { access, realpath, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileProblem, openInput } from './input.ts';
import type { CliIo } from './io.ts';
import { Output } from './output.ts';
import { newStats, Progress } from './progress.ts';
import type { ReportSink, RunConfig } from './report-data.ts';
import { NotRecordsError, Previous } from './resume.ts';
import { Run, type Command } from './run.ts';

/** A problem with what the command was given (a file that cannot be read, …): exit code 2. */
export class UsageError extends Error {}

/** What `fetch` and `exec` share: where lines come from and records go, and how. */
export interface LineSettings {
  file: string | undefined;
  output: string | undefined;
  ordered: boolean;
  quiet: boolean;
  resume: string | undefined;
  report: string | undefined;
}

/**
 * Opens the input, the `--resume` file, the output and the report, then runs `makeCommand()`'s
 * command over the lines. Returns the exit code: 0 all ok, 1 some failed, 130 interrupted;
 * throws a `UsageError` when a file cannot be used (before anything runs).
 */
export async function runLines<T>(
  io: CliIo,
  settings: LineSettings,
  config: RunConfig,
  window: number,
  makeCommand: () => Command<T>,
): Promise<number> {
  // The total only shows on the progress line: with --quiet the file is read once.
  const input = await openInput(settings.file, io, !settings.quiet).catch((error: unknown) => {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  });
  let resume: Previous | undefined;
  try {
    if (settings.resume !== undefined) {
      const path = resolve(io.cwd, settings.resume);
      resume = await Previous.load(path).catch((error: unknown) => {
        if (error instanceof NotRecordsError)
          throw new UsageError(`--resume ${settings.resume}: ${error.message}`);
        throw new UsageError(`cannot read ${settings.resume}: ${fileProblem(error)}`);
      });
    }
    await refuseClashes(io, settings);
    let report: ReportSink | undefined;
    let reportPath: string | undefined;
    if (settings.report !== undefined) {
      reportPath = resolve(io.cwd, settings.report);
      await access(dirname(reportPath), constants.W_OK).catch((error: unknown) => {
        throw new UsageError(`cannot write ${settings.report}: ${fileProblem(error)}`);
      });
      const { createReport } = await import('./report.ts');
      report = createReport(config, Date.now());
    }
    const outputPath = settings.output === undefined ? undefined : resolve(io.cwd, settings.output);
    const replace =
      outputPath !== undefined &&
      settings.resume !== undefined &&
      (await sameFile(outputPath, resolve(io.cwd, settings.resume)));
    const output = await Output.open(outputPath, io, replace).catch((error: unknown) => {
      throw new UsageError(`cannot write ${settings.output}: ${fileProblem(error)}`);
    });
    const command = makeCommand();
    const stats = newStats();
    const progress = new Progress(io, stats, {
      command: config.command,
      quiet: settings.quiet,
      plainInterval: nonNegative(io.env.SLUICE_PROGRESS_INTERVAL) ?? 5000,
      inFlight: () => command.inFlight(),
      typed: (settings.file === undefined || settings.file === '-') && io.stdinIsTTY === true,
    });
    const started = performance.now();
    const result = await new Run(command, {
      io,
      input,
      output,
      ordered: settings.ordered,
      window,
      resume,
      progress,
      stats,
      report,
      graceMs: nonNegative(io.env.SLUICE_GRACE_MS) ?? 2000,
    }).run();
    if (result.killed) return 130;
    // A closed output ends the run as SIGPIPE ends a filter: 128 + 13, with nothing to say.
    let code = result.outputClosed ? 141 : result.interrupted ? 130 : result.failed > 0 ? 1 : 0;
    if (result.error !== undefined) {
      io.stderr.write(`sluice: ${result.error}\n`);
      if (code === 0) code = 1;
    }
    if (report !== undefined && reportPath !== undefined) {
      report.finish(performance.now() - started, result.interrupted);
      try {
        await writeFile(reportPath, report.render());
      } catch (error) {
        io.stderr.write(`sluice: cannot write ${settings.report}: ${fileProblem(error)}\n`);
        if (code === 0) code = 1;
      }
    }
    return code;
  } finally {
    await resume?.close();
  }
}

/** A number >= 0 from the environment, or undefined. */
function nonNegative(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const n = Number(value);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/**
 * Refuses a run that would write over a file it reads, or put two things in one file: the output
 * or the report over the input (emptied before it is read), the report over the output or the
 * `--resume` file. The output may be the `--resume` file: it is replaced once the run has read it.
 */
async function refuseClashes(io: CliIo, settings: LineSettings): Promise<void> {
  const input = settings.file === '-' ? undefined : settings.file;
  const pairs: [string | undefined, string, string | undefined, string, string][] = [
    [settings.output, 'output', input, 'input', 'it would be emptied before it is read'],
    [settings.report, 'report', input, 'input', 'it would be lost'],
    [settings.report, 'report', settings.output, 'output', 'the records would be lost'],
    [settings.report, 'report', settings.resume, '--resume', 'the previous records would be lost'],
  ];
  for (const [written, what, other, otherName, why] of pairs) {
    if (written === undefined || other === undefined) continue;
    if (await sameFile(resolve(io.cwd, written), resolve(io.cwd, other)))
      throw new UsageError(`the ${what} ${written} is the ${otherName} file (${why})`);
  }
}

/**
 * Whether two paths name the same regular file (by device and inode: whatever the path, links
 * included), or the same place for a file that neither has made yet. A file that exists is never
 * one that does not; special files (a terminal, /dev/null) are not compared.
 */
async function sameFile(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([
    stat(a).catch(() => undefined),
    stat(b).catch(() => undefined),
  ]);
  if (x !== undefined && y !== undefined)
    return x.isFile() && y.isFile() && x.dev === y.dev && x.ino === y.ino;
  if (x !== undefined || y !== undefined) return false;
  const place = async (path: string): Promise<string> =>
    join(await realpath(dirname(path)).catch(() => dirname(path)), basename(path));
  return (await place(a)) === (await place(b));
}
