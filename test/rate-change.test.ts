/**
 * A rate changed at run time keeps every window: random arrivals (waits, tryTakes, weighted
 * reservations and their cancellations) with rate changes at random instants on the injected
 * clock. Every start is held to each rate in force when it was admitted (a reservation: when it
 * was booked), in every window of that rate's interval that contains it, counting every start
 * around it, those before the change included.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RateLimiter, type Reservation } from '../src/index.ts';
import { flush, ManualClock } from './_helpers/clock.ts';

type Kind = 'spaced' | 'sliding';

interface RateSet {
  rates: { limit: number; interval: number }[];
}

interface Start {
  at: number;
  weight: number;
  /** The rates in force when it was admitted. */
  under: RateSet;
  /** Its place in the order of admissions (a reservation's: its booking). */
  seq: number;
}

interface Op {
  /** Milliseconds after the previous op. */
  after: number;
  kind: 'wait' | 'tryTake' | 'reserve' | 'cancel' | 'change';
  weightSeed: number;
  /** For a change: the new rates. */
  rates: RateSet;
}

const rateSetArb: fc.Arbitrary<RateSet> = fc.record({
  rates: fc.array(
    fc.record({
      limit: fc.integer({ min: 1, max: 6 }),
      interval: fc.constantFrom(4, 8, 10, 20, 1000 / 3, 50),
    }),
    { minLength: 1, maxLength: 2 },
  ),
});

const opArb: fc.Arbitrary<Op> = fc.record({
  after: fc.oneof(fc.constantFrom(0, 0, 1, 2), fc.double({ min: 0, max: 12, noNaN: true })),
  kind: fc.constantFrom(
    'wait' as const,
    'wait' as const,
    'tryTake' as const,
    'reserve' as const,
    'cancel' as const,
    'change' as const,
  ),
  weightSeed: fc.nat(),
  rates: rateSetArb,
});

/** The heaviest start every rate of the set admits at once (a burst of 1 on a spaced window). */
function heaviest(kind: Kind, set: RateSet): number {
  return kind === 'sliding' ? Math.min(...set.rates.map((rate) => rate.limit)) : 1;
}

/**
 * The most a window of `interval` containing `start` holds, counting weights, of the starts
 * admitted no later than it.
 */
function fullestAround(starts: readonly Start[], start: Start, interval: number): number {
  const known = starts.filter((other) => other.seq <= start.seq);
  let most = 0;
  for (const first of known) {
    // Windows [x, x + interval) containing the start; the fullest begins at a start.
    if (first.at > start.at || first.at + interval <= start.at) continue;
    let held = 0;
    for (const other of known) {
      if (other.at >= first.at && other.at < first.at + interval) held += other.weight;
    }
    most = Math.max(most, held);
  }
  return most;
}

function describeStarts(starts: readonly Start[]): string {
  return starts.map((start) => `${start.at.toFixed(3)}×${start.weight}`).join(', ');
}

describe('RateLimiter rate changes', () => {
  for (const kind of ['spaced', 'sliding'] as const) {
    it(`keep every window's bound across changes at random instants (${kind})`, async () => {
      await fc.assert(
        fc.asyncProperty(
          rateSetArb,
          fc.array(opArb, { minLength: 1, maxLength: 40 }),
          async (initial, ops) => {
            const clock = new ManualClock();
            const limiter = new RateLimiter({
              rate: initial.rates,
              clock,
              ...(kind === 'sliding' ? { window: 'sliding' as const } : {}),
            });
            let current = initial;
            let seq = 0;
            const starts: Start[] = [];
            const reservations: { reservation: Reservation; start: Start }[] = [];
            const waits: Promise<void>[] = [];
            for (const op of ops) {
              await clock.advanceTo(clock.now() + op.after);
              const weight = 1 + (op.weightSeed % heaviest(kind, current));
              const now = clock.now();
              switch (op.kind) {
                case 'tryTake':
                  if (limiter.tryTake(weight))
                    starts.push({ at: now, weight, under: current, seq: seq++ });
                  break;
                case 'reserve': {
                  const reservation = limiter.reserve(weight);
                  const start = { at: reservation.at, weight, under: current, seq: seq++ };
                  starts.push(start);
                  reservations.push({ reservation, start });
                  break;
                }
                case 'cancel': {
                  const booked = reservations[op.weightSeed % Math.max(1, reservations.length)];
                  if (booked?.reservation.cancel() === true) {
                    starts.splice(starts.indexOf(booked.start), 1);
                  }
                  break;
                }
                case 'change':
                  limiter.rate = op.rates.rates;
                  current = op.rates;
                  break;
                case 'wait':
                  waits.push(
                    limiter.wait({ weight }).then(
                      () => {
                        starts.push({ at: clock.now(), weight, under: current, seq: seq++ });
                      },
                      (error: unknown) => {
                        // Heavier than a lowered sliding limit: refused, as it could never fit.
                        assert.ok(error instanceof RangeError, String(error));
                      },
                    ),
                  );
                  break;
              }
              await flush();
            }
            await flush();
            while (clock.nextAt !== undefined) await clock.advanceTo(clock.nextAt);
            await Promise.all(waits);
            for (const start of starts) {
              for (const rate of start.under.rates) {
                const held = fullestAround(starts, start, rate.interval);
                assert.ok(
                  held <= rate.limit,
                  `${held} starts in a window of ${rate.interval} ms around ${start.at.toFixed(3)}, limit ${rate.limit}: ${describeStarts(starts)}`,
                );
              }
            }
          },
        ),
        { numRuns: 400 },
      );
    });
  }
});
