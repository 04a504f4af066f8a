/**
 * JSON over bytes (src/cli/json-bytes.ts), against the engine's own JSON: `isJson` decides as
 * `JSON.parse()` does, `writeJsonString` writes what `JSON.stringify()` would, and
 * `writeOneLine` keeps a JSON text's value while taking its line breaks out.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isJson, jsonStringLength, writeJsonString, writeOneLine } from '../src/cli/json-bytes.ts';

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Texts near JSON: valid ones, pretty-printed ones, and both with a character changed. */
const nearJson = fc.oneof(
  fc.json(),
  fc.jsonValue().map((v) => JSON.stringify(v, null, '\t').replaceAll('\n', '\r\n')),
  fc
    .tuple(
      fc.json(),
      fc.nat(),
      fc.constantFrom(
        ...'{ } [ ] " , : . - + e E 0 1 5 9 t f n u l \\ / x'.split(' '),
        ...[' ', '\t', '\r', '\n', '\u0001'],
      ),
      fc.boolean(),
    )
    .map(([text, at, char, insert]) => {
      const i = at % (text.length + 1);
      return text.slice(0, i) + char + text.slice(insert ? i : i + 1);
    }),
  fc.stringMatching(/^[\s{}[\]",:0-9.eE+-]{0,12}$/),
  fc.constantFrom(
    '',
    ' ',
    '01',
    '-',
    '1.',
    '.5',
    '1e',
    '1e+',
    '-0.0e-0',
    '"\\u12"',
    '"\\uD800"',
    '"\\x"',
    '[1,]',
    '{"a":1,}',
    '{"a" 1}',
    '{1:2}',
    '[[[[]]]]',
    'tru',
    'nulll',
    '\ufeff{}',
    '"a\u0000"',
    '"\u007f"',
  ),
);

describe('JSON over bytes', () => {
  it('isJson decides as JSON.parse() does', () => {
    fc.assert(
      fc.property(nearJson, (candidate) => {
        const bytes = Buffer.from(candidate);
        const text = bytes.toString(); // what the bytes spell (a lone surrogate became U+FFFD)
        assert.equal(isJson(bytes), parses(text), JSON.stringify(text));
      }),
      { numRuns: 3000 },
    );
  });

  it('isJson takes nesting deeper than any call stack', () => {
    const depth = 200_000;
    assert.equal(isJson(Buffer.from(`${'['.repeat(depth)}${']'.repeat(depth)}`)), true);
    assert.equal(isJson(Buffer.from(`${'['.repeat(depth)}${']'.repeat(depth - 1)}`)), false);
    assert.equal(isJson(Buffer.from(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`)), true);
  });

  it('writeJsonString writes the bytes of JSON.stringify()', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary' }),
          fc.string({ unit: 'grapheme' }),
          // Longer than the pieces it is escaped in, characters of every length across their cuts.
          fc
            .string({ unit: 'binary', minLength: 1, maxLength: 40 })
            .map((unit) => unit.repeat(Math.ceil(70_000 / Buffer.byteLength(unit)))),
        ),
        (s) => {
          const bytes = Buffer.from(s);
          const expected = Buffer.from(JSON.stringify(bytes.toString()));
          assert.equal(jsonStringLength(bytes), expected.length);
          const target = Buffer.alloc(expected.length + 4, 0xee);
          assert.equal(writeJsonString(bytes, target, 2), expected.length + 2);
          assert.ok(target.subarray(2, -2).equals(expected), JSON.stringify(s.slice(0, 200)));
          assert.ok(target.subarray(0, 2).equals(Buffer.from([0xee, 0xee])));
          assert.ok(target.subarray(-2).equals(Buffer.from([0xee, 0xee])));
        },
      ),
      { numRuns: 600 },
    );
  });

  it('writeOneLine keeps a JSON text on one line with the same value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom('\n', '\r\n', '\r'), (value, newline) => {
        const text = JSON.stringify(value, null, 2).replaceAll('\n', newline);
        const bytes = Buffer.from(text);
        const target = Buffer.alloc(bytes.length);
        writeOneLine(bytes, target, 0);
        assert.ok(!target.includes(0x0a) && !target.includes(0x0d));
        assert.deepEqual(JSON.parse(target.toString()), JSON.parse(text));
      }),
    );
  });
});
