/**
 * One attempt of an HTTP call: what its transport sends it with (the dispatcher, the plain-HTTP
 * connections, the attempt's signal), and where the transport tells what came back (`heard`,
 * `sent`, `failed`). A response with a status to retry is decided on here, before its body is
 * thrown away; every way an attempt can end goes through `endAttempt`, once.
 */
import type { Agent } from 'undici';
import { endAttempt, isDropStatus, whenAborted, type AbortTarget, type Attempt } from '../_task.ts';
import { serverWait, type ServerWait } from './feedback.ts';
import type { Wire } from './_h1.ts';
import { StatusError, type Call, type Sent } from './_call.ts';

/**
 * One attempt of a call: what the transport sends it with, and where the transport tells what
 * came back. One object, so that an attempt costs no closures.
 */
export class AttemptHandle<R> {
  readonly #call: Call<R>;
  readonly #context: Attempt;
  /** 1, then 2 for the first retry, … */
  readonly attempt: number;

  constructor(call: Call<R>, context: Attempt) {
    this.#call = call;
    this.#context = context;
    this.attempt = context.attempt;
  }

  get dispatcher(): Agent {
    return this.#call.core.agent();
  }

  /** The plain-HTTP connections (see `_h1.ts`). */
  get wire(): Wire {
    return this.#call.core.wire;
  }

  /**
   * The attempt's signal. When nothing can abort the attempt on its own (no timeout, no caller's
   * signal), the client's shared one, which aborts only when `close()` gives up: an
   * AbortController per request is a measurable share of a fast request's cost.
   */
  signal(): AbortSignal {
    const call = this.#call;
    return call.core.timed || call.signal !== undefined ? this.#context.signal : call.core.closing;
  }

  /** Calls `target.abort(reason)` if the attempt is aborted (timed out, cancelled, closed). */
  whenAborted(target: AbortTarget): void {
    whenAborted(this.#context, target);
  }

  /** Whether the call has moved on from this attempt (it timed out, was aborted, or ended). */
  get #passed(): boolean {
    return this.#context.aborted || this.#call.ended;
  }

  /** The status arrived (before the body, which may still fail). */
  heard(status: number): void {
    if (!this.#passed) this.#call.heardStatus = status;
  }

  /** The transport's word: the response (headers, and the body unless `done` says otherwise). */
  sent(sent: Sent<R>): void {
    const context = this.#context;
    const call = this.#call;
    const status = sent.status;
    let wait: ServerWait | undefined;
    let retried: StatusError | undefined;
    try {
      // Most responses carry no wait: `serverWait()` settles that with a few lookups.
      wait = serverWait(sent.header);
      call.heed(status, wait);
      // Nobody takes the response of an attempt the call moved on from (timed out, aborted).
      if (this.#passed) {
        this.#endAfter(discarded(sent), true, undefined);
        return;
      }
      if (call.retriesStatus(status)) {
        const error = new StatusError(status, wait);
        if ('delay' in context.decide(error)) retried = error;
      }
    } catch (error) {
      // Not expected (a closing client no longer pauses), or a `retry.random` that throws: the
      // attempt fails with why, and is not retried.
      context.decision = { error };
      this.#endAfter(discarded(sent), false, error);
      return;
    }
    if (retried === undefined) {
      // A refusal delivered (not retried) is still a refusal: a gate that learns hears of it.
      if (isDropStatus(status)) context.dropped = true;
      call.deliver(sent, wait);
      if (sent.done === undefined) endAttempt(context, true, undefined);
      else this.#endAfter(sent.done, true, undefined);
      return;
    }
    // Thrown away, then retried as decided: the permits are given back once the body is.
    this.#endAfter(discarded(sent), false, retried);
  }

  /** The transport's word: the attempt failed (to connect, to send, or its body). */
  failed(error: unknown): void {
    endAttempt(this.#context, false, error);
  }

  /**
   * Ends the attempt once `settled` settles: as `ok` and `error` say, or failed if it rejects (a
   * delivered response's body that fails is not retried: it was delivered).
   */
  #endAfter(settled: Promise<void>, ok: boolean, error: unknown): void {
    const context = this.#context;
    settled.then(
      () => {
        endAttempt(context, ok, error);
      },
      (failure: unknown) => {
        if (ok) context.decision ??= { error: failure };
        endAttempt(context, false, ok ? failure : error);
      },
    );
  }
}

/** `sent.discard()`, as a promise even if it throws. */
function discarded(sent: Sent<unknown>): Promise<void> {
  try {
    return sent.discard();
  } catch (error) {
    return Promise.reject(error);
  }
}
