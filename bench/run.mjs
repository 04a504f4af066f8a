#!/usr/bin/env node
/**
 * `npm run bench`: sluice against its peers, side by side, in one run.
 *
 * Every measurement runs in a fresh `node --expose-gc bench/child.mjs <group> <params>` process
 * and reports back one JSON line; each cell is measured `BENCH_REPS` times (default 3) and the
 * median is reported. The repetitions are interleaved (all cells once, then all again), so a
 * slow minute on a shared machine spreads over every row instead of sinking one.
 *
 * Environment:
 *   BENCH_REPS=n     fresh processes per cell (default 3)
 *   BENCH_QUICK=1    smoke run: N = 200 000, one process per cell
 *   BENCH_ONLY=a,b   only these groups (names from GROUPS below)
 * A full run writes BENCHMARKS.md at the repository root; a quick or partial run writes
 * .bench-out/BENCHMARKS.md instead, so a smoke run never replaces the published numbers. The
 * raw per-process results go to .bench-out/results.json either way.
 *
 * Adding a measurement group (rate limiters, HTTP, ...): write bench/cases/<name>.mjs exporting
 *   title                  the section heading
 *   plan(config)           → [{ label, params }], one cell per JSON-serialisable params
 *   measure(params)        runs in the child; returns a JSON-able result, with a `summary` string
 *   report(cells, config)  → { markdown, targets: [{ pass, text }] }; each cell carries its
 *                          `runs` (results) and `errors`
 *   nodeArgs (optional)    extra flags for its children
 *   reps (optional)        at most this many repetitions of its cells (long, exact ones)
 * and add <name> to GROUPS. Nothing else here changes.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { int } from './stats.mjs';

const GROUPS = [
  'throughput',
  'memory',
  'makespan',
  'map',
  'rate',
  'limiter',
  'http',
  'adaptive',
  'redis',
];

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHILD = fileURLToPath(new URL('child.mjs', import.meta.url));
const PEERS = [
  'p-limit',
  'p-queue',
  'p-map',
  'async',
  'bottleneck',
  'limiter',
  'redis-semaphore',
  'ioredis',
  'rate-limiter-flexible',
];
// The peers are the bench's own dependencies (bench/package.json), installed by `npm run bench`.
const BENCH_MODULES = fileURLToPath(new URL('node_modules', import.meta.url));
// Generous: the slowest cell (a peer at 1 000 000 tasks) takes well under 30 s here.
const CHILD_TIMEOUT_MS = 5 * 60_000;

const config = readConfig();
const groups = await loadGroups();
const environment = describeEnvironment();

const jobs = [];
for (let rep = 1; rep <= config.reps; rep++) {
  for (const group of groups) {
    // A group whose cells are long and exact may ask for fewer repetitions (`export const reps`).
    if (rep > (group.module.reps ?? config.reps)) continue;
    for (const cell of group.cells) jobs.push({ group, cell, rep });
  }
}

log(
  `sluice bench: ${groups.map((group) => group.name).join(', ')}; N = ${config.n}, ` +
    `${config.reps} rep(s), ${jobs.length} processes`,
);
// Another process on a 2-core machine moves every number; say so where the numbers are.
const loadAtStart = loadavg()[0];
if (loadAtStart > 0.5) {
  log(`warning: load average ${loadAtStart.toFixed(2)}: something else is running, expect noise`);
}
const cpuAtStart = cpuSnapshot();
const startedAt = performance.now();
let failures = 0;
for (const [index, job] of jobs.entries()) {
  const { group, cell, rep } = job;
  const began = performance.now();
  const outcome = await runChild(group, cell.params);
  const seconds = (performance.now() - began) / 1000;
  let status;
  if ('error' in outcome) {
    failures++;
    cell.errors.push(outcome.error);
    status = `FAILED: ${outcome.error.split('\n')[0]}`;
  } else {
    cell.runs.push(outcome.result);
    status = outcome.result.summary ?? 'ok';
  }
  const elapsed = (performance.now() - startedAt) / 1000;
  const eta = (elapsed / (index + 1)) * (jobs.length - index - 1);
  log(
    `[${String(index + 1).padStart(String(jobs.length).length)}/${jobs.length}] ` +
      `rep ${rep}/${config.reps} ${group.name}: ${cell.label} — ${status} ` +
      `(${seconds.toFixed(1)} s; eta ${formatDuration(eta)})`,
  );
}
const totalSeconds = (performance.now() - startedAt) / 1000;
const otherCores = otherCpu(cpuAtStart, cpuSnapshot(), totalSeconds);

const sections = [];
const targets = [];
for (const group of groups) {
  // A broken report must not throw away the minutes of measurements behind the others.
  try {
    const { markdown, targets: groupTargets } = group.module.report(group.cells, config);
    sections.push(markdown);
    targets.push(...groupTargets);
  } catch (error) {
    failures++;
    sections.push(`### ${group.module.title}\n\n**The report failed:** ${String(error)}`);
    log(`report of ${group.name} failed: ${error instanceof Error ? error.stack : String(error)}`);
  }
}
const passed = targets.filter((t) => t.pass).length;

const document = [
  '# Benchmarks',
  '',
  ...environment,
  `- N: ${int(config.n)} tasks in (a), (b) and (f); fixed sizes in (c), (d) and (e)`,
  `- Repetitions: ${config.reps} fresh process${config.reps === 1 ? '' : 'es'} per cell, ` +
    `median reported (interleaved: every cell once, then again)`,
  `- Run time: ${formatDuration(totalSeconds)}; load average ${loadAtStart.toFixed(2)} at the ` +
    `start; other processes kept ${otherCores === undefined ? 'n/a' : otherCores.toFixed(2)} ` +
    `of ${cpus().length} cores busy on average during the run`,
  '',
  'Ratios compare cells of this one run only: between runs on this machine the same cell ' +
    'moves by up to a quarter, so compare ratios, not absolute numbers, across runs.',
  '',
  '## Results',
  '',
  sections.join('\n\n'),
  '',
  `## Targets (${passed} of ${targets.length} met)`,
  '',
  ...targets.map((t) => `- ${t.text}`),
  ...(failures > 0 ? ['', `**${failures} measurement process(es) failed**; see stderr.`] : []),
  '',
].join('\n');

process.stdout.write(document);

const outDir = join(ROOT, '.bench-out');
mkdirSync(outDir, { recursive: true });
const full = !config.quick && config.only === undefined;
const mdPath = full ? join(ROOT, 'BENCHMARKS.md') : join(outDir, 'BENCHMARKS.md');
writeFileSync(mdPath, document);
writeFileSync(
  join(outDir, 'results.json'),
  JSON.stringify(
    {
      config,
      environment,
      groups: groups.map((g) => ({ name: g.name, cells: g.cells })),
    },
    null,
    2,
  ),
);
log(`wrote ${mdPath} (${passed}/${targets.length} targets met) in ${formatDuration(totalSeconds)}`);
// Missed targets are results, not errors: only a failed measurement fails the command.
process.exitCode = failures > 0 ? 1 : 0;

function readConfig() {
  const quick = process.env.BENCH_QUICK === '1';
  const reps =
    process.env.BENCH_REPS === undefined ? (quick ? 1 : 3) : Number(process.env.BENCH_REPS);
  if (!Number.isInteger(reps) || reps < 1) {
    throw new RangeError(
      `Expected BENCH_REPS to be an integer >= 1, got ${process.env.BENCH_REPS}`,
    );
  }
  const only = process.env.BENCH_ONLY?.split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of only ?? []) {
    if (!GROUPS.includes(name)) {
      throw new RangeError(
        `Unknown group ${name} in BENCH_ONLY; expected some of ${GROUPS.join(', ')}`,
      );
    }
  }
  return { quick, reps, n: quick ? 200_000 : 1_000_000, only };
}

async function loadGroups() {
  const names = GROUPS.filter((name) => config.only === undefined || config.only.includes(name));
  return Promise.all(
    names.map(async (name) => {
      const module = await import(`./cases/${name}.mjs`);
      const cells = module.plan(config).map((cell) => ({ ...cell, runs: [], errors: [] }));
      return { name, module, cells };
    }),
  );
}

/** Spawns one measurement; resolves to `{ result }` or `{ error }`, never rejects. */
function runChild(group, params) {
  const args = [
    '--expose-gc',
    ...(group.module.nodeArgs ?? []),
    CHILD,
    group.name,
    JSON.stringify(params),
  ];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { cwd: ROOT, timeout: CHILD_TIMEOUT_MS, maxBuffer: 64 * 2 ** 20 },
      (error, stdout, stderr) => {
        if (error) {
          const reason = error.killed ? `killed after ${CHILD_TIMEOUT_MS / 1000} s` : error.message;
          resolve({ error: `${reason}\n${stderr.trim().split('\n').slice(-15).join('\n')}` });
          return;
        }
        const lines = stdout.trim().split('\n');
        try {
          resolve({ result: JSON.parse(lines.at(-1)) });
        } catch {
          resolve({
            error: `no JSON result on stdout:\n${stdout.slice(-500)}${stderr.slice(-500)}`,
          });
        }
      },
    );
  });
}

function describeEnvironment() {
  const cpuList = cpus();
  const model = cpuList[0]?.model.trim() ?? 'unknown CPU';
  const versions = PEERS.map((name) => {
    const pkg = JSON.parse(readFileSync(join(BENCH_MODULES, name, 'package.json'), 'utf8'));
    return `${name} ${pkg.version}`;
  });
  return [
    '- Command: `npm run bench`',
    `- Date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`,
    `- Node: ${process.version} (${process.platform} ${process.arch})`,
    `- CPU: ${model} × ${cpuList.length}`,
    `- sluice: ${gitRevision()}, imported from dist/`,
    `- Peers: ${versions.join(', ')}`,
  ];
}

/** The commit, and whether src/ differed from it: numbers belong to the code that made them. */
function gitRevision() {
  try {
    const git = (...args) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
    const commit = git('rev-parse', '--short', 'HEAD');
    const dirty = git('status', '--porcelain', '--', 'src') !== '';
    return `commit ${commit}${dirty ? ' with uncommitted changes in src/' : ''}`;
  } catch {
    return 'commit unknown (not a git checkout)';
  }
}

/**
 * CPU time, in clock ticks, of the whole machine (busy) and of this process with its finished
 * children (own), from /proc. Linux only; undefined elsewhere.
 */
function cpuSnapshot() {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1);
    const ticks = fields.map(Number);
    // user nice system idle iowait irq softirq steal ...: idle and iowait are the idle ones;
    // steal stays "busy", as a neighbour on the host slows the run just the same.
    const busy = ticks.reduce((a, b) => a + b, 0) - ticks[3] - (ticks[4] ?? 0);
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // Fields after "pid (comm) ": state is field 3, utime/stime/cutime/cstime are 14 to 17.
    const rest = stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
    const own = rest[11] + rest[12] + rest[13] + rest[14];
    return Number.isFinite(busy) && Number.isFinite(own) ? { busy, own } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How many cores, on average, something other than this benchmark used while it ran: the
 * noise indicator for a run (USER_HZ is 100 on Linux).
 */
function otherCpu(before, after, seconds) {
  if (before === undefined || after === undefined || seconds <= 0) return undefined;
  const ticks = after.busy - before.busy - (after.own - before.own);
  return Math.max(0, ticks / 100 / seconds);
}

function formatDuration(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = Math.round(seconds % 60);
  return minutes > 0 ? `${minutes} min ${rest} s` : `${seconds.toFixed(1)} s`;
}

function log(line) {
  process.stderr.write(`${line}\n`);
}
