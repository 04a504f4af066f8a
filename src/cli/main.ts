/**
 * `sluice`: argv to options to one run, and an exit code. Everything it touches of the outside
 * world comes in through `CliIo`, so tests run it in-process; `bin.ts` passes the real ones.
 *
 * Exit codes: 0 every line ok, 1 some failed, 2 a usage error (a bad option, a file that cannot
 * be used), 130 interrupted, 141 the output's reader went away (`| head -1`): 128 + SIGPIPE, what
 * a shell reports for a filter that SIGPIPE ended, so that `set -o pipefail` sees a run that did
 * not finish, while a plain pipeline's status stays that of its last command.
 */
import { constants } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { parseDuration, parseRate } from '../_parse.ts';
import type { AdaptiveAlgorithm } from '../adaptive.ts';
import { BAD_VALUE, forbiddenMethod } from '../http/_cli.ts';
import { ExecCommand, type ExecSettings } from './exec.ts';
import { FetchCommand, type FetchSettings } from './fetch.ts';
import type { CliIo } from './io.ts';
import type { RunConfig } from './report-data.ts';
import { runLines, UsageError, type LineSettings } from './lines.ts';
import { checkName, redisUrl } from './shared-url.ts';
import type { SharedRedis } from './shared.ts';

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const MAX_OUTPUT = 64 * 1024;

function integer(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`Expected an integer >= ${min}.`);
    }
    return n;
  };
}

/** `-c` of `sluice fetch`: a number, or `auto` (an adaptive limit per origin). */
function concurrencyOrAuto(value: string): number | 'auto' {
  if (value.trim() === 'auto') return 'auto';
  try {
    return integer(1)(value);
  } catch {
    throw new InvalidArgumentError('Expected an integer >= 1 or "auto".');
  }
}

function duration(value: string): number {
  const ms = /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : safeDuration(value);
  if (ms === undefined || !(ms > 0) || !Number.isFinite(ms)) {
    throw new InvalidArgumentError(
      'Expected a duration like "30s", "250ms" or a number of ms > 0.',
    );
  }
  return ms;
}

function safeDuration(value: string): number | undefined {
  try {
    return parseDuration('duration', value);
  } catch {
    return undefined;
  }
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A size in bytes: "8m", "64k", "8MiB", "2KB", "1.5k", or a number of bytes (k = 1024). */
function size(value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|(b))?\s*$/i.exec(value);
  const unit = (match?.[2] ?? match?.[3] ?? '').toLowerCase();
  const bytes = match === null ? NaN : Math.floor(Number(match[1]) * (UNITS[unit] ?? NaN));
  if (!(bytes >= 0 && bytes <= constants.MAX_LENGTH)) {
    throw new InvalidArgumentError(
      `Expected a size like "8m", "64k", "8MiB" or a number of bytes (k = 1024), up to ${constants.MAX_LENGTH}.`,
    );
  }
  return bytes;
}

function rate(value: string, previous: string[] | undefined): string[] {
  try {
    parseRate('rate', value);
  } catch {
    throw new InvalidArgumentError('Expected a rate like "10/s", "500/min" or "1/2s".');
  }
  return [...(previous ?? []), value.trim()];
}

function header(value: string, previous: [string, string][] | undefined): [string, string][] {
  const colon = value.indexOf(':');
  const name = colon === -1 ? '' : value.slice(0, colon).trim();
  if (!TOKEN.test(name)) throw new InvalidArgumentError('Expected "Name: value".');
  const text = value.slice(colon + 1).trim();
  // Found now, rather than in one error record for each line of the input.
  if (BAD_VALUE.test(text))
    throw new InvalidArgumentError(
      'Expected "Name: value" with no CR, LF, NUL or other control character in the value, and no character beyond U+00FF.',
    );
  return [...(previous ?? []), [name.toLowerCase(), text]];
}

function method(value: string): string {
  const upper = value.toUpperCase();
  if (!TOKEN.test(value) || forbiddenMethod(upper) !== undefined)
    throw new InvalidArgumentError(
      'Expected an HTTP method like GET or POST (not CONNECT, TRACE or TRACK).',
    );
  return upper;
}

function version(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** The options both commands take (`auto`: `-c` may be `auto`). */
function addLineOptions(
  command: Command,
  concurrency: number,
  concurrencyText?: string,
  auto = false,
): Command {
  return command
    .argument('[file]', 'input file, one job per line (blank lines skipped); - or none: stdin')
    .option('-o, --output <file>', 'write the records to FILE instead of stdout')
    .addOption(
      new Option(
        '-c, --concurrency <n>',
        auto
          ? "at most N in flight at once; auto: find each origin's limit from its latency, 429s, 503s and timeouts"
          : 'at most N in flight at once',
      )
        .argParser(auto ? concurrencyOrAuto : integer(1))
        .default(concurrency, concurrencyText),
    )
    .option('--rate <rate>', 'at most this many starts, e.g. 10/s (repeatable: all hold)', rate)
    .option('--ordered', 'write the records in input order (default: as they finish)')
    .option('--resume <file>', "a previous run's output: lines recorded ok there are not run again")
    .option('--report <file>', 'write an HTML report of the run to FILE')
    .option('-q, --quiet', 'no progress on stderr');
}

interface LineOptions {
  output?: string;
  concurrency: number | 'auto';
  rate?: string[];
  ordered?: boolean;
  resume?: string;
  report?: string;
  quiet?: boolean;
}

function lineSettings(file: string | undefined, options: LineOptions): LineSettings {
  return {
    file,
    output: options.output,
    ordered: options.ordered === true,
    quiet: options.quiet === true,
    resume: options.resume,
    report: options.report,
  };
}

interface FetchOptions extends LineOptions {
  maxConcurrency?: number;
  algorithm?: AdaptiveAlgorithm;
  perHostConcurrency?: number;
  perHostRate?: string[];
  retries: number;
  timeout: number;
  header?: [string, string][];
  method: string;
  body?: boolean;
  maxBody: number;
  compressed?: boolean;
  redis?: string;
  name?: string;
}

interface ExecOptions extends LineOptions {
  concurrency: number;
  retries: number;
  timeout?: number;
}

/** The default of --max-concurrency, the ceiling of -c auto. */
const MAX_CONCURRENCY = 256;

/**
 * `-c auto` and the options that only mean something with it, checked together: what `fetch`
 * adapts with, or undefined for a fixed `-c`. A misuse is a usage error (`fail`).
 */
function adaptiveOf(o: FetchOptions, fail: (message: string) => never): FetchSettings['adaptive'] {
  if (o.concurrency !== 'auto') {
    if (o.maxConcurrency !== undefined)
      fail('--max-concurrency is the ceiling of -c auto: use it with -c auto');
    if (o.algorithm !== undefined) fail('--algorithm is how -c auto adapts: use it with -c auto');
    return undefined;
  }
  if (o.perHostConcurrency !== undefined)
    fail(
      "with -c auto each origin's limit adapts: --per-host-concurrency cannot be used with it (--max-concurrency is its ceiling)",
    );
  return { algorithm: o.algorithm ?? 'gradient2', max: o.maxConcurrency ?? MAX_CONCURRENCY };
}

async function fetchAction(
  io: CliIo,
  file: string | undefined,
  o: FetchOptions,
  fail: (message: string) => never,
): Promise<number> {
  const adaptive = adaptiveOf(o, fail);
  // Some APIs refuse a request without a User-Agent. -H and a line's own headers replace these.
  const headers: Record<string, string> = { 'user-agent': `sluice/${version()}`, accept: '*/*' };
  if (o.compressed === true) headers['accept-encoding'] = 'gzip, deflate, br';
  for (const [name, value] of o.header ?? []) headers[name] = value;
  const settings: FetchSettings = {
    // With -c auto, the ceiling is the global concurrency too.
    concurrency: adaptive?.max ?? (o.concurrency as number),
    adaptive,
    rates: o.rate ?? [],
    perHostConcurrency: o.perHostConcurrency,
    perHostRates: o.perHostRate ?? [],
    retries: o.retries,
    timeoutMs: o.timeout,
    headers,
    method: o.method,
    body: o.body === true,
    maxBody: o.maxBody,
  };
  const config: RunConfig = {
    command: 'fetch',
    concurrency: settings.concurrency,
    rates: settings.rates,
    retries: settings.retries,
    timeoutMs: o.timeout,
  };
  if (adaptive !== undefined) config.adaptive = adaptive;
  if (settings.perHostConcurrency !== undefined)
    config.perHostConcurrency = settings.perHostConcurrency;
  if (settings.perHostRates.length > 0) config.perHostRates = settings.perHostRates;
  // As many lines admitted as may be in flight: a queue inside the client would only cost time,
  // and with a global rate, a start the rate allowed could then wait for a slot and go out in a
  // burst later. Per-host limits that can bind are the exception: lines for other hosts must be
  // at hand when one host's slots are full, so twice as many are admitted, and the client serves
  // the hosts in turn. With -c auto, as many as the ceiling: each origin's limit below it finds
  // work waiting, which is what lets it grow.
  const perHostBinds =
    (settings.perHostConcurrency !== undefined &&
      settings.perHostConcurrency < settings.concurrency) ||
    settings.perHostRates.length > 0;
  const window = perHostBinds ? 2 * settings.concurrency : settings.concurrency;
  const run = (): Promise<number> =>
    runLines(io, lineSettings(file, o), config, window, () => new FetchCommand(settings));
  const url = sharedUrl(io, o, fail);
  if (url === undefined) return run();
  // Loaded only when asked for: node-redis is not part of a run without --redis.
  const shared = await import('./shared.ts');
  let redis: SharedRedis;
  try {
    redis = await shared.connectRedis(url);
  } catch (error) {
    if (!(error instanceof shared.RedisUnavailableError)) throw error;
    io.stderr.write(`sluice: ${error.message}\n`);
    return 1;
  }
  const gates = shared.sharedGates({ ...settings, name: o.name }, redis);
  try {
    settings.shared = gates;
    return await run();
  } finally {
    // The run has closed its client: no permit is held, nothing waits.
    await gates.close();
    await shared.closeRedis(redis);
  }
}

/**
 * `--redis` (or `SLUICE_REDIS_URL`) and `--name`, checked: the URL to share the limits through,
 * or undefined. A misuse is a usage error (`fail`).
 */
function sharedUrl(
  io: CliIo,
  o: FetchOptions,
  fail: (message: string) => never,
): string | undefined {
  let url: string | undefined;
  try {
    url = redisUrl(o.redis, io.env.SLUICE_REDIS_URL);
    checkName(o.name);
  } catch (error) {
    fail((error as Error).message);
  }
  if (url === undefined) {
    if (o.name !== undefined)
      fail('--name names the limits shared through --redis: use it with --redis');
    return undefined;
  }
  return url;
}

async function execAction(io: CliIo, file: string | undefined, o: ExecOptions): Promise<number> {
  const settings: ExecSettings = {
    concurrency: o.concurrency,
    rates: o.rate ?? [],
    retries: o.retries,
    timeoutMs: o.timeout,
    maxOutput: MAX_OUTPUT,
  };
  const config: RunConfig = {
    command: 'exec',
    concurrency: settings.concurrency,
    rates: settings.rates,
    retries: settings.retries,
  };
  if (o.timeout !== undefined) config.timeoutMs = o.timeout;
  return runLines(
    io,
    lineSettings(file, o),
    config,
    2 * settings.concurrency,
    () => new ExecCommand(settings, io),
  );
}

const EXIT_CODES = `
Exit codes: 0 every line ok, 1 some failed, 2 usage error, 130 interrupted, 141 the output was
closed by its reader (as with | head -1: what a filter ended by SIGPIPE gives).
Ctrl-C stops starting new work, gives what runs 2 s (SLUICE_GRACE_MS) to finish, then cancels it
and writes a record for every line left ("cancelled" or "not run"); a second Ctrl-C exits at once.
An output closed by its reader ends the run quietly: nothing more starts, what runs is cancelled.`;

/**
 * Runs the CLI with `argv` (the arguments after the program's name) and returns the exit code.
 * Never throws for anything the user typed: bad options print one line to stderr and return 2.
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  let code = 0;
  let failedCommand = '';
  const program = new Command('sluice');
  const configure = (command: Command, name: string): Command =>
    command.exitOverride().configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
      // Commander's own error output is replaced by one line, written below.
      outputError: () => {
        failedCommand = name;
      },
    });
  configure(program, '')
    .description('Run many jobs without overrunning what they touch.')
    .version(version(), '-V, --version')
    .addHelpText('after', EXIT_CODES);

  const fetch = configure(program.command('fetch'), 'fetch')
    .summary('one HTTP request per input line, one JSON record each')
    .description(
      'Send one HTTP request per input line (a URL, or JSON {"url","method","headers","body","id"}) and write one JSON record per line: {index,id,url,status,ok,attempts,ms,bytes,error}.',
    );
  addLineOptions(fetch, 16, undefined, true)
    .addOption(
      new Option(
        '--max-concurrency <n>',
        `with -c auto: the most each origin's limit, and all in flight together, may reach (default: ${MAX_CONCURRENCY})`,
      ).argParser(integer(1)),
    )
    .addOption(
      new Option(
        '--algorithm <name>',
        'with -c auto: how the limit adapts (default: gradient2; see the README)',
      ).choices(['gradient2', 'vegas', 'aimd']),
    )
    .option(
      '--per-host-concurrency <n>',
      'at most N in flight per origin (default: --concurrency)',
      integer(1),
    )
    .option('--per-host-rate <rate>', 'at most this many starts per origin (repeatable)', rate)
    .option(
      '--retries <n>',
      'retries of idempotent requests after network errors, timeouts, 408, 429 and 5xx',
      integer(0),
      2,
    )
    .addOption(
      new Option('--timeout <duration>', 'per attempt, body included (e.g. 30s, 500ms)')
        .argParser(duration)
        .default(30_000, '30s'),
    )
    .option(
      '-H, --header <header>',
      '"Name: value" sent with every request (repeatable); replaces the defaults User-Agent: sluice/VERSION and Accept: */*',
      header,
    )
    .option('-X, --method <method>', 'the method of URL lines', method, 'GET')
    .option(
      '--body',
      'include the response body in the record: JSON as it is, UTF-8 text as a string, anything else in base64 ("bodyEncoding": "base64"); cut at --max-body ("truncated": true)',
    )
    .addOption(
      new Option(
        '--max-body <size>',
        'with --body, keep at most SIZE bytes of a body (e.g. 1m, 64k)',
      )
        .argParser(size)
        .default(8 * 1024 * 1024, '8MiB'),
    )
    .option(
      '--compressed',
      'ask for a compressed response (Accept-Encoding: gzip, deflate, br); with --body, bodies are decoded either way',
    )
    .option(
      '--redis <url>',
      "share -c, --rate, --per-host-*, -c auto's limits and 429/503 pauses with every process on this Redis and --name (redis:// or rediss://; default: $SLUICE_REDIS_URL)",
    )
    .option(
      '--name <name>',
      "with --redis, the name shared limits go by: -c and --rate are NAME (default: global:ORIGIN of the first request), each origin's limits NAME:ORIGIN (default: ORIGIN)",
    )
    .addHelpText('after', EXIT_CODES)
    .action(async (file: string | undefined, options: FetchOptions) => {
      code = await fetchAction(io, file, options, (message) => fetch.error(message));
    });

  const exec = configure(program.command('exec'), 'exec')
    .summary('one shell command per input line (like xargs -P), one JSON record each')
    .description(
      'Run one shell command per input line (like xargs -P) and write one JSON record per line: {index,cmd,code,signal,ok,attempts,ms,stdout,stderr,error}.',
    );
  addLineOptions(exec, availableParallelism(), 'the number of CPUs')
    .option('--retries <n>', 'retries of a command that fails', integer(0), 0)
    .addOption(
      new Option(
        '--timeout <duration>',
        "per attempt; kills the command's process group (e.g. 30s)",
      ).argParser(duration),
    )
    .addHelpText('after', EXIT_CODES)
    .action(async (file: string | undefined, options: ExecOptions) => {
      code = await execAction(io, file, options);
    });

  configure(program.command('demo'), 'demo')
    .summary('a local API with limits of its own, and 100 requests through sluice')
    .description('Start a local API with limits of its own and run 100 requests through sluice.')
    .option(
      '--fleet',
      'three processes sharing one limit through a local redis-server (exit 127 if missing)',
    )
    .action(async ({ fleet }: { fleet?: boolean }) => {
      code =
        fleet === true
          ? await (await import('../demo/fleet.ts')).runFleetDemo(io)
          : await (await import('../demo/run.ts')).runDemo(io);
    });

  if (argv.length === 0) {
    program.outputHelp({ error: true });
    return 2;
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
      if (error.code === 'commander.help') return error.exitCode === 0 ? 0 : 2;
      // One line, shown as it is: other control characters (from an argument) are escaped.
      const message = error.message
        .replace(/^error: /, '')
        .replace(/\s*\n\s*/g, ' ')
        // eslint-disable-next-line no-control-regex -- the characters to escape
        .replace(/[\x00-\x1f\x7f]/g, (c) => JSON.stringify(c).slice(1, -1));
      const help = failedCommand === '' ? 'sluice --help' : `sluice ${failedCommand} --help`;
      io.stderr.write(`sluice: ${message} (see ${help})\n`);
      return 2;
    }
    if (error instanceof UsageError) {
      io.stderr.write(`sluice: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}
