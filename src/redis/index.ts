/**
 * `sluice/redis`: limits shared by every process that uses the same name on one Redis (or Redis
 * Cluster, or Valkey), 7.0 or later. Give them a connected node-redis client (`redis`), an
 * ioredis client, or your own `RedisClient`.
 */
export { RedisAdaptiveStore, type RedisAdaptiveStoreOptions } from './adaptive.ts';
export { RedisRateLimiter, type RedisRateLimiterOptions } from './rate.ts';
export {
  RedisSemaphore,
  type RedisPermit,
  type RedisSemaphoreEvents,
  type RedisSemaphoreOptions,
} from './semaphore.ts';
export {
  fromIoRedis,
  fromNodeRedis,
  redisClient,
  type RedisClient,
  type Reply,
  type Script,
  type Subscription,
} from './_client.ts';
export { LeaseLostError } from '../errors.ts';
