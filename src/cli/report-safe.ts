/**
 * Making strings from input or a server safe to show: credentials redacted, length clipped, markup
 * escaped. The order matters and is always the same: redact the whole string first (a secret cut in
 * half by clipping would no longer be recognised), then clip, then escape when writing HTML.
 */

/** What stands in for a removed credential. */
export const REDACTED = '[redacted]';

/**
 * Userinfo in a URL (`https://user:pass@host`, `redis://:pass@host`). The authority runs to the first
 * `/`, `\`, `?`, `#` or space, and its userinfo to the last `@` in it: WHATWG URL parsing splits at
 * the last `@`, so `https://u:p@ss@host` has the password `p@ss`, and all of it must go.
 */
const USERINFO = /\b([a-z][a-z0-9+.-]*:[/\\]{2})[^\s/\\?#]*@/gi;

/**
 * A credential header with its value, as it shows up in text: `Authorization: Bearer x` (curl -H,
 * raw HTTP, error messages), `"cookie": "a=1"` (JSON), `Cookie=a=1`. An unquoted value runs to the
 * end of the line or the next quote (values such as `Bearer x` and `a=1; b=2` contain spaces); a
 * quoted one to its closing quote. Redacting too much of a line is the safe way to be wrong.
 */
const HEADER =
  /\b((?:proxy-)?authorization|(?:set-)?cookie)(["']?[ \t]*[:=][ \t]*)("(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?|[^\n"']*)/gi;

/**
 * A credential passed to curl (or a tool with the same options) on its command line:
 * `--cookie 'sid=1'`, `--user me:pass`, `--proxy-user`, `--oauth2-bearer`.
 */
const OPTION =
  /(--(?:cookie|user|proxy-user|oauth2-bearer)(?:=|[ \t]+))("[^"\n]*"?|'[^'\n]*'?|[^\s"']+)/gi;

/**
 * Removes credentials from a string: the values of Authorization, Proxy-Authorization, Cookie and
 * Set-Cookie headers, curl's credential options, and userinfo in URLs, each replaced by {@link REDACTED}. Use it on anything
 * that is written out (records as well as the report).
 *
 * @example
 * redactSecrets('https://me:hunter2@api.example/x') // 'https://[redacted]@api.example/x'
 * redactSecrets('curl -H "Authorization: Bearer abc" …') // 'curl -H "Authorization: [redacted]" …'
 */
export function redactSecrets(text: string): string {
  return text
    .replace(USERINFO, `$1${REDACTED}@`)
    .replace(OPTION, (_match, option: string, value: string) => {
      const quote = value.startsWith('"') ? '"' : value.startsWith("'") ? "'" : '';
      return `${option}${quote}${REDACTED}${quote}`;
    })
    .replace(HEADER, (_match, name: string, separator: string, value: string) => {
      const quote = value.startsWith('"') ? '"' : value.startsWith("'") ? "'" : '';
      return `${name}${separator}${quote}${REDACTED}${quote}`;
    });
}

/** Cuts `text` to at most `max` characters (plus a note of how much was cut). */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  // Never split a surrogate pair: half of one would become U+FFFD when written.
  let end = max;
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return `${text.slice(0, end)}… (${(text.length - end).toLocaleString('en-US')} more characters)`;
}

/** Redacted, then clipped: the form in which a string from input or a server is kept. */
export function sanitize(text: string, max: number): string {
  return clip(redactSecrets(text), max);
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/**
 * Control characters (except tab and newline) and bidirectional overrides: invisible, and able to
 * make a URL read differently from what it is. They are shown as U+FFFD.
 */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Escapes text for HTML, both between tags and inside a double- or single-quoted attribute value.
 * Every string that reaches the page goes through here; none is ever put into a script, a style or
 * a URL attribute.
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ESCAPES[char]!).replace(UNPRINTABLE, '\uFFFD');
}
