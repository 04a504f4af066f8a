/**
 * undici, loaded on first use. Loading it takes about 70 ms and 11 MB of heap at start, and a run
 * that sends only plain `http:` requests (through `_h1.ts`) never needs it. @internal
 */
import { createRequire } from 'node:module';
import type * as UndiciModule from 'undici';

type Undici = typeof UndiciModule;

let loaded: Undici | undefined;

export function undici(): Undici {
  return (loaded ??= createRequire(import.meta.url)('undici') as Undici);
}

/** undici's `Client`, as a pool of {@link originPool} makes them; made once undici is loaded. */
let OriginClient: typeof UndiciModule.Client | undefined;

/**
 * An undici `Pool` for one origin whose connections survive a request undici refuses.
 *
 * A `Client` refuses a request it cannot write (a header such as `Transfer-Encoding`, `Expect` or
 * `Upgrade`, a bad header value) inside `dispatch()`: it tells the request's handler, and returns
 * false. A `Pool` takes that false for "busy", as it takes the false of a client that has its
 * request in hand, and waits for the client's 'drain' before giving it another request. A
 * client that refused has nothing in hand and never drains: every later request to the origin
 * would wait in the pool forever, once its connections had each refused one. So a client here
 * answers true when it holds no request after all (it refused it, or finished it at once): it
 * can take the next one.
 */
export function originPool(
  origin: string | URL,
  options: UndiciModule.Pool.Options,
): UndiciModule.Pool {
  const { Client, Pool } = undici();
  OriginClient ??= class extends Client {
    override dispatch(
      options: UndiciModule.Dispatcher.DispatchOptions,
      handler: UndiciModule.Dispatcher.DispatchHandler,
    ): boolean {
      return super.dispatch(options, handler) || this.stats.size === 0;
    }
  };
  const Made = OriginClient;
  return new Pool(origin, { ...options, factory: (url, opts) => new Made(url, opts) });
}
