/**
 * Each algorithm of `adaptive()` against a simulated resource with a hidden capacity (see
 * test/_helpers/resource.ts), in virtual time on a ManualClock, as Vector tests its ARC: a
 * limiter kept busy on the resource, the limit and the load sampled every 250 ms, and assertions
 * on the range each keeps once it has had time to settle. The resource serves C at a time for
 * 100 ms each, keeps a line of Q more, and refuses (429) beyond. Once settled, the limit must
 * stay from 90% of C to a little past C + Q (where refusals begin: those are counted apart), and
 * the resource must be kept 90% busy.
 *
 * What must hold, for every algorithm: the limit finds C and follows it when it halves and
 * doubles; the resource is kept busy (goodput) with few refusals; a rising latency does not make
 * the limit collapse; a burst of drops cuts it and it recovers; steady timeouts and a starved
 * input never make it grow; under modest overload it stays bounded; and four clients that share
 * the resource share it, none starved.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { adaptive, Limiter, type AdaptiveAlgorithm } from '../src/index.ts';
import { ManualClock } from './_helpers/clock.ts';
import { Client, Resource, run, type ResourceOptions } from './_helpers/resource.ts';

const ALGORITHMS: AdaptiveAlgorithm[] = ['aimd', 'vegas', 'gradient2'];
const LATENCY = 100;
const SAMPLE_MS = 250;

interface Point {
  at: number;
  /** The limit; attempts running at the limiter; being served at the resource. */
  limit: number;
  inFlight: number;
  served: number;
}

/** One client on one resource, sampled until `until`; `at` changes the resource on the way. */
async function scenario(
  algorithm: AdaptiveAlgorithm,
  resource: ResourceOptions,
  o: {
    until: number;
    backlog?: number;
    initial?: number;
    timeout?: number;
    at?: [number, (r: Resource) => void][];
  },
) {
  const clock = new ManualClock();
  const r = new Resource(clock, resource);
  const gate = adaptive({ algorithm, initial: o.initial ?? 5, clock });
  const limiter = new Limiter({
    concurrency: gate,
    clock,
    ...(o.timeout === undefined ? {} : { timeout: o.timeout }),
  });
  const client = new Client(limiter, (signal) => r.call(signal), o.backlog ?? 100);
  const points: Point[] = [];
  const changes = [...(o.at ?? []), [o.until, () => undefined] as [number, () => void]];
  for (const [at, change] of changes) {
    const samples = await run(clock, at, SAMPLE_MS, () => ({
      limit: gate.limit,
      inFlight: limiter.activeCount,
      served: r.active,
    }));
    points.push(...samples.map(({ at, value }) => ({ at, ...value })));
    change(r);
  }
  client.stop();
  return { points, resource: r, gate, client };
}

/** The points in [from, to). */
function between(points: Point[], from: number, to: number): Point[] {
  return points.filter((p) => p.at >= from && p.at < to);
}

function range(points: Point[], key: keyof Point): [number, number] {
  const values = points.map((p) => p[key]);
  return [Math.min(...values), Math.max(...values)];
}

function mean(points: Point[], key: keyof Point): number {
  return points.reduce((sum, p) => sum + p[key], 0) / points.length;
}

/** Asserts that over `points` the limit stays in [lo, hi] and C is kept busy (90% or more). */
function settled(points: Point[], capacity: number, lo: number, hi: number, what: string): void {
  const [min, max] = range(points, 'limit');
  assert.ok(
    min >= lo && max <= hi,
    `${what}: the limit ranged ${min}–${max}, not within ${lo}–${hi}`,
  );
  const busy = mean(points, 'served');
  assert.ok(busy >= 0.9 * capacity, `${what}: ${busy.toFixed(1)} of ${capacity} busy on average`);
}

/** Asserts that at most 2% of the requests were refused. */
function fewRefused(r: Resource, what: string): void {
  const share = r.refused / r.calls;
  assert.ok(
    share <= 0.02,
    `${what}: ${(share * 100).toFixed(2)}% refused (${r.refused} of ${r.calls})`,
  );
}

for (const algorithm of ALGORITHMS) {
  describe(`adaptive({ algorithm: '${algorithm}' }) against a resource of hidden capacity`, () => {
    it('finds a steady capacity, and keeps it busy with few refusals', async () => {
      const { points, resource } = await scenario(
        algorithm,
        { capacity: 16, latency: LATENCY, queue: 8 },
        { until: 30_000 },
      );
      settled(between(points, 5_000, 30_000), 16, 14, 26, 'C = 16');
      fewRefused(resource, 'C = 16');
    });

    it('follows a capacity that halves, then doubles, within 5 s of each change', async () => {
      const { points, resource } = await scenario(
        algorithm,
        { capacity: 16, latency: LATENCY, queue: 8 },
        {
          until: 60_000,
          at: [
            [
              20_000,
              (r) => {
                r.setCapacity(8);
              },
            ],
            [
              40_000,
              (r) => {
                r.setCapacity(16);
              },
            ],
          ],
        },
      );
      settled(between(points, 5_000, 20_000), 16, 14, 26, 'C = 16');
      settled(between(points, 25_000, 40_000), 8, 7, 18, 'C halved to 8');
      settled(between(points, 45_000, 60_000), 16, 14, 26, 'C doubled to 16');
      fewRefused(resource, 'over the run');
    });

    it('does not collapse while the latency rises (the server slows: 100 ms to 400 ms in 60 s)', async () => {
      const { points, gate } = await scenario(
        algorithm,
        { capacity: 16, latency: (now) => LATENCY + now / 200, queue: 8 },
        { until: 60_000 },
      );
      settled(between(points, 5_000, 60_000), 16, 14, 26, 'a rising latency');
      const baseline = gate.stats().baselineMs!;
      assert.ok(baseline > 300, `the no-load latency followed the server: ${baseline} ms`);
    });

    it('backs off through a burst of drops (2 s of 429s), and recovers within 5 s', async () => {
      const burst = (now: number) => now >= 10_000 && now < 12_000;
      const { points } = await scenario(
        algorithm,
        { capacity: 16, latency: LATENCY, queue: 8, refuseAll: burst, refuseAfter: 5 },
        { until: 30_000 },
      );
      const [, during] = range(between(points, 11_000, 12_000), 'limit');
      assert.ok(during <= 2, `the limit fell to ${during} during the burst`);
      settled(between(points, 17_000, 30_000), 16, 14, 26, 'after the burst');
    });

    it('never grows under steady timeouts (one request in ten never answered)', async () => {
      const { points, client } = await scenario(
        algorithm,
        { capacity: 16, latency: LATENCY, queue: 8, hang: (n) => n % 10 === 0 },
        { until: 30_000, initial: 10, timeout: 500 },
      );
      // From the first timeout on (at 500 ms), the limit never goes above where it started.
      const [, max] = range(between(points, 1_000, 30_000), 'limit');
      assert.ok(max <= 10, `the limit reached ${max}`);
      assert.ok(client.failed > 50);
    });

    it('never grows while the work is starved of input (4 at a time, under a limit of 10)', async () => {
      const { points, client } = await scenario(
        algorithm,
        { capacity: 16, latency: LATENCY, queue: 8 },
        { until: 30_000, initial: 10, backlog: 4 },
      );
      assert.deepEqual(range(points, 'limit'), [10, 10]);
      assert.deepEqual(range(between(points, 1_000, 30_000), 'inFlight'), [4, 4]);
      assert.ok(client.ok > 1000);
    });

    it('stays bounded under modest overload (a line without end, never a refusal)', async () => {
      const { points } = await scenario(
        algorithm,
        { capacity: 16, latency: LATENCY, queue: Infinity },
        { until: 120_000, backlog: 200 },
      );
      const [, max] = range(between(points, 10_000, 120_000), 'limit');
      assert.ok(max <= 32, `the limit reached ${max}`);
      const late = between(points, 80_000, 120_000);
      assert.ok(range(late, 'limit')[1] <= 32, 'and does not creep up');
    });

    it('shares the resource among 4 clients: busy, few refusals, none starved', async () => {
      const clock = new ManualClock();
      const resource = new Resource(clock, { capacity: 32, latency: LATENCY, queue: 16 });
      const gates = [0, 1, 2, 3].map(() => adaptive({ algorithm, initial: 5, clock }));
      const clients = gates.map(
        (gate) => new Client(new Limiter({ concurrency: gate, clock }), () => resource.call(), 100),
      );
      const samples = await run(clock, 60_000, SAMPLE_MS, () => ({
        limits: gates.map((gate) => gate.limit),
        served: resource.active,
      }));
      for (const client of clients) client.stop();
      const late = samples.filter((s) => s.at >= 10_000);
      const busy = late.reduce((sum, s) => sum + s.value.served, 0) / late.length;
      assert.ok(busy >= 0.9 * 32, `${busy.toFixed(1)} of 32 busy on average`);
      fewRefused(resource, '4 clients');
      const done = clients.map((client) => client.ok);
      const fair = done.reduce((a, b) => a + b, 0) / done.length;
      for (const [i, n] of done.entries())
        assert.ok(
          n >= 0.5 * fair,
          `client ${i} completed ${n}, under half of a fair share (${fair})`,
        );
      const total = Math.max(...late.map((s) => s.value.limits.reduce((a, b) => a + b, 0)));
      assert.ok(total <= 32 + 16 + 8, `together, the limits reached ${total}`);
    });
  });
}
