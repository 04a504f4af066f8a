/**
 * `sluice fetch --body`: a response body as its record shows it. The bytes received (at most
 * `--max-body` of them: the HTTP client keeps no more) are decoded when their Content-Encoding
 * is gzip, deflate or br (streaming, and cut at `--max-body` decoded bytes: a small body that
 * decodes to gigabytes costs no more than the cap), credentials are masked, and then the body is
 * written into the record as:
 * - the JSON itself, when the Content-Type says JSON and it is (line breaks as spaces);
 * - a JSON string, when it is UTF-8;
 * - base64 otherwise (`"bodyEncoding": "base64"`), as is a body whose encoding could not be
 *   undone: never text with U+FFFD in place of bytes it could not read.
 * A body that was cut says `"truncated": true`.
 *
 * The body never becomes a JS string as large as itself: its record is one Buffer, written from
 * the kept bytes a piece at a time, so a body costs about twice its size (its bytes, and its
 * record) at most.
 */
import { isUtf8 } from 'node:buffer';
import type { Transform } from 'node:stream';
import {
  constants,
  createBrotliDecompress,
  createGunzip,
  createInflate,
  createInflateRaw,
} from 'node:zlib';
import { KeptBody } from '../http/_cli.ts';
import { isJson, jsonStringLength, writeJsonString, writeOneLine } from './json-bytes.ts';
import { REDACTED } from './report-safe.ts';

/** A record's body, ready to be written into it. */
export interface BodyField {
  /** The JSON value's length in bytes. */
  readonly length: number;
  /** Writes the JSON value into `target` at `at`. */
  write(target: Buffer, at: number): void;
  /** Whether the value is the body in base64. */
  readonly base64: boolean;
  /** Whether the body was cut at `--max-body`. */
  readonly truncated: boolean;
}

type Headers = Record<string, string | string[] | undefined>;

/** What decoding with zlib's streams supports, by Content-Encoding token. */
const CODINGS = new Set(['gzip', 'x-gzip', 'deflate', 'br']);
const REDACTED_BYTES = Buffer.from(REDACTED);
const CHUNK = 64 * 1024;

/**
 * How many bytes of a body to receive and keep for a record of at most `max`: a few more than
 * `max`, so that an encoded body that barely compresses (or grows: stored deflate blocks, random
 * bytes gzipped) still decodes to `max` bytes.
 */
export function keptLimit(max: number): number {
  return max + Math.ceil(max / 1024) + 64 * 1024;
}

/**
 * The record's body for `kept` (the first {@link keptLimit} bytes of a body of `received`
 * bytes): synchronous unless it has to be decoded.
 */
export function bodyField(
  kept: Buffer,
  received: number,
  headers: Headers,
  secrets: readonly string[],
  max: number,
): BodyField | Promise<BodyField> {
  const codings = contentCodings(headers['content-encoding']);
  const json = isJsonType(headers['content-type']);
  // The body as it came, cut at `max`.
  const cut = received > max;
  const asReceived = cut ? kept.subarray(0, max) : kept;
  if (codings.length === 0 || kept.length === 0) return field(asReceived, cut, json, secrets);
  if (!codings.every((coding) => CODINGS.has(coding)))
    return base64(mask(asReceived, secrets, cut), cut);
  return decode(kept, codings, max, received > kept.length).then(
    (decoded) => field(decoded.body, decoded.cut, json, secrets),
    // Not what it said it was: the bytes as they came.
    () => base64(mask(asReceived, secrets, cut), cut),
  );
}

/** The codings applied to a body, in the order they were applied ("identity" left out). */
function contentCodings(header: string | string[] | undefined): string[] {
  if (header === undefined) return [];
  const text = Array.isArray(header) ? header.join(',') : header;
  return text
    .split(',')
    .map((token) => token.trim().toLowerCase())
    .filter((token) => token !== '' && token !== 'identity');
}

function isJsonType(header: string | string[] | undefined): boolean {
  const type = Array.isArray(header) ? header[0] : header;
  return type !== undefined && /\bjson\b|\+json\b/i.test(type);
}

/** A body as it is to be recorded: JSON, a string, or base64. */
function field(body: Buffer, cut: boolean, json: boolean, secrets: readonly string[]): BodyField {
  const masked = mask(body, secrets, cut);
  // A character cut in two at the end is left out, rather than making the whole body base64.
  const text = cut ? masked.subarray(0, wholeCharacters(masked)) : masked;
  if (!isUtf8(text)) return base64(masked, cut);
  if (json && !cut && isJson(text)) {
    return {
      length: text.length,
      write: (target, at) => {
        writeOneLine(text, target, at);
      },
      base64: false,
      truncated: false,
    };
  }
  return {
    length: jsonStringLength(text),
    write: (target, at) => writeJsonString(text, target, at),
    base64: false,
    truncated: cut,
  };
}

function base64(body: Buffer, cut: boolean): BodyField {
  return {
    length: 2 + 4 * Math.ceil(body.length / 3),
    write: (target, at) => {
      // In pieces a multiple of 3 bytes long: no string as large as the body.
      let out = at;
      target[out++] = 0x22;
      for (let from = 0; from < body.length; from += 3 * CHUNK) {
        const piece = body.toString('base64', from, Math.min(body.length, from + 3 * CHUNK));
        out += target.write(piece, out, 'latin1');
      }
      target[out] = 0x22;
    },
    base64: true,
    truncated: cut,
  };
}

/**
 * Where the last whole UTF-8 character of `b` ends: `b.length`, or before a sequence that the
 * cut left incomplete.
 */
function wholeCharacters(b: Buffer): number {
  for (let back = 1; back <= Math.min(3, b.length); back++) {
    const byte = b[b.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: its lead is further back
    const needs = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return needs > back ? b.length - back : b.length;
  }
  return b.length;
}

/**
 * `body` with every secret (and its JSON-escaped form) replaced by `[redacted]`, as
 * `maskValues()` does to text; and, for a body that was cut, a secret's start left at its end.
 * The same Buffer when there is nothing to mask.
 */
function mask(body: Buffer, secrets: readonly string[], cut: boolean): Buffer {
  let out = body;
  for (const secret of secrets) {
    if (secret.length < 4) continue; // as maskValues(): masking every "1" would hide nothing
    const escaped = JSON.stringify(secret).slice(1, -1);
    for (const form of escaped === secret ? [secret] : [secret, escaped]) {
      const bytes = Buffer.from(form);
      out = replaceAll(out, bytes);
      if (cut) out = replaceCutEnd(out, bytes);
    }
  }
  return out;
}

function replaceAll(body: Buffer, secret: Buffer): Buffer {
  let at = body.indexOf(secret);
  if (at === -1) return body;
  const pieces: Buffer[] = [];
  let from = 0;
  for (; at !== -1; at = body.indexOf(secret, from)) {
    pieces.push(body.subarray(from, at), REDACTED_BYTES);
    from = at + secret.length;
  }
  pieces.push(body.subarray(from));
  return Buffer.concat(pieces);
}

/** Masks the longest start of `secret` (4 bytes or more) that the body ends with. */
function replaceCutEnd(body: Buffer, secret: Buffer): Buffer {
  for (let n = Math.min(secret.length - 1, body.length); n >= 4; n--) {
    if (body.subarray(body.length - n).equals(secret.subarray(0, n)))
      return Buffer.concat([body.subarray(0, body.length - n), REDACTED_BYTES]);
  }
  return body;
}

/**
 * Undoes `codings` (applied in that order) on `raw`, keeping at most `max` decoded bytes: the
 * decoders stop as soon as more would come. `rawCut`: the encoded bytes are not all there, so
 * the decoders take what they have rather than fail at its end (and the body is cut). Rejects if
 * the bytes are not what the codings say.
 */
function decode(
  raw: Buffer,
  codings: string[],
  max: number,
  rawCut: boolean,
): Promise<{ body: Buffer; cut: boolean }> {
  const kept = new KeptBody(max);
  const decoders = [...codings]
    .reverse()
    .map((coding, i): Transform => decoder(coding, i === 0 ? raw : undefined, rawCut));
  const last = decoders.at(-1)!;
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (error?: Error): void => {
      if (settled) return;
      settled = true;
      for (const stream of decoders) stream.destroy(); // the cap: nothing more is decoded
      if (error === undefined || kept.cut) resolve({ body: kept.bytes(), cut: kept.cut || rawCut });
      else reject(error);
    };
    for (let i = 1; i < decoders.length; i++) decoders[i - 1]!.pipe(decoders[i]!);
    for (const stream of decoders) stream.on('error', finish);
    last.on('data', (chunk: Buffer) => {
      if (settled) return;
      kept.add(chunk);
      if (kept.cut) finish();
    });
    last.on('end', () => {
      finish();
    });
    decoders[0]!.end(raw);
  });
}

function decoder(coding: string, first: Buffer | undefined, rawCut: boolean): Transform {
  const options = {
    chunkSize: CHUNK,
    // A body cut short ends where it ends, without an "unexpected end of file".
    finishFlush: rawCut ? constants.Z_SYNC_FLUSH : constants.Z_FINISH,
  };
  if (coding === 'br')
    return createBrotliDecompress({
      chunkSize: CHUNK,
      finishFlush: rawCut ? constants.BROTLI_OPERATION_FLUSH : constants.BROTLI_OPERATION_FINISH,
    });
  if (coding !== 'deflate') return createGunzip(options);
  // "deflate" is zlib-wrapped by the standard, raw from some servers: told apart by the header
  // (RFC 1950: method 8, and the first two bytes a multiple of 31).
  const wrapped =
    first === undefined ||
    (first.length >= 2 && (first[0]! & 0x0f) === 8 && ((first[0]! << 8) | first[1]!) % 31 === 0);
  return wrapped ? createInflate(options) : createInflateRaw(options);
}

/** The record's line with `field` as its body: `prefix` is the record without its closing brace. */
export function bodyRecord(prefix: string, field: BodyField): Buffer {
  const head = `${prefix},"body":`;
  const tail = `${field.base64 ? ',"bodyEncoding":"base64"' : ''}${field.truncated ? ',"truncated":true' : ''}}`;
  const headLength = Buffer.byteLength(head);
  const record = Buffer.allocUnsafe(headLength + field.length + tail.length);
  record.write(head, 0);
  field.write(record, headLength);
  record.write(tail, headLength + field.length, 'latin1');
  return record;
}
