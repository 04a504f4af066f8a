/**
 * JSON over bytes, for response bodies that go into records without ever becoming JS strings as
 * large as themselves: a 100 MB body as a string, then parsed, then stringified into its record,
 * held it six times over. Here the body stays the bytes it came as, and its record is written
 * from them.
 *
 * - {@link isJson}: whether UTF-8 bytes are one JSON text, exactly as `JSON.parse()` decides (the
 *   RFC 8259 grammar); checked against it by a property test.
 * - {@link jsonStringLength} and {@link writeJsonString}: the bytes of `JSON.stringify(text)`
 *   for the text that valid UTF-8 bytes spell, the text made a piece at a time.
 * - {@link writeOneLine}: a JSON text with its line breaks (whitespace between tokens: valid JSON
 *   has no other) turned into spaces, so that it fits in a JSONL record.
 */

const SPACE = 0x20;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

const IN_ARRAY = 1;
const IN_OBJECT = 2;

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

/** What may follow a backslash in a JSON string (`u` aside). */
const SIMPLE_ESCAPES = new Set([QUOTE, BACKSLASH, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);

function skipSpace(b: Uint8Array, i: number): number {
  let c = b[i];
  while (c === SPACE || c === LF || c === CR || c === TAB) c = b[++i];
  return i;
}

function isDigit(c: number | undefined): boolean {
  return c !== undefined && c >= ZERO && c <= NINE;
}

function isHex(c: number | undefined): boolean {
  return c !== undefined && (isDigit(c) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66));
}

/** Where the string starting at `b[i]` (a quote) ends, past its closing quote; -1 if it is bad. */
function skipString(b: Uint8Array, i: number): number {
  const n = b.length;
  let j = i + 1;
  while (j < n) {
    const c = b[j]!;
    if (c > BACKSLASH) {
      j++; // the most common case first: letters, and every byte of a multi-byte character
    } else if (c === QUOTE) {
      return j + 1;
    } else if (c === BACKSLASH) {
      const e = j + 1 < n ? b[j + 1]! : -1;
      if (e === 0x75) {
        if (!(isHex(b[j + 2]) && isHex(b[j + 3]) && isHex(b[j + 4]) && isHex(b[j + 5]))) return -1;
        j += 6;
      } else if (SIMPLE_ESCAPES.has(e)) {
        j += 2;
      } else {
        return -1;
      }
    } else if (c < SPACE) {
      return -1;
    } else {
      j++;
    }
  }
  return -1;
}

/** Where the number starting at `b[i]` ends; -1 if it is bad. */
function skipNumber(b: Uint8Array, i: number): number {
  let j = i;
  if (b[j] === MINUS) j++;
  if (b[j] === ZERO) j++;
  else if (isDigit(b[j])) while (isDigit(b[j])) j++;
  else return -1;
  if (b[j] === DOT) {
    if (!isDigit(b[++j])) return -1;
    while (isDigit(b[j])) j++;
  }
  if (b[j] === 0x65 || b[j] === 0x45) {
    j++;
    if (b[j] === PLUS || b[j] === MINUS) j++;
    if (!isDigit(b[j])) return -1;
    while (isDigit(b[j])) j++;
  }
  return j;
}

/** Where the literal `word` at `b[i]` ends; -1 if it is not there. */
function skipWord(b: Uint8Array, i: number, word: Buffer): number {
  for (let k = 0; k < word.length; k++) if (b[i + k] !== word[k]) return -1;
  return i + word.length;
}

/**
 * Whether `b` (valid UTF-8) is one JSON text, as `JSON.parse()` would take it: iterative, so
 * that a body of a million nested arrays costs a byte of stack each, not a call frame.
 */
export function isJson(b: Uint8Array): boolean {
  let stack = new Uint8Array(64);
  let depth = 0;
  let i = skipSpace(b, 0);
  for (;;) {
    // A value starts at i (containers open here, and their first member follows).
    const c = b[i];
    if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      i = skipSpace(b, i + 1);
      const empty = b[i] === (c === OPEN_OBJECT ? CLOSE_OBJECT : CLOSE_ARRAY);
      if (empty) i++;
      else {
        if (depth === stack.length) {
          const deeper = new Uint8Array(2 * depth);
          deeper.set(stack);
          stack = deeper;
        }
        stack[depth++] = c === OPEN_OBJECT ? IN_OBJECT : IN_ARRAY;
        if (c === OPEN_OBJECT) {
          i = skipKey(b, i);
          if (i < 0) return false;
        }
        continue;
      }
    } else if (c === QUOTE) i = skipString(b, i);
    else if (c === MINUS || isDigit(c)) i = skipNumber(b, i);
    else if (c === 0x74) i = skipWord(b, i, TRUE);
    else if (c === 0x66) i = skipWord(b, i, FALSE);
    else if (c === 0x6e) i = skipWord(b, i, NULL);
    else return false;
    if (i < 0) return false;
    // After a value: a comma and the next member, or the end of containers, or of the text.
    for (;;) {
      i = skipSpace(b, i);
      if (depth === 0) return i === b.length;
      const inside = stack[depth - 1];
      const next = b[i];
      if (next === COMMA) {
        i = skipSpace(b, i + 1);
        if (inside === IN_OBJECT) {
          i = skipKey(b, i);
          if (i < 0) return false;
        }
        break;
      }
      if (next !== (inside === IN_OBJECT ? CLOSE_OBJECT : CLOSE_ARRAY)) return false;
      depth--;
      i++;
    }
  }
}

/** Skips `"key" :` and the space after it; -1 if it is not there. */
function skipKey(b: Uint8Array, i: number): number {
  if (b[i] !== QUOTE) return -1;
  const end = skipString(b, i);
  if (end < 0) return -1;
  const colon = skipSpace(b, end);
  return b[colon] === COLON ? skipSpace(b, colon + 1) : -1;
}

/** How many bytes more than itself each byte takes in a JSON string: `\n`, `\"`, `\u001b`. */
const EXTRA = new Uint8Array(256);
for (let c = 0; c < SPACE; c++) EXTRA[c] = 5;
for (const c of [0x08, TAB, LF, 0x0c, CR, QUOTE, BACKSLASH]) EXTRA[c] = 1;

/** Bytes of text turned into a string at a time by {@link writeJsonString}. */
const PIECE = 64 * 1024;

/** The length in bytes of `JSON.stringify(b.toString())`, quotes included (`b`: valid UTF-8). */
export function jsonStringLength(b: Uint8Array): number {
  const n = b.length;
  let length = n + 2;
  let i = 0;
  // A byte at a time up to a 4-byte boundary, then a word at a time: the bytes of a word are
  // looked at only when one of them may need an escape (SWAR: a byte < 0x20, or '"' or '\'
  // turned into a zero byte; a false alarm costs a look, never a miss).
  const head = Math.min(n, (4 - (b.byteOffset & 3)) & 3);
  for (; i < head; i++) length += EXTRA[b[i]!]!;
  const words = (n - i) >>> 2;
  if (words > 0) {
    const w = new Uint32Array(b.buffer, b.byteOffset + i, words);
    for (let k = 0; k < words; k++) {
      const x = w[k]!;
      const quote = x ^ 0x22222222;
      const backslash = x ^ 0x5c5c5c5c;
      const marks =
        ((x - 0x20202020) & ~x) |
        ((quote - 0x01010101) & ~quote) |
        ((backslash - 0x01010101) & ~backslash);
      if ((marks & 0x80808080) !== 0) {
        const at = i + 4 * k;
        length += EXTRA[b[at]!]! + EXTRA[b[at + 1]!]! + EXTRA[b[at + 2]!]! + EXTRA[b[at + 3]!]!;
      }
    }
    i += 4 * words;
  }
  for (; i < n; i++) length += EXTRA[b[i]!]!;
  return length;
}

/**
 * Writes `JSON.stringify(b.toString())` as UTF-8 into `target` at `at` (which has room for
 * {@link jsonStringLength} bytes); returns where it ends. The engine escapes, a piece at a time
 * (cut between characters): no string as large as the body.
 */
export function writeJsonString(b: Uint8Array, target: Buffer, at: number): number {
  const bytes = Buffer.from(b.buffer, b.byteOffset, b.length);
  let out = at;
  target[out++] = QUOTE;
  for (let from = 0; from < bytes.length;) {
    let to = Math.min(bytes.length, from + PIECE);
    while (to < bytes.length && (bytes[to]! & 0xc0) === 0x80) to--; // not inside a character
    const piece = JSON.stringify(bytes.toString('utf8', from, to));
    out += target.write(piece.slice(1, -1), out, 'utf8');
    from = to;
  }
  target[out++] = QUOTE;
  return out;
}

/**
 * Copies a JSON text into `target` at `at`, its CRs and LFs as spaces: in valid JSON they can
 * only be whitespace between tokens (a string holds them escaped), so the value is the same.
 */
export function writeOneLine(b: Uint8Array, target: Uint8Array, at: number): void {
  target.set(b, at);
  const view = Buffer.from(target.buffer, target.byteOffset + at, b.length);
  for (let i = view.indexOf(LF); i !== -1; i = view.indexOf(LF, i + 1)) view[i] = SPACE;
  for (let i = view.indexOf(CR); i !== -1; i = view.indexOf(CR, i + 1)) view[i] = SPACE;
}
