/**
 * How the `sluice` executable tunes V8 for its own process, before a run starts. Only `bin.ts`
 * calls it: the library never changes the flags of a process it is loaded into.
 *
 * V8 optimizes a function once it has run a budget of bytecode (`--interrupt-budget`, 66 KB by
 * default) a few times over. `sluice fetch` spends a request in many small functions, each
 * called once per request, so each must be called about 2 000 times before it is optimized: the
 * first 2 000 requests of a run go at a fifth of the speed of the rest, which on a fast server
 * is a third of a 20 000-request run. A quarter of the budget gets there four times sooner, for
 * no more compiling in all; a long run ends up with the same optimized code either way.
 */
import { setFlagsFromString } from 'node:v8';

/** The interrupt budget, in bytes of bytecode: a quarter of V8's default. */
export const INTERRUPT_BUDGET = 16 * 1024;

/**
 * Sets the flags (through `set`) and returns them. A budget already given on the command line or
 * in NODE_OPTIONS is left as it is.
 */
export function tune(
  execArgv: readonly string[],
  nodeOptions: string | undefined,
  set: (flag: string) => void = setFlagsFromString,
): string[] {
  const given = [...execArgv, nodeOptions ?? ''].some((arg) => /interrupt[-_]budget/.test(arg));
  const flags = given ? [] : [`--interrupt-budget=${INTERRUPT_BUDGET}`];
  for (const flag of flags) set(flag);
  return flags;
}
