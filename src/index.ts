export { Semaphore, Mutex, type SemaphoreOptions, type SemaphoreStats } from './semaphore.ts';
export { limit, limitFunction, type LimitFunction, type LimitOptions } from './limit.ts';
export { all, map, mapSettled, type MapContext, type MapOptions, type Mapper } from './map.ts';
export { mapIterable, type MapIterableOptions } from './map-iterable.ts';
export {
  RateLimiter,
  type Rate,
  type RateSpec,
  type RateOptions,
  type RateLimiterOptions,
  type Reservation,
  type WaitOptions,
  type WindowKind,
} from './rate.ts';
export {
  Limiter,
  type CloseOptions,
  type LimiterEvents,
  type LimiterOptions,
  type LimiterStats,
  type Overflow,
  type ScheduleOptions,
  type TaskContext,
  type TaskInfo,
} from './limiter.ts';
export {
  KeyedLimiter,
  type KeyGates,
  type KeyedLimiterOptions,
  type PerKeyOptions,
} from './keyed.ts';
export {
  retry,
  RetryBudget,
  type AttemptContext,
  type Jitter,
  type RetryBudgetOptions,
  type RetryInfo,
  type RetryOptions,
} from './retry.ts';
export type { AcquireOptions, Gate, Permit, ReleaseOutcome, SyncGate } from './gate.ts';
export type { Clock, TimerHandle } from './_clock.ts';
export {
  SluiceError,
  TimeoutError,
  ClosedError,
  QueueFullError,
  RetryError,
  LeaseLostError,
  ThrottledError,
} from './errors.ts';
export {
  adaptive,
  AdaptiveLimit,
  type AdaptiveAlgorithm,
  type AdaptiveEvents,
  type AdaptiveOptions,
  type AdaptiveStats,
  type LimitChangeEvent,
} from './adaptive.ts';
