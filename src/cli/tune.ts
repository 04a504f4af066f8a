/**
 * How the `sluice` executable tunes V8 for its own process, before a run starts. Only `bin.ts`
 * calls it: the library never changes the flags of a process it is loaded into. A setting the
 * user gave on the command line or in NODE_OPTIONS is left as it is.
 *
 * Speed. V8 optimizes a function once it has run a budget of bytecode (`--interrupt-budget`,
 * 66 KB by default) a few times over. `sluice fetch` spends a request in many small functions,
 * each called once per request, so each must be called about 2 000 times before it is optimized:
 * the first 2 000 requests of a run go at a fifth of the speed of the rest, which on a fast server
 * is a third of a 20 000-request run. A quarter of the budget gets there four times sooner, for
 * no more compiling in all; a long run ends up with the same optimized code either way.
 *
 * Memory. A run streams its input, so what it holds is bounded by what is in flight; but V8 sizes
 * its heap by how long a process has run, not by what it holds. The young generation doubles each
 * time the bytes that survived its collections add up to its size, and ~100 requests in flight
 * make every run longer than a few seconds reach its 32 MB maximum; the old generation may grow
 * to up to 4 times what survived the last full collection before the next one. So a
 * 1 000 000-line run peaked 35 MB above a 10 000-line one, with the same live data. The
 * executable stops the young generation at 8 MB, the size a short run reaches anyway, and has
 * the old generation collected once it has grown by 30%. Over 1 000 000 requests at c=100 the
 * peak RSS goes from 101 MB to 74 MB, for 2% more CPU time; a 10 000-request run is unchanged.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { every } from '../_clock.ts';

/** The interrupt budget, in bytes of bytecode: a quarter of V8's default. */
export const INTERRUPT_BUDGET = 16 * 1024;

/** How far the old generation may grow past what survived a full collection, in percent. */
export const HEAP_GROWING_PERCENT = 30;

/** The size of the young generation (V8's new space) past which it is not grown, in bytes. */
export const YOUNG_GENERATION_CAP = 8 * 1024 * 1024;

/** What `tune()` acts through: the real V8 by default, a recorder in tests. */
export interface TuneTarget {
  setFlag(flag: string): void;
  capYoungGeneration(bytes: number): void;
}

const v8Target: TuneTarget = { setFlag: setFlagsFromString, capYoungGeneration };

/** Each flag, with the pattern of the flags that mean the user has chosen that setting. */
const FLAGS: readonly [given: RegExp, flag: string][] = [
  [/interrupt[-_]budget/, `--interrupt-budget=${INTERRUPT_BUDGET}`],
  [/heap[-_]growing[-_]percent/, `--heap-growing-percent=${HEAP_GROWING_PERCENT}`],
];

/** The flags that mean the user has sized the young generation. */
const YOUNG_GENERATION_GIVEN = /semi[-_]space|max[-_]heap[-_]size/;

/** Applies, through `target`, every setting the user has not made. */
export function tune(
  execArgv: readonly string[],
  nodeOptions: string | undefined,
  target: TuneTarget = v8Target,
): void {
  const args = [...execArgv, nodeOptions ?? ''];
  const given = (pattern: RegExp): boolean => args.some((arg) => pattern.test(arg));
  for (const [pattern, flag] of FLAGS) if (!given(pattern)) target.setFlag(flag);
  if (!given(YOUNG_GENERATION_GIVEN)) target.capYoungGeneration(YOUNG_GENERATION_CAP);
}

/** V8's default factor by which the young generation grows. */
const GROWTH_FACTOR = 2;

/**
 * Keeps V8's young generation from growing past `bytes`. Its growth factor is set to V8's
 * default, or lower where that would take it past `bytes`: 1 once it is there. V8 reads the
 * factor when it grows the space. While the space can still grow, it is read after every
 * collection; once it cannot, only every second, to notice that V8 has shrunk it after an idle
 * spell and let a busy spell grow it again. (Node's report of a collection costs about 0.1 ms:
 * watching all of them costs a fast run a few per cent.) The timer does not keep the process
 * alive.
 */
export function capYoungGeneration(bytes: number): void {
  let factor = GROWTH_FACTOR;
  let watching = false;
  const update = (): void => {
    const next = Math.max(1, Math.min(GROWTH_FACTOR, Math.floor(bytes / newSpaceSize())));
    if (next !== factor) {
      factor = next;
      setFlagsFromString(`--semi-space-growth-factor=${factor}`);
    }
    if (factor > 1 === watching) return;
    watching = factor > 1;
    if (watching) observer.observe({ entryTypes: ['gc'] });
    else observer.disconnect();
  };
  const observer = new PerformanceObserver(update);
  update();
  every(1000, update, true);
}

function newSpaceSize(): number {
  for (const space of getHeapSpaceStatistics()) {
    if (space.space_name === 'new_space') return space.space_size;
  }
  return 0;
}
