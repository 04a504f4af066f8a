/**
 * `sluice fetch --redis URL`: the limits the CLI keeps, shared with every other process on the
 * same Redis and name (`sluice/redis`). The URL is checked (a usage error), the node-redis client
 * made and checked within a few seconds (one line, exit 1), and every shared gate made here, in
 * `sharedGates()`: the one place that decides which limit becomes which gate under which name.
 *
 * Names. Input is streamed, so the origins of a run are not known when it starts:
 * - each origin's gates (`--per-host-concurrency`, `--per-host-rate`, and the pause a 429 or 503
 *   asks for) are named from the origin itself: `<name>:<origin>` with `--name`, `<origin>`
 *   alone without it, so that every process fetching from an origin shares its per-host limits
 *   whatever else its input holds;
 * - the global gates (`-c`, `--rate`) are named `--name`, or else `global:<origin>` of the first
 *   request's origin: processes whose inputs start with the same API share them without being
 *   told, and a run over several APIs should give `--name`. They are made when the first origin
 *   is seen, before any request passes them.
 *
 * Pauses. A 429 or 503 that asks to wait pauses its origin for every process: each origin has a
 * shared rate, `--per-host-rate` or, without it, one that never binds (`PAUSE_ONLY`) and is there
 * for its shared pause (one round trip per request start).
 *
 * Invariants: each shared gate is made once (an origin's when the origin is first seen) and
 * closed by `close()`; one made after `close()` is closed at once.
 */
import { createClient } from 'redis';
import { later, type Cancel } from '../_clock.ts';
import { TimeoutError } from '../errors.ts';
import type { AcquireOptions, Gate, Permit } from '../gate.ts';
import type { OriginGates } from '../http/index.ts';
import { RedisAdaptiveStore, RedisRateLimiter, RedisSemaphore } from '../redis/index.ts';
import { maskUrl } from './shared-url.ts';

/** What the limits shared through Redis are made from. */
export interface SharedSettings {
  /** `--name`, if given. */
  name: string | undefined;
  /** `-c`: the permits of the global semaphore. */
  concurrency: number;
  /** `--rate`, each as written. */
  rates: readonly string[];
  /** `--per-host-concurrency`: the permits of each origin's semaphore. */
  perHostConcurrency: number | undefined;
  /** `--per-host-rate`. */
  perHostRates: readonly string[];
}

/** The node-redis client the CLI makes, as the CLI holds it: the gates take it as it is. */
export interface SharedRedis {
  /** Closes its connections once the replies to what was sent have come. */
  close(): Promise<void>;
  /** Closes its connections at once: what is still waiting for a reply fails. */
  destroy(): void;
}

/** How long the end of a run waits for Redis to answer what was sent (releases), in ms. */
const CLOSE_WAIT = 1000;

/**
 * Closes the CLI's client: the releases sent last are answered first (a lease left behind would
 * hold its permits from every process until it expired), unless Redis has not answered within
 * `CLOSE_WAIT`; then its connections are closed at once.
 */
export async function closeRedis(redis: SharedRedis): Promise<void> {
  let cancel: Cancel | undefined;
  await Promise.race([
    redis.close().catch(() => undefined),
    new Promise<void>((resolve) => {
      cancel = later(CLOSE_WAIT, resolve);
    }),
  ]);
  cancel?.();
  redis.destroy();
}

/** An origin's rate when it has none: only its shared pause can hold a start back. */
export const PAUSE_ONLY = { rate: '1000000/s', burst: 1000 } as const;

/** How long making the client and its first reply may take, in ms. */
export const CONNECT_TIMEOUT = 3000;

/** Redis could not be used: its message is the one line the CLI prints. */
export class RedisUnavailableError extends Error {}

/**
 * A connected node-redis client for `url`, which has answered a PING, within `timeoutMs`; or a
 * `RedisUnavailableError` (nothing listening, a refused password, a server that never answers),
 * the client destroyed. Once connected, a lost connection is made again (every second at most),
 * and commands sent while it is down fail at once rather than wait: the gates' errors become the
 * records' errors, and no request waits on a Redis that may never come back.
 */
export async function connectRedis(url: string, timeoutMs = CONNECT_TIMEOUT): Promise<SharedRedis> {
  let connected = false;
  const client = createClient({
    url,
    maintNotifications: 'disabled',
    disableOfflineQueue: true,
    socket: {
      connectTimeout: timeoutMs,
      // Before the first connection, one try: the error is the answer.
      reconnectStrategy: (retries: number, cause: Error) =>
        connected ? Math.min(50 * 2 ** retries, 1000) : cause,
    },
  });
  // Errors reach the callers of the commands; without a listener, one would end the process.
  client.on('error', () => undefined);
  let cancel: Cancel | undefined;
  const timeout = new Promise<never>((_, reject) => {
    cancel = later(timeoutMs, () => {
      reject(new TimeoutError(`no answer within ${timeoutMs / 1000} s`, timeoutMs));
    });
  });
  try {
    await Promise.race([client.connect().then(() => client.ping()), timeout]);
    connected = true;
    return client;
  } catch (error) {
    client.destroy();
    const why = error instanceof Error ? error.message : String(error);
    throw new RedisUnavailableError(
      `cannot use Redis at ${maskUrl(url)} (--redis): ${maskUrl(why.replace(/\s*\n\s*/g, ' '))}`,
    );
  } finally {
    cancel?.();
  }
}

/**
 * A gate made when its name is known: the global gates are named from the first origin (see the
 * file's header), which is bound before any request passes them.
 */
class NamedOnFirstUse implements Gate {
  #gate: Gate | undefined;
  readonly #make: () => Gate;

  constructor(make: () => Gate) {
    this.#make = make;
  }

  /** The gate, made on the first call. */
  made(): Gate {
    return (this.#gate ??= this.#make());
  }

  acquire(options?: AcquireOptions): Promise<Permit> {
    return this.made().acquire(options);
  }
}

/** The gates shared through Redis, for `createExchange()`; `close()` closes every one made. */
export interface SharedGates {
  /** The global concurrency (`-c`). */
  concurrency: Gate;
  /** The global rate (`--rate`), if any. */
  rate: Gate | undefined;
  /** Each origin's gates, made once, when it is first seen. */
  originGates: (origin: string) => OriginGates;
  /**
   * `-c auto`: where the adaptive limit lives, made once. Each origin's limit is a fork of it,
   * shared as `<name>` and the origin (`auto` and the origin without `--name`).
   */
  adaptiveStore: () => RedisAdaptiveStore;
  /** Closes every gate made; none is made after. */
  close(): Promise<void>;
}

/**
 * The CLI's limits as gates shared through `redis`: the one place that decides what is shared
 * under which name (see the file's header), and, with `-c auto`, where the adaptive limit lives.
 */
export function sharedGates(settings: SharedSettings, redis: SharedRedis): SharedGates {
  const made: (RedisSemaphore | RedisRateLimiter | RedisAdaptiveStore)[] = [];
  let closed = false;
  const keep = <G extends RedisSemaphore | RedisRateLimiter | RedisAdaptiveStore>(gate: G): G => {
    if (closed) void gate.close();
    made.push(gate);
    return gate;
  };
  let globalName: string | undefined = settings.name;
  const concurrency = new NamedOnFirstUse(() =>
    keep(new RedisSemaphore(redis, globalName!, { permits: settings.concurrency })),
  );
  const rate =
    settings.rates.length === 0
      ? undefined
      : new NamedOnFirstUse(() => keep(new RedisRateLimiter(redis, globalName!, settings.rates)));
  const origins = new Map<string, OriginGates>();
  let store: RedisAdaptiveStore | undefined;
  return {
    concurrency,
    rate,
    adaptiveStore: () => (store ??= keep(new RedisAdaptiveStore(redis, settings.name ?? 'auto'))),
    originGates: (origin) => {
      let gates = origins.get(origin);
      if (gates === undefined) {
        // The first origin seen names the global gates when --name does not.
        globalName ??= `global:${origin}`;
        concurrency.made();
        rate?.made();
        const name = settings.name === undefined ? origin : `${settings.name}:${origin}`;
        gates = {
          concurrency:
            settings.perHostConcurrency === undefined
              ? undefined
              : keep(new RedisSemaphore(redis, name, { permits: settings.perHostConcurrency })),
          rate: keep(
            new RedisRateLimiter(
              redis,
              name,
              settings.perHostRates.length === 0 ? PAUSE_ONLY : settings.perHostRates,
            ),
          ),
        };
        origins.set(origin, gates);
      }
      return gates;
    },
    async close() {
      closed = true;
      await Promise.all(made.map((gate) => gate.close().catch(() => undefined)));
    },
  };
}
