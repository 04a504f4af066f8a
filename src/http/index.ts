/**
 * `sluice/http`: HTTP that stays inside an API's limits. `createFetch()` has the signature of
 * `fetch`; `createRequest()` the shape of undici's `request`. Both keep a gate and a rate per
 * origin under a global concurrency, retry idempotent requests, and honour the server's
 * Retry-After, RateLimit and X-RateLimit headers.
 */
export { createFetch, type LimitedFetch, type LimitedRequestInit } from './fetch.ts';
export {
  createExchange,
  type ExchangeFunction,
  type ExchangeRequest,
  type Exchanged,
} from './exchange.ts';
export {
  createRequest,
  type LimitedRequest,
  type LimitedRequestFunction,
  type LimitedResponse,
} from './request.ts';
export {
  HttpClient,
  isTransient,
  type HttpOptions,
  type HttpRetryOptions,
  type OriginGates,
  type OriginLimits,
  type RequestReport,
} from './client.ts';
export {
  parseRateLimit,
  parseRetryAfter,
  parseXRateLimit,
  serverWait,
  type HeaderGetter,
  type ServerWait,
} from './feedback.ts';
