/**
 * One worker of `sluice demo --fleet`, a child process of the demo (spawned by fleet.ts with an
 * IPC channel). Its argument is a JSON {@link WorkerConfig}. It connects to the demo's Redis,
 * says `{ ready: true }`, and then runs each {@link WorkerRun} it is sent: fetches its posts, all
 * at once, through sluice — through the limit shared in Redis, or through a limit of its own — and
 * answers with a {@link WorkerResult}. It closes everything and exits when the channel closes
 * (the demo is done, or gone: a worker never outlives it).
 *
 * Invariants: every run is answered exactly once; every limit a run makes is closed before its
 * answer is sent.
 */
import { createClient } from 'redis';
import { createFetch } from '../http/index.ts';
import { RedisRateLimiter, RedisSemaphore } from '../redis/index.ts';

/** What a worker is started with. */
export interface WorkerConfig {
  /** `redis://127.0.0.1:PORT` */
  redis: string;
  /** The name of the shared limits in Redis. */
  name: string;
  /** The API's concurrency: the permits of the shared semaphore, and each worker's own limit. */
  concurrency: number;
  /** The API's rate, per second. */
  rate: number;
  /** The ids of this worker's posts: `first` to `first + count - 1`. */
  first: number;
  count: number;
}

/** One run, sent by the demo. */
export interface WorkerRun {
  /** The demo API's URL. */
  api: string;
  /** Through the limits shared in Redis, or through limits of this worker's own. */
  shared: boolean;
}

/** A worker's answer to a run. */
export interface WorkerResult {
  /** Posts answered 200 with their body read. */
  fetched: number;
  /** Final statuses other than 200, by status. */
  refused: Record<number, number>;
  /** Requests that failed without a response. */
  failed: number;
}

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
const send = (message: unknown): void => {
  process.send?.(message);
};

const redis = createClient({ url: config.redis, maintNotifications: 'disabled' });
await redis.connect();

async function run({ api, shared }: WorkerRun): Promise<WorkerResult> {
  const rate = `${config.rate}/s`;
  const semaphore = shared
    ? new RedisSemaphore(redis, config.name, { permits: config.concurrency })
    : undefined;
  const rateLimiter = shared ? new RedisRateLimiter(redis, config.name, rate) : undefined;
  // No retries: every refusal shows as one.
  const fetch =
    semaphore === undefined || rateLimiter === undefined
      ? createFetch({ perOrigin: { concurrency: config.concurrency, rate }, retry: 0 })
      : createFetch({
          perOrigin: { concurrency: config.concurrency },
          originGates: () => ({ concurrency: semaphore, rate: rateLimiter }),
          retry: 0,
        });
  const result: WorkerResult = { fetched: 0, refused: {}, failed: 0 };
  try {
    await Promise.all(
      Array.from({ length: config.count }, async (_, i) => {
        try {
          const response = await fetch(`${api}/posts?id=${config.first + i}`);
          await response.arrayBuffer();
          if (response.status === 200) result.fetched++;
          else result.refused[response.status] = (result.refused[response.status] ?? 0) + 1;
        } catch {
          result.failed++;
        }
      }),
    );
  } finally {
    await fetch.close();
    await semaphore?.close();
    await rateLimiter?.close();
  }
  return result;
}

process.on('message', (message: WorkerRun) => {
  void run(message).then(send, (error: unknown) => {
    send({ error: error instanceof Error ? error.message : String(error) });
  });
});
process.once('disconnect', () => {
  void redis.close().finally(() => {
    process.exit(0);
  });
});
send({ ready: true });
