/**
 * (e) Rate: 10 starts per 100 ms, saturated and observed for 2 s, and a late burst.
 *
 * Each implementation gets far more work than the observation allows (400 tasks for at most 200
 * starts). A task's first statement records `performance.now()`: a start is when the caller's
 * code runs, as the server on the other end would see it, not when the limiter booked it. From
 * the recorded starts a process reports:
 * - achieved: starts with `time − t0 < 2000`, where t0 is read just before the first request
 *   (10 per 100 ms over those 2 s allows exactly 200: 20 disjoint windows of 100 ms);
 * - the most starts in any half-open window [t, t + 100), t ranging over every start instant
 *   (the densest window always begins at a start), over every start recorded;
 * - the shortest span holding 11 starts (`t[i + 10] − t[i]`): under 100 ms means some window of
 *   100 ms held 11, however little under;
 * - the delay from the first request to the first start.
 * The late burst asks for 1 start, then for the other 399 at +90 ms, and is observed for 1 s:
 * a limiter that counts fixed windows from its first start lets a second burst through at +100.
 */
import * as s from '../stats.mjs';

export const title = '(e) Rate, 10 starts per 100 ms';

const LIMIT = 10;
const INTERVAL = 100;
const TASKS = 400;
const OBSERVE_MS = 2000;
const ALLOWED = (LIMIT * OBSERVE_MS) / INTERVAL;
const LATE_AT = 90;
const LATE_OBSERVE_MS = 1000;
/** Starts are still recorded this long after the observation, for the strictness columns. */
const TAIL_MS = 50;

const SLUICE = new URL('../../dist/index.js', import.meta.url).href;

/**
 * Each `load()` resolves to `create()`, which makes a fresh limiter and returns `submit(task)`:
 * ask for one start of `task` the way a user of that library would.
 */
const impls = [
  {
    name: 'sluice RateLimiter (spaced)',
    kind: 'sluice',
    async load() {
      const { RateLimiter } = await import(SLUICE);
      return () => {
        const rate = new RateLimiter('10/100ms');
        return (task) => rate.wait().then(task);
      };
    },
  },
  {
    name: "sluice RateLimiter (window: 'sliding')",
    kind: 'sluice',
    async load() {
      const { RateLimiter } = await import(SLUICE);
      return () => {
        const rate = new RateLimiter({ rate: '10/100ms', window: 'sliding' });
        return (task) => rate.wait().then(task);
      };
    },
  },
  {
    name: 'sluice Limiter({ rate }).schedule',
    kind: 'sluice',
    async load() {
      const { Limiter } = await import(SLUICE);
      return () => {
        const limiter = new Limiter({ rate: '10/100ms' });
        return (task) => limiter.schedule(task);
      };
    },
  },
  {
    name: 'p-queue (fixed window)',
    kind: 'peer',
    async load() {
      const { default: PQueue } = await import('p-queue');
      return () => {
        const queue = new PQueue({ intervalCap: LIMIT, interval: INTERVAL });
        return (task) => queue.add(task);
      };
    },
  },
  {
    name: 'p-queue strict',
    kind: 'peer',
    async load() {
      const { default: PQueue } = await import('p-queue');
      return () => {
        const queue = new PQueue({ intervalCap: LIMIT, interval: INTERVAL, strict: true });
        return (task) => queue.add(task);
      };
    },
  },
  {
    name: 'bottleneck minTime 10',
    kind: 'peer',
    async load() {
      const { default: Bottleneck } = await import('bottleneck');
      return () => {
        const limiter = new Bottleneck({ minTime: INTERVAL / LIMIT });
        return (task) => limiter.schedule(task);
      };
    },
  },
  {
    name: 'bottleneck reservoir',
    kind: 'peer',
    async load() {
      const { default: Bottleneck } = await import('bottleneck');
      return () => {
        const limiter = new Bottleneck({
          reservoir: LIMIT,
          reservoirRefreshAmount: LIMIT,
          reservoirRefreshInterval: INTERVAL,
        });
        return (task) => limiter.schedule(task);
      };
    },
  },
  {
    name: 'limiter 4.1 removeTokens',
    kind: 'peer',
    async load() {
      const { RateLimiter } = await import('limiter');
      return () => {
        const limiter = new RateLimiter({ tokensPerInterval: LIMIT, interval: INTERVAL });
        return (task) => limiter.removeTokens(1).then(task);
      };
    },
  },
];

const SCENARIOS = ['saturated', 'late burst'];

export function plan() {
  return SCENARIOS.flatMap((scenario) =>
    impls.map((impl) => ({
      label: `${impl.name}, ${scenario}`,
      params: { impl: impl.name, scenario },
    })),
  );
}

const sleep = (ms) =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

export async function measure({ impl, scenario }) {
  const found = impls.find((candidate) => candidate.name === impl);
  if (found === undefined) throw new Error(`Unknown implementation ${JSON.stringify(impl)}`);
  const create = await found.load();
  const submit = create();
  const starts = [];
  const task = () => {
    starts.push(performance.now());
    return Promise.resolve();
  };
  // A rejected request (none is expected) must not end the process before the result is out.
  const ignore = () => undefined;

  // Involuntary context switches: how often the OS took the CPU away during the run. A
  // preempted process fires its timers late, whatever the limiter does.
  const switches = process.resourceUsage().involuntaryContextSwitches;
  let t0;
  let observeMs;
  let burstAt;
  let enqueueMs;
  if (scenario === 'saturated') {
    observeMs = OBSERVE_MS;
    t0 = performance.now();
    for (let i = 0; i < TASKS; i++) submit(task).catch(ignore);
    enqueueMs = performance.now() - t0;
  } else {
    observeMs = LATE_OBSERVE_MS;
    t0 = performance.now();
    submit(task).catch(ignore);
    await sleep(LATE_AT);
    burstAt = performance.now() - t0;
    for (let i = 1; i < TASKS; i++) submit(task).catch(ignore);
    enqueueMs = performance.now() - t0 - burstAt;
  }
  await sleep(t0 + observeMs + TAIL_MS - performance.now());
  const preempted = process.resourceUsage().involuntaryContextSwitches - switches;
  // Measured on the exact readings; the offsets kept in the results (for a look at the sequence)
  // are rounded to the microsecond, which could hide a sub-microsecond breach.
  const exact = starts.map((t) => t - t0).sort((a, b) => a - b);
  const offsets = exact.map((t) => Math.round(t * 1000) / 1000);
  const result = { ...analyse(exact, observeMs), enqueueMs, burstAt, preempted, offsets };
  result.summary =
    `${result.achieved} started, max ${result.maxInWindow}/100 ms, ` +
    `11 in ≥ ${s.fixed(result.min11, 3)} ms, first +${s.fixed(result.firstDelay, 3)} ms`;
  return result;
}

/** The columns, from start offsets (ms after t0, sorted). */
function analyse(offsets, observeMs) {
  const n = offsets.length;
  // The fullest window [t, t + 100) over every start instant t; among equally full windows, the
  // one whose starts are packed tightest.
  let maxInWindow = 0;
  let fullestAt = NaN;
  let fullestSpan = NaN;
  for (let i = 0, j = 0; i < n; i++) {
    while (j < n && offsets[j] < offsets[i] + INTERVAL) j++;
    const span = offsets[j - 1] - offsets[i];
    if (j - i > maxInWindow || (j - i === maxInWindow && span < fullestSpan)) {
      maxInWindow = j - i;
      fullestAt = offsets[i];
      fullestSpan = span;
    }
  }
  let min11 = Infinity;
  for (let i = 0; i + LIMIT < n; i++) min11 = Math.min(min11, offsets[i + LIMIT] - offsets[i]);
  // Gaps between consecutive starts: with the spaced window every one should be 10 ms, and what
  // they add up to beyond that is the lateness the rate lost.
  const gaps = offsets.slice(1).map((t, i) => t - offsets[i]);
  return {
    achieved: offsets.filter((t) => t < observeMs).length,
    recorded: n,
    maxInWindow,
    fullestAt,
    fullestSpan,
    min11,
    firstDelay: n > 0 ? offsets[0] : NaN,
    maxGap: gaps.length > 0 ? Math.max(...gaps) : NaN,
  };
}

export function report(cells, config) {
  const at = (name, scenario) =>
    cells.find((cell) => cell.params.impl === name && cell.params.scenario === scenario);
  const values = (cell, key) =>
    cell.runs.map((run) => run[key]).filter((value) => Number.isFinite(value));
  const worstMax = (cell, key) => (values(cell, key).length ? Math.max(...values(cell, key)) : NaN);
  const worstMin = (cell, key) => (values(cell, key).length ? Math.min(...values(cell, key)) : NaN);
  const both = (median, worst, format) => `${format(median)} / ${format(worst)}`;
  const ms3 = (value) => s.fixed(value, 3);
  const count = (value) => (Number.isFinite(value) ? String(value) : 'n/a');
  const failed = (cell) => (cell.errors.length > 0 ? ` ⚠ ${cell.errors.length} failed` : '');

  const saturated = impls.map((impl) => {
    const cell = at(impl.name, 'saturated');
    const achieved = s.medianOf(cell, 'achieved');
    return [
      impl.name + failed(cell),
      `${count(achieved)} / ${ALLOWED} (${s.percent(achieved / ALLOWED)})`,
      count(worstMin(cell, 'achieved')),
      both(s.medianOf(cell, 'maxInWindow'), worstMax(cell, 'maxInWindow'), count),
      both(s.medianOf(cell, 'min11'), worstMin(cell, 'min11'), ms3),
      both(s.medianOf(cell, 'firstDelay'), worstMax(cell, 'firstDelay'), ms3),
      ms3(s.medianOf(cell, 'enqueueMs')),
    ];
  });

  const late = impls.map((impl) => {
    const cell = at(impl.name, 'late burst');
    // The fullest window of the worst process (the tightest packed, between equally full ones).
    let worst;
    for (const run of cell.runs) {
      if (
        worst === undefined ||
        run.maxInWindow > worst.maxInWindow ||
        (run.maxInWindow === worst.maxInWindow && run.fullestSpan < worst.fullestSpan)
      ) {
        worst = run;
      }
    }
    return [
      impl.name + failed(cell),
      both(s.medianOf(cell, 'maxInWindow'), worstMax(cell, 'maxInWindow'), count),
      worst === undefined
        ? 'n/a'
        : `${worst.maxInWindow} in ${ms3(worst.fullestSpan)} ms from +${ms3(worst.fullestAt)}`,
      both(s.medianOf(cell, 'min11'), worstMin(cell, 'min11'), ms3),
    ];
  });

  const reps = `${config.reps} fresh process${config.reps === 1 ? '' : 'es'} per cell`;
  const markdown = [
    `### ${title}`,
    '',
    `Saturated: ${TASKS} tasks asked for in one synchronous loop, observed for ` +
      `${OBSERVE_MS / 1000} s. A task's first statement records \`performance.now()\`; t0 is ` +
      `read just before the first request. Achieved counts starts with time − t0 < ` +
      `${OBSERVE_MS} ms; 10 per 100 ms allows ${ALLOWED} there. "Max in 100 ms" is the most ` +
      `starts in any half-open window [t, t + 100 ms), checked at every start instant, over ` +
      `every start recorded (up to +${OBSERVE_MS + TAIL_MS} ms); "11-span" is the shortest time ` +
      `holding 11 starts, so anything under 100.000 breaks the limit. Cells show the median / ` +
      `the worst of ${reps}; "enqueue" is how long the loop of ${TASKS} requests took (median), ` +
      `which delays any task a limiter runs from a promise callback rather than inside the call.`,
    '',
    s.table(
      [
        'implementation',
        'achieved / allowed',
        'achieved, worst',
        'max in 100 ms',
        '11-span ms',
        'first start ms',
        'enqueue ms',
      ],
      saturated,
    ),
    '',
    `Late burst: 1 task at t0, the other ${TASKS - 1} at +${LATE_AT} ms (a plain setTimeout, so ` +
      `about +${LATE_AT + 1}), observed for ${LATE_OBSERVE_MS / 1000} s. "Fullest window" is the ` +
      `worst process's: how many started in it, the span they took, and where it began.`,
    '',
    s.table(
      ['implementation', 'max in 100 ms', 'fullest window (worst process)', '11-span ms'],
      late,
    ),
    '',
    preemptionNote(cells),
  ].join('\n');

  const targets = [];
  for (const impl of impls.filter((candidate) => candidate.kind === 'sluice')) {
    const sat = at(impl.name, 'saturated');
    const burst = at(impl.name, 'late burst');
    const cellsOf = [sat, burst];
    const complete = cellsOf.every((cell) => cell.runs.length > 0 && cell.errors.length === 0);
    const maxWindow = Math.max(...cellsOf.map((cell) => worstMax(cell, 'maxInWindow')));
    const min11 = Math.min(...cellsOf.map((cell) => worstMin(cell, 'min11')));
    targets.push(
      s.target(
        complete && maxWindow <= LIMIT && min11 >= INTERVAL,
        `(e) ${impl.name}: never over the limit in any process, saturated or late burst: ` +
          `max ${count(maxWindow)} starts in 100 ms (≤ ${LIMIT}), shortest 11-span ` +
          `${ms3(min11)} ms (≥ ${INTERVAL})`,
      ),
    );
    const achieved = s.medianOf(sat, 'achieved');
    targets.push(
      s.target(
        achieved / ALLOWED >= 0.995,
        `(e) ${impl.name}: ${count(achieved)} of ${ALLOWED} allowed starts in ` +
          `${OBSERVE_MS / 1000} s, ${s.percent(achieved / ALLOWED)} (≥ 99.5%; worst process ` +
          `${count(worstMin(sat, 'achieved'))})`,
      ),
    );
    const first = s.medianOf(sat, 'firstDelay');
    targets.push(
      s.target(
        first <= 2,
        `(e) ${impl.name}: first start ${ms3(first)} ms after the first request (≤ 2 ms; ` +
          `worst process ${ms3(worstMax(sat, 'firstDelay'))})`,
      ),
    );
  }
  return { markdown, targets };
}

/** How often the OS preempted the measuring processes: late timers on a busy machine are its doing. */
function preemptionNote(cells) {
  const counts = cells.flatMap((cell) => cell.runs.map((run) => run.preempted));
  if (counts.length === 0) return '';
  return (
    `Involuntary context switches per process during its observation (the OS took the CPU ` +
    `away; each can make a timer fire milliseconds late): median ${s.int(s.median(counts))}, ` +
    `most ${s.int(Math.max(...counts))}.`
  );
}
