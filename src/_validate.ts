/**
 * Argument checks shared by every constructor and option bag, so that each bad input gets the same
 * shape of message: "Expected `concurrency` to be an integer >= 1 or Infinity, got `0` (number)".
 */

/** Describes a value for an error message: its printed form and its type. */
export function describe(value: unknown): string {
  let shown: string;
  if (typeof value === 'string') shown = JSON.stringify(value);
  else if (typeof value === 'bigint') shown = `${value}n`;
  else if (typeof value === 'function')
    shown = value.name === '' ? '[function]' : `[function ${value.name}]`;
  else if (typeof value === 'symbol') shown = value.toString();
  else if (value === null || typeof value !== 'object') shown = String(value);
  else if (Array.isArray(value)) shown = '[array]';
  else shown = '[object]';
  const type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return `\`${shown}\` (${type})`;
}

function fail(Kind: typeof TypeError, name: string, expected: string, value: unknown): never {
  throw new Kind(`Expected \`${name}\` to be ${expected}, got ${describe(value)}`);
}

/** What {@link integer} expects, in words. */
function integerExpected(min: number, infinity: boolean): string {
  return `an integer >= ${min}${infinity ? ' or Infinity' : ''}`;
}

/**
 * Throws unless `value` is an integer >= `min`, or Infinity when `infinity` is set. Every count
 * (a capacity, a concurrency, a weight, a queue length) goes through here: past
 * `Number.MAX_SAFE_INTEGER`, `n + 1 === n`, and a gate would grant past its capacity.
 */
export function integer(name: string, value: unknown, min: number, infinity = false): number {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    fail(TypeError, name, integerExpected(min, infinity), value);
  }
  if (value === Infinity ? !infinity : !Number.isSafeInteger(value) || value < min) {
    const expected = integerExpected(min, infinity);
    if (Number.isInteger(value) && value > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(
        `Expected \`${name}\` to be ${expected}, got ${describe(value)}: above Number.MAX_SAFE_INTEGER (${Number.MAX_SAFE_INTEGER}), where integers are no longer exact`,
      );
    }
    fail(RangeError, name, expected, value);
  }
  return value;
}

/**
 * Throws a TypeError for `name`, expected to be what {@link integer} checks, when what came is
 * best said in words (`got`: "an array").
 */
export function notInteger(name: string, min: number, infinity: boolean, got: string): never {
  throw new TypeError(`Expected \`${name}\` to be ${integerExpected(min, infinity)}, got ${got}`);
}

/** Throws unless `value` is a number >= `min` (Infinity included when `infinity` is set). */
export function number(name: string, value: unknown, min: number, infinity = false): number {
  const expected = `a number >= ${min}${infinity ? ' or Infinity' : ''}`;
  if (typeof value !== 'number' || Number.isNaN(value)) fail(TypeError, name, expected, value);
  if (value < min || (value === Infinity && !infinity)) fail(RangeError, name, expected, value);
  return value;
}

/** Throws unless `value` is a finite number. */
export function finite(name: string, value: unknown): number {
  if (typeof value !== 'number' || Number.isNaN(value))
    fail(TypeError, name, 'a finite number', value);
  if (!Number.isFinite(value)) fail(RangeError, name, 'a finite number', value);
  return value;
}

/** Throws unless `value` is a function. */
export function fn(name: string, value: unknown): void {
  if (typeof value !== 'function') fail(TypeError, name, 'a function', value);
}

/** Throws unless `value` is a boolean. */
export function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') fail(TypeError, name, 'a boolean', value);
  return value;
}

/** Throws unless `value` is an AbortSignal (or undefined). */
export function signal(name: string, value: unknown): AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) {
    fail(TypeError, name, 'an AbortSignal', value);
  }
  return value;
}

/** Throws unless `value` is a plain options object (or undefined). */
export function options(name: string, value: unknown): void {
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    fail(TypeError, name, 'an object', value);
  }
}

/** Throws unless `value` is one of `choices`. */
export function oneOf<T extends string>(name: string, value: unknown, choices: readonly T[]): T {
  if (!choices.includes(value as T)) {
    fail(TypeError, name, `one of ${choices.map((c) => `'${c}'`).join(', ')}`, value);
  }
  return value as T;
}

/** Whether `value` is a promise or a promise-like (has a `then` method). */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

/**
 * Throws `error` again on its own, as an uncaught exception (as a timer's would be), out of the
 * code that met it: what a caller's listener, or a gate's permit, threw is their fault, and the
 * code that called them goes on as it would have.
 */
export function rethrowLater(error: unknown): void {
  process.nextTick(rethrow, error);
}

function rethrow(error: unknown): never {
  throw error;
}
