/**
 * (i) Shared gates on Redis: sluice's RedisSemaphore and RedisRateLimiter beside redis-semaphore
 * 5.8, bottleneck 2.19 (Redis mode) and rate-limiter-flexible 11, on one local Redis per
 * measurement (bench/redis-server.mjs starts a `redis-server` of its own on a free port), with a
 * raw PING loop as the floor. The peers run on ioredis (bottleneck hangs on node-redis 6); sluice
 * on node-redis, the client it is made for, and, in (i1), on ioredis too.
 *
 * (i1) Uncontended: one process, limit 5, acquire + release pairs in a loop, each release awaited
 *      (sluice's `await using`), after 500 pairs of warm-up. Every implementation and the PING
 *      loops run in the same process, in slices of 250 ms taken in turn, so that each sees the
 *      same load of a shared machine; the ratio to redis-semaphore is taken within each round.
 *      The round trips of 20 pairs are counted with MONITOR: the commands the client sent (not
 *      those its scripts ran), between markers sent before each acquire and each release.
 * (i2) Contention: 4 processes (bench/redis-worker.mjs), each running as many loops as the limit
 *      (so each alone could fill it), each loop acquiring, holding 1 ms (a timer), releasing, for
 *      1.5 s; limit 1 and limit 5. Every process stamps its events on CLOCK_MONOTONIC
 *      (`process.hrtime`), which all processes of the machine share. Handoff: a request that found
 *      no free permit (by the stamps) is matched with the release that freed its permit (permits
 *      freed are taken in order); the latency is from that release's call to the grant seen by
 *      the waiter, counted when the two are in different processes. The floor beside them: tokens
 *      passed round the processes over pub/sub (bench/redis-impls.mjs), a release being one
 *      PUBLISH that wakes the next process: no limiter can hand over faster by pushing.
 * (i3) A holder killed with `kill -9` (lease 1 s, limit 1): another process's request waits; the
 *      holder's lease end is read from Redis after the kill (its expiry there), and the time is
 *      from then until the waiter holds the permit. bottleneck has no lease: with a job
 *      `expiration` of 1 s it is measured from the job's start plus 1 s; without one, whether the
 *      permit comes back within 1.5 s of the kill.
 * (i4) Shared rate: 1 000 starts/s shared by 4 processes, each with 50 loops waiting for a start
 *      and stamping it (the shared clock again, so the starts of all processes are merged and
 *      measured in one place), for 2.5 s. Achieved: starts in [0.5 s, 2.5 s) over 2 s (the first
 *      half second is the ramp); the most starts in any sliding second and any 100 ms, over every
 *      start. The floor beside them: each process sleeps until starts of a schedule fixed in
 *      advance (no Redis), so its windows show only what timers and scheduling add.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { clock, rates, semaphores, sleep } from '../redis-impls.mjs';
import { startRedis } from '../redis-server.mjs';
import * as s from '../stats.mjs';

export const title = '(i) Shared gates on Redis: RedisSemaphore and RedisRateLimiter';

const WORKER = fileURLToPath(new URL('../redis-worker.mjs', import.meta.url));

const UNCONTENDED_LIMIT = 5;
const WARM_PAIRS = 500;
const COUNTED_PAIRS = 20;
/** Each subject's slice of a round in (i1); as many rounds as subjects. */
const SLICE_MS = 250;
const PROCESSES = 4;
const HOLD_MS = 1;
const CONTEND_MS = 1500;
const LIMITS = [1, 5];
const LEASE_MS = 1000;
const NO_LEASE_WAIT_MS = 1500;
const PER_SECOND = 1000;
const RATE_LOOPS = 50;
const RATE_MS = 2500;
const RAMP_MS = 500;

const FAIR_TARGET = 0.9;
const HANDOFF_P99_TARGET = 2;
const BACK_TARGET = 100;
const RATE_TARGET = 0.99;
const PER_100MS_TARGET = PER_SECOND / 10 + 1;

const UNCONTENDED = ['sluice', 'sluice-ioredis', 'redis-semaphore', 'bottleneck'];
const PINGS = ['PING node-redis', 'PING ioredis'];
const RING = 'floor: pub/sub token ring';
const CONTENDED = ['sluice', 'redis-semaphore', 'bottleneck', RING];
const KILLED = [
  { impl: 'sluice', label: 'sluice RedisSemaphore (leaseMs 1000)' },
  { impl: 'redis-semaphore', label: 'redis-semaphore (lockTimeout 1000)' },
  { impl: 'bottleneck', expiration: LEASE_MS, label: 'bottleneck (job expiration 1000)' },
  { impl: 'bottleneck', label: 'bottleneck (no expiration)' },
];
const RATES = Object.keys(rates);
const SCHEDULE = 'floor: fixed schedule';

const LABELS = {
  sluice: 'sluice RedisSemaphore',
  'sluice-ioredis': 'sluice RedisSemaphore on ioredis',
  'redis-semaphore': 'redis-semaphore',
  bottleneck: 'bottleneck',
  [RING]: 'floor: tokens passed over pub/sub, no limiter',
};
const RATE_LABELS = {
  sluice: 'sluice RedisRateLimiter',
  'rate-limiter-flexible queue': 'rate-limiter-flexible RateLimiterQueue',
  'rate-limiter-flexible retry': 'rate-limiter-flexible consume + retry',
  bottleneck: 'bottleneck minTime 1',
  [SCHEDULE]: 'floor: a fixed schedule, no Redis (timers only)',
};

export function plan() {
  return [
    { label: 'uncontended, every implementation in turn', params: { part: 'uncontended' } },
    ...LIMITS.flatMap((limit) =>
      CONTENDED.map((impl) => ({
        label: `contention ${impl} limit ${limit}`,
        params: { part: 'contention', impl, limit },
      })),
    ),
    ...KILLED.map((k) => ({ label: `killed ${k.label}`, params: { part: 'killed', ...k } })),
    ...RATES.map((impl) => ({ label: `rate ${impl}`, params: { part: 'rate', impl } })),
  ];
}

export async function measure(params) {
  const server = await startRedis();
  try {
    switch (params.part) {
      case 'uncontended':
        return await uncontended(server, params);
      case 'contention':
        return await contention(server, params);
      case 'killed':
        return await killed(server, params);
      case 'rate':
        return await rate(server, params);
      default:
        throw new Error(`unknown part ${params.part}`);
    }
  } finally {
    await server.stop();
  }
}

// --- (i1) Uncontended ---------------------------------------------------------------------------

async function uncontended(server) {
  const names = [...UNCONTENDED, ...PINGS];
  const subjects = [];
  try {
    for (const [i, name] of names.entries()) {
      const subject = name.startsWith('PING')
        ? await pinger(server, name)
        : await semaphores[name](server.url, `bench-${i}`, UNCONTENDED_LIMIT);
      subject.name = name;
      // One pair: an acquire and its release, or one PING.
      subject.pair = subject.ping ?? (async () => (await subject.acquire())());
      subjects.push(subject);
      for (let k = 0; k < WARM_PAIRS; k++) await subject.pair();
    }
    const trips = {};
    const monitor = await Monitor.open(server.port);
    for (const subject of subjects.filter((x) => x.ping === undefined)) {
      for (let k = 0; k < COUNTED_PAIRS; k++) {
        await monitor.mark(`${subject.name}|acquire`);
        const release = await subject.acquire();
        await monitor.mark(`${subject.name}|release`);
        await release();
      }
    }
    await monitor.mark('end');
    for (const [phase, n] of monitor.counts()) trips[phase] = n / COUNTED_PAIRS;
    monitor.close();
    // Slices in turn, each subject first in one round: every subject sees the same minute.
    const rounds = names.map(() => ({}));
    for (const [r, round] of rounds.entries()) {
      for (let k = 0; k < subjects.length; k++) {
        const subject = subjects[(r + k) % subjects.length];
        const t0 = performance.now();
        let pairs = 0;
        while (performance.now() - t0 < SLICE_MS) {
          await subject.pair();
          pairs++;
        }
        round[subject.name] = pairs / ((performance.now() - t0) / 1000);
      }
    }
    const result = {};
    for (const name of names) {
      result[name] = {
        perSecond: s.median(rounds.map((round) => round[name])),
        // Within each round, then the median: the load of the machine moves between rounds.
        vsPeer: s.median(rounds.map((round) => round[name] / round['redis-semaphore'])),
        perAcquire: trips[`${name}|acquire`] ?? (name.startsWith('PING') ? 1 : NaN),
        perRelease: trips[`${name}|release`] ?? (name.startsWith('PING') ? 0 : NaN),
      };
    }
    const sl = result.sluice;
    return {
      subjects: result,
      summary:
        `sluice ${s.rate(sl.perSecond)} pairs/s (${s.ratio(sl.vsPeer)} redis-semaphore), ` +
        `${sl.perAcquire} + ${sl.perRelease} round trips`,
    };
  } finally {
    for (const subject of subjects) await subject.close();
  }
}

/** A client sending PING: the floor of one round trip. */
async function pinger(server, name) {
  if (name === 'PING node-redis') {
    const { createClient } = await import('redis');
    const client = await createClient({
      url: server.url,
      maintNotifications: 'disabled',
    }).connect();
    return { ping: () => client.ping(), close: () => client.close() };
  }
  const { default: Redis } = await import('ioredis');
  const client = new Redis(server.url);
  return { ping: () => client.ping(), close: async () => client.disconnect() };
}

/**
 * MONITOR on a connection of its own: every command the server runs, in the order it runs them,
 * each marked with its source (a client's address, or "lua" for a script's). `mark(phase)` sends
 * `ECHO` on another connection, and what the measured client sends after it is counted in that
 * phase.
 */
class Monitor {
  #socket;
  #lines = [];
  #buffer = '';
  #marker;
  #waiting;
  #markerPort;

  static async open(port) {
    const monitor = new Monitor();
    monitor.#socket = connect(port, '127.0.0.1');
    monitor.#socket.setEncoding('utf8');
    monitor.#socket.on('data', (chunk) => monitor.#data(chunk));
    await once(monitor.#socket, 'connect');
    monitor.#socket.write('MONITOR\r\n');
    monitor.#marker = connect(port, '127.0.0.1');
    monitor.#marker.setEncoding('utf8');
    monitor.#marker.on('data', () => undefined);
    await once(monitor.#marker, 'connect');
    monitor.#markerPort = monitor.#marker.localPort;
    await monitor.mark('start');
    return monitor;
  }

  #data(chunk) {
    this.#buffer += chunk;
    const lines = this.#buffer.split('\r\n');
    this.#buffer = lines.pop();
    this.#lines.push(...lines);
    if (this.#waiting !== undefined && lines.some((l) => l.includes(this.#waiting.needle))) {
      this.#waiting.resolve();
      this.#waiting = undefined;
    }
  }

  /** Resolves once the server has run the marker (so the phase starts after it). */
  mark(phase) {
    const needle = `"sluice-bench-mark:${phase}:${this.#lines.length}`;
    return new Promise((resolve) => {
      this.#waiting = { needle, resolve };
      this.#marker.write(`ECHO ${needle.slice(1)}\r\n`);
    });
  }

  /** Commands sent by clients other than the marker's, per phase: [[phase, n], ...]. */
  counts() {
    const counts = new Map();
    let phase;
    for (const line of this.#lines) {
      const marker = /"sluice-bench-mark:([^:"]+):/.exec(line);
      if (marker !== null) {
        phase = marker[1];
        continue;
      }
      const source = /^\+[\d.]+ \[\d+ ([^\]]+)\]/.exec(line)?.[1];
      if (source === undefined || source === 'lua' || source.endsWith(`:${this.#markerPort}`)) {
        continue;
      }
      if (phase !== undefined && phase !== 'start' && phase !== 'end') {
        counts.set(phase, (counts.get(phase) ?? 0) + 1);
      }
    }
    return [...counts];
  }

  close() {
    this.#socket.destroy();
    this.#marker.destroy();
  }
}

// --- Fleets of worker processes -----------------------------------------------------------------

/** Starts `n` workers, starts them together once all are ready, resolves to their results. */
async function fleet(configs) {
  const children = configs.map((config) =>
    spawn(process.execPath, [WORKER, JSON.stringify(config)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  const lines = children.map((child) => createInterface({ input: child.stdout }));
  const next = lines.map((rl) => rl[Symbol.asyncIterator]());
  try {
    for (const iterator of next) {
      const { value } = await iterator.next();
      if (value === undefined || !JSON.parse(value).ready) throw new Error('a worker failed');
    }
    const start = clock() + 100;
    for (const child of children) child.stdin.write(`${start}\n`);
    const results = [];
    for (const iterator of next) {
      const { value } = await iterator.next();
      if (value === undefined) throw new Error('a worker ended without a result');
      results.push(JSON.parse(value));
    }
    return { start, results };
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  }
}

// --- (i2) Contention ------------------------------------------------------------------------------

async function contention(server, { impl, limit }) {
  const { start, results } = await fleet(
    Array.from({ length: PROCESSES }, (_, index) => ({
      mode: 'contend',
      index,
      processes: PROCESSES,
      impl,
      url: server.url,
      key: 'bench',
      limit,
      loops: limit,
      holdMs: HOLD_MS,
      until: CONTEND_MS,
    })),
  );
  const end = start + CONTEND_MS;
  const perProcess = results.map(
    ({ events }) => events.filter(([, granted]) => granted >= start && granted < end).length,
  );
  const total = perProcess.reduce((a, b) => a + b, 0);
  const { cross, same, maxHeld } = handoffs(results, limit);
  cross.sort((a, b) => a - b);
  const quantile = (q) =>
    cross.length === 0 ? NaN : cross[Math.min(cross.length - 1, Math.floor(q * cross.length))];
  const perSecond = total / (CONTEND_MS / 1000);
  const fairness = Math.min(...perProcess) / Math.max(...perProcess);
  return {
    perSecond,
    fairness,
    p50: quantile(0.5),
    p99: quantile(0.99),
    crossShare: cross.length / Math.max(1, cross.length + same),
    maxHeld,
    perProcess,
    summary:
      `${s.rate(perSecond)} acq/s, fewest/most ${fairness.toFixed(2)}, handoff p50 ` +
      `${s.fixed(quantile(0.5), 2)} p99 ${s.fixed(quantile(0.99), 2)} ms`,
  };
}

/**
 * Handoffs, from every process's stamps merged: the permits freed are a line (the initial ones,
 * then each release in time order); each grant takes the earliest, and one whose request found
 * none free waited for it: the latency from that release to the grant.
 */
function handoffs(results, limit) {
  const events = [];
  results.forEach(({ events: own }, proc) => {
    for (const [asked, granted, released] of own) {
      const request = { proc, waited: false };
      events.push({ at: asked, kind: 0, request });
      events.push({ at: granted, kind: 1, request });
      events.push({ at: released, kind: 2, proc });
    }
  });
  // At one instant: releases before grants before requests (a tie is never a wait).
  events.sort((a, b) => a.at - b.at || b.kind - a.kind);
  const free = Array.from({ length: limit }, () => ({ at: -Infinity, proc: -1 }));
  let head = 0;
  let held = 0;
  let maxHeld = 0;
  const cross = [];
  let same = 0;
  for (const event of events) {
    if (event.kind === 0) event.request.waited = head >= free.length;
    else if (event.kind === 2) {
      free.push({ at: event.at, proc: event.proc });
      held--;
    } else {
      held++;
      maxHeld = Math.max(maxHeld, held);
      const unit = free[head];
      if (unit === undefined) continue; // a grant stamped before its release's stamp: none
      head++;
      if (!event.request.waited || unit.proc < 0) continue;
      if (unit.proc === event.request.proc) same++;
      else cross.push(event.at - unit.at);
    }
  }
  return { cross, same, maxHeld };
}

// --- (i3) A killed holder ---------------------------------------------------------------------------

async function killed(server, { impl, expiration }) {
  const { default: Redis } = await import('ioredis');
  const redis = new Redis(server.url);
  const key = 'bench';
  const holder = spawn(
    process.execPath,
    [
      WORKER,
      JSON.stringify({
        mode: 'hold',
        impl,
        url: server.url,
        key,
        limit: 1,
        leaseMs: LEASE_MS,
        expiration,
      }),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const waiter = await semaphores[impl](server.url, key, 1, {
    leaseMs: LEASE_MS,
    expiration,
  });
  try {
    const [line] = await once(createInterface({ input: holder.stdout }), 'line');
    const heldAt = JSON.parse(line).held;
    const heldWall = performance.timeOrigin + performance.now() - (clock() - heldAt);
    let grantedWall;
    const granted = waiter.acquire().then((release) => {
      grantedWall = performance.timeOrigin + performance.now();
      return release;
    });
    // Killed partway through its lease, after a renewal of sluice's (every lease / 3).
    await sleep(LEASE_MS / 2);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const killedWall = performance.timeOrigin + performance.now();
    let leaseEnd;
    if (impl === 'sluice') {
      const entries = await redis.zrange(`sluice:{${key}}:expiry`, 0, -1, 'WITHSCORES');
      for (let i = 0; i < entries.length; i += 2) {
        if (entries[i].includes(':')) leaseEnd = Number(entries[i + 1]);
      }
    } else if (impl === 'redis-semaphore') {
      const entries = await redis.zrange(`semaphore:${key}`, 0, -1, 'WITHSCORES');
      leaseEnd = Number(entries[1]) + LEASE_MS;
    } else if (expiration !== undefined) {
      leaseEnd = heldWall + expiration;
    }
    const cap = (leaseEnd ?? killedWall) + (leaseEnd === undefined ? NO_LEASE_WAIT_MS : 8000);
    const release = await Promise.race([granted, sleep(cap - killedWall).then(() => undefined)]);
    const back = grantedWall === undefined ? null : grantedWall - (leaseEnd ?? killedWall);
    if (release !== undefined) await release();
    return {
      back,
      leaseEnd: leaseEnd === undefined ? null : leaseEnd - killedWall,
      summary:
        back === null
          ? `not back within ${Math.round(cap - killedWall)} ms of the kill`
          : `back ${back.toFixed(1)} ms after the lease's end`,
    };
  } finally {
    if (holder.exitCode === null) holder.kill('SIGKILL');
    redis.disconnect();
    // Its line may still hold the request: closing must not wait for it.
    void waiter.close().catch(() => undefined);
  }
}

// --- (i4) The shared rate -----------------------------------------------------------------------------

async function rate(server, { impl }) {
  const { start, results } = await fleet(
    Array.from({ length: PROCESSES }, (_, index) => ({
      mode: 'rate',
      index,
      processes: PROCESSES,
      impl,
      url: server.url,
      key: 'bench',
      perSecond: PER_SECOND,
      loops: RATE_LOOPS,
      until: RATE_MS,
    })),
  );
  const starts = results.flatMap((result) => result.starts).sort((a, b) => a - b);
  const from = start + RAMP_MS;
  const to = start + RATE_MS;
  const achieved =
    starts.filter((t) => t >= from && t < to).length / ((to - from) / 1000) / PER_SECOND;
  const maxSecond = densest(starts, 1000);
  const max100 = densest(starts, 100);
  const firstStart = starts[0] - start;
  return {
    achieved,
    maxSecond,
    max100,
    firstStart,
    summary: `${s.percent(achieved)} of ${PER_SECOND}/s, max ${maxSecond} in 1 s, ${max100} in 100 ms`,
  };
}

/**
 * The median of `key`'s ratios between two cells, repetition by repetition: the cells of one
 * repetition run a minute apart at most, the repetitions several minutes apart.
 */
function paired(cell, peer, key) {
  const n = Math.min(cell.runs.length, peer.runs.length);
  return s.median(Array.from({ length: n }, (_, k) => cell.runs[k][key] / peer.runs[k][key]));
}

/** The most instants in any half-open window [t, t + width) of sorted `times`. */
function densest(times, width) {
  let most = 0;
  let j = 0;
  for (let i = 0; i < times.length; i++) {
    while (times[j] < times[i] + width && j < times.length) j++;
    most = Math.max(most, j - i);
  }
  return most;
}

// --- Report -------------------------------------------------------------------------------------------

export function report(cells) {
  const cellOf = (part, impl, extra = () => true) =>
    cells.find((c) => c.params.part === part && c.params.impl === impl && extra(c.params));
  const med = (cell, key) => (cell === undefined ? NaN : s.medianOf(cell, key));
  const targets = [];
  const sections = [];

  // (i1)
  const un = cells.find((c) => c.params.part === 'uncontended');
  const of = (name, key) => s.median(un.runs.map((run) => run.subjects[name][key]));
  const rows1 = [...UNCONTENDED, ...PINGS].map((name) => {
    const ping = name.startsWith('PING');
    return [
      ping ? `${name} (one command: the floor of a round trip)` : LABELS[name],
      s.rate(of(name, 'perSecond')),
      ping ? '1' : s.fixed(of(name, 'perAcquire'), 1),
      ping ? '—' : s.fixed(of(name, 'perRelease'), 1),
      s.ratio(of(name, 'vsPeer')),
    ];
  });
  sections.push(
    `**(i1) Uncontended**, one process, limit ${UNCONTENDED_LIMIT}: acquire + release pairs/s ` +
      `(each release awaited), and the commands the client sends per acquire and per release ` +
      `(MONITOR, ${COUNTED_PAIRS} pairs). Every implementation runs in the same process, in ` +
      `slices of ${SLICE_MS} ms taken in turn (${UNCONTENDED.length + PINGS.length} rounds, ` +
      `each begun by another): the ratio is taken within each round, then the median over the ` +
      `rounds and over the ${un.runs.length} processes. A PING row counts single commands, so a ` +
      `pair at the floor is half its rate.` +
      (un.errors.length > 0 ? ` **${un.errors.length} process(es) failed.**` : ''),
    '',
    s.table(
      ['implementation', 'pairs/s', 'round trips / acquire', '/ release', '× redis-semaphore'],
      rows1,
    ),
  );
  targets.push(
    s.target(
      of('sluice', 'vsPeer') >= 1,
      `(i1) uncontended pairs/s, sluice on node-redis ${s.rate(of('sluice', 'perSecond'))} ≥ ` +
        `redis-semaphore on ioredis ${s.rate(of('redis-semaphore', 'perSecond'))}: ` +
        `${s.ratio(of('sluice', 'vsPeer'))}`,
    ),
    s.target(
      of('sluice-ioredis', 'vsPeer') >= 1,
      `(i1) uncontended pairs/s on the same client, sluice on ioredis ` +
        `${s.rate(of('sluice-ioredis', 'perSecond'))} ≥ redis-semaphore: ` +
        `${s.ratio(of('sluice-ioredis', 'vsPeer'))}`,
    ),
    s.target(
      of('sluice', 'perAcquire') <= 1 && of('sluice', 'perRelease') <= 1,
      `(i1) sluice round trips: ${s.fixed(of('sluice', 'perAcquire'), 1)} per acquire (1), ` +
        `${s.fixed(of('sluice', 'perRelease'), 1)} per release (≤ 1)`,
    ),
  );

  // (i2)
  const rows2 = CONTENDED.map((impl) => {
    const byLimit = LIMITS.map((limit) => cellOf('contention', impl, (p) => p.limit === limit));
    const join = (f) => byLimit.map(f).join(' / ');
    return [
      LABELS[impl],
      join((c) => s.rate(med(c, 'perSecond'))),
      join((c, i) => {
        const peer = cellOf('contention', 'redis-semaphore', (p) => p.limit === LIMITS[i]);
        return s.ratio(paired(c, peer, 'perSecond'));
      }),
      join((c) => s.fixed(med(c, 'fairness'), 2)),
      join((c) => s.fixed(med(c, 'p50'), 2)),
      join((c) => s.fixed(med(c, 'p99'), 2)),
      join((c) => s.percent(med(c, 'crossShare'))),
      join((c) => String(Math.max(...c.runs.map((r) => r.maxHeld)))),
    ];
  });
  sections.push(
    '',
    `**(i2) Contention**, ${PROCESSES} processes, each with as many loops as the limit, each ` +
      `holding ${HOLD_MS} ms, for ${CONTEND_MS / 1000} s; cells list limit ${LIMITS.join(' / ')}. ` +
      `The ratio to redis-semaphore is taken within each repetition, then the median. ` +
      `Fairness is the fewest ÷ the most acquisitions of a process; a handoff runs from a ` +
      `release (its call) in one process to the grant seen in another, for requests that found ` +
      `no permit free; "cross" is the share of handoffs that went to another process; "peak" ` +
      `the most held at once by the stamps (the worst run). The floor passes tokens round the ` +
      `processes over pub/sub, a release being one PUBLISH that wakes only the next process: ` +
      `what pushing a permit to another process costs on this machine, with no limiter.`,
    '',
    s.table(
      [
        'implementation',
        'acquisitions/s',
        '× redis-semaphore',
        'fewest ÷ most',
        'handoff p50 ms',
        'p99 ms',
        'cross',
        'peak',
      ],
      rows2,
    ),
  );
  for (const limit of LIMITS) {
    const c = cellOf('contention', 'sluice', (p) => p.limit === limit);
    const peer = cellOf('contention', 'redis-semaphore', (p) => p.limit === limit);
    const floor = cellOf('contention', RING, (p) => p.limit === limit);
    const ratio = paired(c, peer, 'perSecond');
    targets.push(
      s.target(
        ratio >= 1 && med(c, 'fairness') >= FAIR_TARGET,
        `(i2) limit ${limit}: sluice ${s.rate(med(c, 'perSecond'))} acquisitions/s ≥ ` +
          `redis-semaphore ${s.rate(med(peer, 'perSecond'))} (${s.ratio(ratio)}) with fewest ÷ ` +
          `most ${s.fixed(med(c, 'fairness'), 2)} (≥ ${FAIR_TARGET})`,
      ),
      s.target(
        med(c, 'p99') <= HANDOFF_P99_TARGET,
        `(i2) limit ${limit}: sluice cross-process handoff p99 ${s.fixed(med(c, 'p99'), 2)} ms ` +
          `(≤ ${HANDOFF_P99_TARGET} ms; p50 ${s.fixed(med(c, 'p50'), 2)} ms; the pub/sub ` +
          `floor's p99 ${s.fixed(med(floor, 'p99'), 2)} ms)`,
      ),
    );
  }

  // (i3)
  const rows3 = KILLED.map((k) => {
    const cell = cellOf('killed', k.impl, (p) => p.expiration === k.expiration);
    const backs = cell.runs.map((r) => r.back);
    const never = backs.filter((b) => b === null).length;
    return [
      k.label,
      never === backs.length
        ? `never (not within ${NO_LEASE_WAIT_MS / 1000} s of the kill)`
        : s.fixed(s.median(backs.filter((b) => b !== null)), 1),
      backs.map((b) => (b === null ? '—' : b.toFixed(1))).join(', '),
    ];
  });
  sections.push(
    '',
    `**(i3) A holder killed with kill -9**, lease ${LEASE_MS} ms, limit 1, a request of another ` +
      `process waiting: ms from the lease's end (its expiry in Redis, read after the kill; ` +
      `bottleneck: the job's start + its expiration) until the waiter holds the permit.`,
    '',
    s.table(['implementation', 'back after the lease, ms (median)', 'each run'], rows3),
  );
  const sluiceKilled = cellOf('killed', 'sluice');
  const worstBack = Math.max(
    ...sluiceKilled.runs.map((r) => (r.back === null ? Infinity : r.back)),
  );
  targets.push(
    s.target(
      sluiceKilled.runs.length > 0 && worstBack <= BACK_TARGET,
      `(i3) a killed holder's permit back within ${BACK_TARGET} ms of its lease's end: worst ` +
        `of ${sluiceKilled.runs.length} runs ${s.fixed(worstBack, 1)} ms`,
    ),
  );

  // (i4)
  const rows4 = RATES.map((impl) => {
    const cell = cellOf('rate', impl);
    const worst = (key) => Math.max(...cell.runs.map((r) => r[key]));
    return [
      RATE_LABELS[impl],
      s.percent(med(cell, 'achieved')),
      `${s.int(med(cell, 'maxSecond'))} / ${s.int(worst('maxSecond'))}`,
      `${s.int(med(cell, 'max100'))} / ${s.int(worst('max100'))}`,
      s.fixed(med(cell, 'firstStart'), 1),
    ];
  });
  sections.push(
    '',
    `**(i4) Shared rate**, ${PER_SECOND}/s shared by ${PROCESSES} processes of ${RATE_LOOPS} ` +
      `waiting loops each, for ${RATE_MS / 1000} s; starts stamped on the machine's monotonic ` +
      `clock and merged. Achieved: starts in [${RAMP_MS / 1000} s, ${RATE_MS / 1000} s) per ` +
      `second; the most starts in any sliding second and any 100 ms over every start (median / ` +
      `worst run). The floor sleeps until starts fixed in advance, asking nobody: what ` +
      `timers and scheduling alone add to the windows.`,
    '',
    s.table(
      ['implementation', 'achieved / 1000/s', 'max in a second', 'max in 100 ms', 'first start ms'],
      rows4,
    ),
  );
  const r = cellOf('rate', 'sluice');
  const worstSecond = Math.max(...r.runs.map((x) => x.maxSecond));
  const worst100 = Math.max(...r.runs.map((x) => x.max100));
  const schedule = cellOf('rate', SCHEDULE);
  const floorSecond = Math.max(...schedule.runs.map((x) => x.maxSecond));
  const floor100 = Math.max(...schedule.runs.map((x) => x.max100));
  targets.push(
    s.target(
      med(r, 'achieved') >= RATE_TARGET,
      `(i4) shared rate: sluice achieves ${s.percent(med(r, 'achieved'))} of ${PER_SECOND}/s ` +
        `(≥ ${s.percent(RATE_TARGET)})`,
    ),
    s.target(
      worstSecond <= PER_SECOND && worst100 <= PER_100MS_TARGET,
      `(i4) shared rate: at most ${s.int(worstSecond)} starts in any second (≤ ${PER_SECOND}) ` +
        `and ${s.int(worst100)} in any 100 ms (≤ ${PER_100MS_TARGET}), worst run (a fixed ` +
        `schedule's floor: ${s.int(floorSecond)} and ${s.int(floor100)})`,
    ),
  );

  return { markdown: [`### ${title}`, '', ...sections].join('\n'), targets };
}
