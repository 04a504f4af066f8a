/**
 * The small Redis interface the shared gates use, and its adapters: node-redis (`redis` 6, the
 * default) and ioredis. Everything the gates ask of Redis is here: run a script (EVALSHA, with
 * EVAL when the server does not have it: a restart, a failover or `SCRIPT FLUSH` empties its
 * cache, and in a Cluster each node has its own), and listen on a channel with sharded pub/sub
 * (`SSUBSCRIBE`, Redis 7.0+), which a Cluster routes to the node of the channel's hash slot.
 *
 * Neither client is imported here: the caller hands over its own connected client, and the
 * adapter is chosen by its shape. A Cluster client of either (node-redis's `createCluster()`,
 * ioredis's `Cluster`) is taken too: a script goes to the node of its keys' slot (the keys of one
 * call share a hash tag), and a subscription is a cluster client of its own that sends
 * SSUBSCRIBE to the node of the channel's slot (node-redis's `sSubscribe`; ioredis only with
 * `shardedSubscribers`, which the adapter turns on for its copy).
 *
 * Invariants: a script is sent by its SHA1 first, and its source at most once per NOSCRIPT;
 * a subscription has a connection of its own, which its `close()` (or the abort of the signal it
 * was made with, while it is being made) ends at once, whatever state it is in: a subscription to
 * a server that is gone must not outlive its user; an adapter never swallows an error (a lost
 * connection rejects the call that needed it).
 */
import { createHash } from 'node:crypto';
import * as v from '../_validate.ts';

/** A Lua script, with its SHA1 computed once. */
export class Script {
  readonly name: string;
  readonly source: string;
  readonly sha: string;

  constructor(name: string, source: string) {
    this.name = name;
    this.source = source;
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** What a script may return: Redis replies as node-redis and ioredis give them. */
export type Reply = null | number | string | Buffer | Reply[];

/** A channel being listened to; `close()` unsubscribes (idempotent). */
export interface Subscription {
  close(): Promise<void>;
}

/** What the shared gates need of a Redis client. */
export interface RedisClient {
  /** Runs `script` with `keys` and `args`: EVALSHA, then EVAL on NOSCRIPT. */
  run(script: Script, keys: readonly string[], args: readonly (string | number)[]): Promise<Reply>;
  /**
   * Calls `listener` with each message published (SPUBLISH) on `channel`, on a connection of its
   * own, until the subscription is closed. Resolves once the server has confirmed it; aborting
   * `signal` before then gives up (the connection closed, the promise rejected).
   */
  subscribe(
    channel: string,
    listener: (message: string) => void,
    signal?: AbortSignal,
  ): Promise<Subscription>;
}

/** Whether an error is Redis saying it does not have the script. */
function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT');
}

/** EVALSHA, then EVAL once if the server does not have the script. */
async function evalWithFallback(
  send: (command: string[]) => Promise<unknown>,
  script: Script,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<Reply> {
  const rest = [String(keys.length), ...keys, ...args.map(String)];
  try {
    return (await send(['EVALSHA', script.sha, ...rest])) as Reply;
  } catch (error) {
    if (!isNoScript(error)) throw error;
    return (await send(['EVAL', script.source, ...rest])) as Reply;
  }
}

/** What node-redis's client and cluster client (v4–v6) share, and what is used of it here. */
interface NodeRedisCommon {
  connect(): Promise<unknown>;
  sSubscribe(channel: string, listener: (message: string) => void): Promise<void>;
  /** v5 and later: closes the connection(s) at once. */
  destroy?(): void;
  /** v4: closes the connection(s) at once. */
  disconnect?(): Promise<void>;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/** The part of a node-redis (v4–v6) client used here. */
interface NodeRedisLike extends NodeRedisCommon {
  sendCommand(args: string[]): Promise<unknown>;
  duplicate(): NodeRedisLike;
}

/**
 * The part of a node-redis (v4–v6) cluster client (`createCluster()`) used here: its
 * `sendCommand` takes the key that routes the command first.
 */
interface NodeRedisClusterLike extends NodeRedisCommon {
  sendCommand(firstKey: string | undefined, isReadonly: boolean, args: string[]): Promise<unknown>;
  duplicate(overrides?: { minimizeConnections?: boolean }): NodeRedisClusterLike;
  /** Only a cluster client has it: how the two are told apart. */
  nodeClient(node: unknown): unknown;
}

/** The part of an ioredis (v5–v6) client, or of its `Cluster`, used here. */
interface IoRedisLike {
  /** `true` on a `Cluster`. */
  isCluster?: boolean;
  options?: { keyPrefix?: string };
  call(command: string, ...args: string[]): Promise<unknown>;
  /** On a `Cluster`: `duplicate(startupNodes, options)`. */
  duplicate(...args: unknown[]): IoRedisLike;
  ssubscribe(channel: string): Promise<unknown>;
  on(event: 'smessage', listener: (channel: string, message: string) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  disconnect(): void;
}

function isNodeRedis(client: unknown): client is NodeRedisLike | NodeRedisClusterLike {
  const c = client as Partial<
    NodeRedisCommon & { sendCommand: unknown; duplicate: unknown }
  > | null;
  return (
    typeof c?.sendCommand === 'function' &&
    typeof c.sSubscribe === 'function' &&
    typeof c.duplicate === 'function'
  );
}

function isNodeRedisCluster(
  client: NodeRedisLike | NodeRedisClusterLike,
): client is NodeRedisClusterLike {
  return typeof (client as Partial<NodeRedisClusterLike>).nodeClient === 'function';
}

function isIoRedis(client: unknown): client is IoRedisLike {
  const c = client as Partial<IoRedisLike> | null;
  return (
    typeof c?.call === 'function' &&
    typeof c.ssubscribe === 'function' &&
    typeof c.duplicate === 'function'
  );
}

/**
 * Makes a subscription on a connection of its own: `open()` connects and subscribes, `end()`
 * closes the connection at once (no UNSUBSCRIBE first: on a connection that is down, it would
 * wait for the server to come back).
 */
async function subscribeOn(
  open: () => Promise<unknown>,
  end: () => void,
  signal: AbortSignal | undefined,
): Promise<Subscription> {
  signal?.throwIfAborted();
  let abandon = (): void => undefined;
  // A client may never settle a connection it was told to end: the abort settles the wait.
  const abandoned = new Promise<never>((_, reject) => {
    abandon = () => {
      end();
      reject(signal?.reason as Error);
    };
  });
  signal?.addEventListener('abort', abandon, { once: true });
  const opened = open();
  opened.catch(() => undefined);
  try {
    await Promise.race([opened, abandoned]);
  } catch (error) {
    end();
    throw error;
  } finally {
    signal?.removeEventListener('abort', abandon);
  }
  let closed = false;
  return {
    close() {
      if (!closed) {
        closed = true;
        end();
      }
      return Promise.resolve();
    },
  };
}

/**
 * A node-redis client (`createClient()` from `redis`, connected) or cluster client
 * (`createCluster()`, connected) as a {@link RedisClient}. In a cluster, a script goes to the
 * master of its first key's slot, and a subscription's own cluster client connects only to the
 * node of the channel's slot (`minimizeConnections`).
 */
export function fromNodeRedis(client: NodeRedisLike | NodeRedisClusterLike): RedisClient {
  const cluster = isNodeRedisCluster(client);
  const send = cluster
    ? (keys: readonly string[]) => (command: string[]) =>
        client.sendCommand(keys[0], false, command)
    : () => (command: string[]) => client.sendCommand(command);
  return {
    run: (script, keys, args) => evalWithFallback(send(keys), script, keys, args),
    subscribe(channel, listener, signal) {
      const subscriber: NodeRedisCommon = cluster
        ? client.duplicate({ minimizeConnections: true })
        : client.duplicate();
      // A subscriber's errors are the subscription's: without a listener, one would end the process.
      subscriber.on('error', () => undefined);
      return subscribeOn(
        async () => {
          await subscriber.connect();
          await subscriber.sSubscribe(channel, listener);
        },
        () => {
          if (subscriber.destroy !== undefined) subscriber.destroy();
          else subscriber.disconnect?.().catch(() => undefined);
        },
        signal,
      );
    },
  };
}

/**
 * An ioredis client (`new Redis()`) or `Cluster` as a {@link RedisClient}. A `Cluster` routes a
 * script by its keys itself; a subscription's own `Cluster` has `shardedSubscribers` on, without
 * which SSUBSCRIBE would go to one node for every channel, and be refused (MOVED) by most.
 */
export function fromIoRedis(client: IoRedisLike): RedisClient {
  return {
    run: (script, keys, args) =>
      evalWithFallback(
        ([command, ...rest]) => client.call(command as string, ...rest),
        script,
        keys,
        args,
      ),
    subscribe(channel, listener, signal) {
      // ioredis prefixes a script's keys and a shard channel with its `keyPrefix`, so messages
      // come from the prefixed channel.
      const prefixed = (client.options?.keyPrefix ?? '') + channel;
      const subscriber =
        client.isCluster === true
          ? client.duplicate([], { shardedSubscribers: true })
          : client.duplicate();
      subscriber.on('error', () => undefined);
      subscriber.on('smessage', (from, message) => {
        if (from === prefixed) listener(message);
      });
      return subscribeOn(
        () => subscriber.ssubscribe(channel),
        () => {
          subscriber.disconnect();
        },
        signal,
      );
    },
  };
}

/**
 * The client a shared gate was given, as a {@link RedisClient}: a node-redis or an ioredis client
 * or cluster client (told apart by their methods), or an adapter already. Throws a TypeError naming `name` for
 * anything else.
 */
export function redisClient(name: string, client: unknown): RedisClient {
  const c = client as Partial<RedisClient> | null;
  if (typeof c?.run === 'function' && typeof c.subscribe === 'function') return c as RedisClient;
  if (isNodeRedis(client)) return fromNodeRedis(client);
  if (isIoRedis(client)) return fromIoRedis(client);
  throw new TypeError(
    `Expected \`${name}\` to be a connected Redis client (node-redis's createClient() or ioredis), got ${v.describe(client)}`,
  );
}

/** The one check of a shared limit's name (a semaphore's, a shared rate's, an adaptive store's). */
export function checkName(name: unknown): string {
  if (typeof name !== 'string') {
    throw new TypeError(`Expected \`name\` to be a string, got ${v.describe(name)}`);
  }
  // The name is the keys' hash tag: empty, the tag would vanish and the keys would scatter over
  // a Cluster's slots; braces would end it early.
  if (name === '' || /[{}]/.test(name)) {
    throw new RangeError(
      `Expected \`name\` to be a non-empty string without braces, got ${v.describe(name)}`,
    );
  }
  return name;
}
