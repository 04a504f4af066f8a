/**
 * `sluice/redis`: limits shared by every process that uses the same Redis and name.
 */
export { RedisRateLimiter, type RedisRateLimiterOptions } from './rate.ts';
