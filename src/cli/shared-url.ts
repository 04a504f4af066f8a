/**
 * `--redis` and `--name` of `sluice fetch`, checked before anything runs (usage errors), apart
 * from `shared.ts` so that a run without `--redis` never loads node-redis.
 */

/** `url` with its password, if any, masked: what messages show of it. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@]*?:)[^/?#@]*@/i, '$1***@');
}

/**
 * The `--redis` URL, from the flag or else `SLUICE_REDIS_URL` (blank: unset), checked; or
 * undefined. Throws an Error whose message is the usage error's line.
 */
export function redisUrl(flag: string | undefined, env: string | undefined): string | undefined {
  const given = flag ?? (env?.trim() === '' ? undefined : env);
  if (given === undefined) return undefined;
  const from = flag === undefined ? ' (from SLUICE_REDIS_URL)' : '';
  let url: URL | undefined;
  try {
    url = new URL(given.trim());
  } catch {
    url = undefined;
  }
  if (url?.protocol !== 'redis:' && url?.protocol !== 'rediss:') {
    throw new Error(
      `--redis: expected a URL like redis://[[user]:password@]host[:port][/db] or rediss://…, got ${JSON.stringify(maskUrl(given))}${from}`,
    );
  }
  return given.trim();
}

/** `--name`: a non-empty string without braces (the keys' hash tag). Throws the usage error's line. */
export function checkName(name: string | undefined): string | undefined {
  if (name !== undefined && (name.trim() === '' || /[{}]/.test(name))) {
    throw new Error(
      `--name: expected a non-empty name without braces, got ${JSON.stringify(name)}`,
    );
  }
  return name;
}
