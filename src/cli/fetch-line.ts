/**
 * What a `sluice fetch` input line means: a URL, or a JSON object
 * `{ "url", "method", "headers", "body", "id" }` (JSONL). A line that is neither, a bad URL, a
 * scheme other than http(s) or a method no fetch client sends becomes a task with an `error`,
 * never an exception.
 *
 * And where credentials go: the values of Authorization, Proxy-Authorization, Cookie and
 * Set-Cookie headers and a URL's user name and password are collected per line, so that whatever
 * could carry them into a record or a report (an error message, an echoed body) is masked. A
 * line's URL is recorded as it is sent (normalised, without its fragment), its user name and
 * password replaced by `[redacted]` as in the report; they are sent as Basic authorization (as
 * curl does) unless an Authorization header is given.
 */
import { forbiddenMethod } from '../http/_cli.ts';
import { REDACTED, redactSecrets } from './report-safe.ts';

export const SENSITIVE: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
]);
const SENSITIVE_TEXT =
  /\b(authorization|proxy-authorization|cookie|set-cookie)(["']?\s*[:=]\s*)("[^"]*"|'[^']*'|[^,;\r\n]*)/gi;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** One line, read. */
export interface FetchTask {
  id: unknown;
  /** The URL as recorded (without a password), or null when the line has none. */
  url: string | null;
  /** Where the request goes; undefined when the line cannot be sent (`error` says why). */
  target: URL | undefined;
  method: string;
  headers: Record<string, string>;
  body: string | undefined;
  /** Values to mask in this line's messages, beyond the global ones. */
  secrets: string[] | undefined;
  /** Why the line cannot be sent. */
  error: string | undefined;
}

/** What a line gets unless it says otherwise: `-X` and the `-H` headers (lower-case names). */
export interface LineDefaults {
  method: string;
  headers: Record<string, string>;
}

/**
 * Masks the given values in a text, as they are and as a JSON string would spell them. Values
 * shorter than 4 characters are left alone: masking every "1" would garble everything and hide
 * nothing.
 */
export function maskValues(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length < 4) continue;
    out = out.split(secret).join('[redacted]');
    const escaped = JSON.stringify(secret).slice(1, -1);
    if (escaped !== secret) out = out.split(escaped).join('[redacted]');
  }
  return out;
}

/** Masks credentials in a message: the given values, and whatever follows a sensitive header's name. */
export function redact(text: string, secrets: readonly string[]): string {
  return maskValues(text, secrets).replace(SENSITIVE_TEXT, '$1$2[redacted]');
}

/** A URL component, percent-decoded if it can be. */
function decoded(component: string): string {
  try {
    return decodeURIComponent(component);
  } catch {
    return component;
  }
}

/**
 * Reads one input line: a URL, or a JSON request. Never throws: what is wrong with the line is
 * the task's `error`.
 */
export function parseFetchLine(line: string, defaults: LineDefaults): FetchTask {
  const text = line.trim();
  const task: FetchTask = {
    id: null,
    url: null,
    target: undefined,
    method: defaults.method,
    headers: defaults.headers,
    body: undefined,
    secrets: undefined,
    error: undefined,
  };
  if (text.startsWith('{') || text.startsWith('[')) parseJson(text, task, defaults.headers);
  else task.url = text;
  // Read even when the line is wrong otherwise: its record shows the URL masked.
  const target = task.url === null ? undefined : readUrl(task);
  if (target !== undefined && task.error === undefined) {
    task.error = unsendable(target, task.method);
    if (task.error === undefined) task.target = target;
  }
  return task;
}

function parseJson(text: string, task: FetchTask, base: Record<string, string>): void {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // The engine's message quotes the line, which may hold a credential: say where, not what.
    const at = /position (\d+)/.exec((error as Error).message);
    task.error = `the line is not valid JSON${at === null ? '' : ` (at position ${at[1]})`}`;
    return;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    task.error = 'the line is not a JSON object';
    return;
  }
  const { url, method, headers, body, id } = value as Record<string, unknown>;
  if (id !== undefined) task.id = id;
  if (typeof url !== 'string') {
    task.error = `expected "url" to be a string, got ${url === undefined ? 'none' : JSON.stringify(url)}`;
    return;
  }
  task.url = url.trim();
  if (method !== undefined) {
    if (typeof method !== 'string' || !TOKEN.test(method)) {
      task.error = `expected "method" to be an HTTP method, got ${JSON.stringify(method)}`;
      return;
    }
    task.method = method.toUpperCase();
  }
  if (headers !== undefined && headers !== null) {
    if (typeof headers !== 'object' || Array.isArray(headers)) {
      task.error = 'expected "headers" to be an object of header names to values';
      return;
    }
    const merged: Record<string, string> = { ...base };
    for (const [name, raw] of Object.entries(headers)) {
      if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'boolean') {
        task.error = `expected the header "${name}" to be a string`;
        return;
      }
      const lower = name.toLowerCase();
      const headerValue = String(raw);
      merged[lower] = headerValue;
      if (SENSITIVE.has(lower)) (task.secrets ??= []).push(headerValue);
    }
    task.headers = merged;
  }
  if (body !== undefined && body !== null) {
    if (typeof body === 'string') {
      task.body = body;
    } else {
      task.body = JSON.stringify(body);
      if (task.headers['content-type'] === undefined) {
        task.headers = { ...task.headers, 'content-type': 'application/json' };
      }
    }
  }
}

/**
 * Reads the line's URL: returns it as it is to be sent (credentials removed: they go as a
 * header), and puts in `task.url` what is recorded: the same, normalised, without the fragment
 * (never sent), its credentials masked. Undefined for a string that is no URL.
 */
function readUrl(task: FetchTask): URL | undefined {
  const text = task.url ?? '';
  let target: URL;
  try {
    target = new URL(text);
  } catch {
    task.error ??= text === '' ? 'no URL' : 'invalid URL';
    task.url = redactSecrets(text); // nothing was sent: the line's text, credentials masked
    return undefined;
  }
  if (text.includes('#')) target.hash = '';
  // Credentials come only with an "@" (the URL's getters are not free on a million lines).
  if (text.includes('@') && (target.username !== '' || target.password !== '')) {
    // Sent as Basic authorization (as curl does), never recorded. A user name alone is as much a
    // secret as a password (https://TOKEN@host/).
    const user = decoded(target.username);
    const password = decoded(target.password);
    task.secrets = [...(task.secrets ?? []), user, target.username, password, target.password];
    if (task.headers.authorization === undefined) {
      const token = Buffer.from(`${user}:${password}`).toString('base64');
      task.headers = { ...task.headers, authorization: `Basic ${token}` };
      task.secrets.push(token);
    }
    target.username = '';
    target.password = '';
    const protocol = target.protocol;
    task.url = `${protocol}//${REDACTED}@${target.href.slice(protocol.length + 2)}`;
  } else {
    task.url = target.href;
  }
  return target;
}

/** Why a request to `target` with `method` cannot be sent, or undefined. */
function unsendable(target: URL, method: string): string | undefined {
  const protocol = target.protocol;
  if (protocol !== 'http:' && protocol !== 'https:')
    return `unsupported scheme "${protocol.slice(0, -1)}" (expected http or https)`;
  return forbiddenMethod(method);
}
