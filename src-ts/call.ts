import type * as native from '../index.js'
import { CallError, callErrorFrom, fromNative, parseCallError } from './errors'

/** Per-request options of a call or subscription. */
export interface RequestOptions {
  /** Aborting it cancels the request on the remote node; the call rejects with `CANCELLED`. */
  signal?: AbortSignal
  /** The deadline to ask for; the call fails with `TIMEOUT` after it. */
  timeoutMs?: number
  /** A bearer token for this request only. */
  token?: string
}

/**
 * A running subscription: iterate it with `for await`; `break`, `return()` or the request's
 * `AbortSignal` cancel it on the remote node.
 */
export interface Subscription<T> extends AsyncIterableIterator<T> {
  /** Cancels the subscription on the remote node; resolves once nothing more will be delivered. */
  return(): Promise<IteratorResult<T>>
}

/** What can be called: a connected {@link Peer}, or the caller of a request (`ctx.peer`). */
export interface RemoteOperations {
  /** Calls a query or mutation. Rejects with a {@link CallError}. */
  call<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Promise<T>
  /**
   * Subscribes; iterate with `for await`. Breaking out of the loop, `return()`, or aborting
   * `options.signal` cancels the subscription on the remote node.
   */
  subscribe<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Subscription<T>
}

/** Items a consumer takes before more credit is granted to the native side. */
const CREDIT_BATCH = 64

function cancelled(): CallError {
  return new CallError('CANCELLED', 'the request was cancelled by its AbortSignal')
}

function optionsJson(options: RequestOptions | undefined, cancelId?: number): string | undefined {
  if (options === undefined && cancelId === undefined) return undefined
  return JSON.stringify({ timeoutMs: options?.timeoutMs, token: options?.token, cancelId })
}

/** A call in flight: how it settles, and the abort listener to remove when it does. */
interface Waiter {
  resolve: (value: unknown) => void
  reject: (error: unknown) => void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/**
 * The calls a peer or host has in flight. The native side queues each outcome under the id the
 * call was started with and wakes {@link Completions.drain}, which takes every outcome waiting
 * as one JSON array: calls that finish together cost one wake-up and one `JSON.parse`. One
 * promise per call, settled with the parsed output.
 * @internal
 */
export class Completions {
  /** The native queue the peer's or host's calls finish into. */
  readonly queue: native.CompletionQueue
  private readonly pending = new Map<number, Waiter>()
  private nextId = 1

  /** `makeQueue` builds the native queue around the wake-up it is given. */
  constructor(makeQueue: (wake: () => void) => native.CompletionQueue) {
    this.queue = makeQueue(() => this.drain())
  }

  /** Settles the calls whose outcomes wait in the native queue. */
  private drain(): void {
    const outcomes = JSON.parse(this.queue.take()) as Array<[number, boolean, unknown]>
    for (const [id, ok, value] of outcomes) this.complete(id, ok, value)
  }

  private complete(id: number, ok: boolean, value: unknown): void {
    const waiter = this.pending.get(id)
    if (waiter === undefined) return
    this.pending.delete(id)
    if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener('abort', waiter.onAbort)
    if (ok) waiter.resolve(value)
    else waiter.reject(callErrorFrom(value) ?? new CallError('INTERNAL', JSON.stringify(value)))
  }

  /**
   * Starts a native call with `options` and resolves with its parsed output: an `AbortSignal`
   * becomes the call's cancel id; failures reject with a {@link CallError}.
   */
  run<T>(
    start: (callId: number, optionsJson: string | undefined) => void,
    cancel: (cancelId: number) => void,
    options?: RequestOptions,
  ): Promise<T> {
    const signal = options?.signal
    if (signal?.aborted) return Promise.reject(cancelled())
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const onAbort = signal === undefined ? undefined : (): void => cancel(id)
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject, signal, onAbort })
      try {
        start(id, optionsJson(options, signal === undefined ? undefined : id))
      } catch (e) {
        this.pending.delete(id)
        reject(fromNative(e))
        return
      }
      if (onAbort !== undefined) signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}

/** The native side of a subscription: its listener receives `items` (a JSON array), `error` or `end`. @internal */
export type OpenSubscription = (
  optionsJson: string | undefined,
  listener: (event: string, json: string) => void,
) => native.Subscription

/** A native subscription as an async iterator (see {@link itemStream}). @internal */
export function stream<T>(open: OpenSubscription, options?: RequestOptions): Subscription<T> {
  return itemStream<T>(
    (sink) =>
      open(optionsJson(options), (event, json) => {
        if (event === 'items') sink.items(JSON.parse(json) as T[])
        else if (event === 'error') sink.fail(parseCallError(json) ?? new CallError('INTERNAL', json))
        else sink.end()
      }),
    options,
  )
}

/** Where a carrier delivers what a subscription produces. @internal */
export interface StreamSink<T> {
  /** Items, in order. */
  items(batch: T[]): void
  /** The subscription failed; nothing follows. */
  fail(error: CallError): void
  /** The subscription ended normally; nothing follows. */
  end(): void
}

/** How a subscription's consumer steers its carrier. @internal */
export interface StreamControl {
  /** The consumer took `n` more items: grant that much credit (a carrier without credit ignores it). */
  request(n: number): void
  /** Cancel it on the remote node; deliver nothing more. */
  cancel(): void
}

/**
 * A subscription as an async iterator, whatever carries it. Items arrive in batches; with a
 * credit-based carrier at most a few hundred wait here. A carrier without credit (the WebSocket
 * client) passes `maxQueued`: a consumer that lets more pile up gets `OVERLOADED`, as a slow
 * subscriber does on the node, and the subscription is cancelled remotely. `return()`, `break`
 * or the signal cancel it.
 * @internal
 */
export function itemStream<T>(open: (sink: StreamSink<T>) => StreamControl, options?: RequestOptions, maxQueued = Number.POSITIVE_INFINITY): Subscription<T> {
  let items: T[] = []
  let head = 0
  let taken = 0
  let failure: unknown
  let done = false
  let waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined
  let control: StreamControl | undefined
  const signal = options?.signal

  const take = (): T => {
    const item = items[head++] as T
    if (head === items.length) {
      items = []
      head = 0
    }
    if (++taken >= CREDIT_BATCH && !done) {
      control?.request(taken)
      taken = 0
    }
    return item
  }

  const settle = (): void => {
    if (!waiting) return
    const w = waiting
    if (head < items.length) {
      waiting = undefined
      w.resolve({ value: take(), done: false })
    } else if (failure !== undefined) {
      waiting = undefined
      const f = failure
      failure = undefined
      w.reject(f)
    } else if (done) {
      waiting = undefined
      w.resolve({ value: undefined, done: true })
    }
  }

  const stop = (): void => {
    done = true
    control?.cancel()
    signal?.removeEventListener('abort', onAbort)
  }
  /** Ends the subscription here and remotely with `error`, dropping what is queued (it is next). */
  const abandon = (error: CallError): void => {
    stop()
    failure = error
    items = []
    head = 0
    settle()
  }
  const onAbort = (): void => {
    if (!done) abandon(cancelled())
  }

  const sink: StreamSink<T> = {
    items: (batch) => {
      if (done) return
      if (items.length === 0) items = batch
      else for (const item of batch) items.push(item)
      if (items.length - head > maxQueued) {
        abandon(new CallError('OVERLOADED', `more than ${maxQueued} items of this subscription waited for the consumer; it was cancelled`))
        return
      }
      settle()
    },
    fail: (error) => {
      if (done) return
      failure = error
      done = true
      signal?.removeEventListener('abort', onAbort)
      settle()
    },
    end: () => {
      if (done) return
      done = true
      signal?.removeEventListener('abort', onAbort)
      settle()
    },
  }

  if (signal?.aborted) {
    failure = cancelled()
    done = true
  } else {
    try {
      control = open(sink)
      signal?.addEventListener('abort', onAbort, { once: true })
    } catch (e) {
      failure = fromNative(e)
      done = true
    }
  }

  const iterator: Subscription<T> = {
    next: () =>
      new Promise<IteratorResult<T>>((resolve, reject) => {
        if (waiting) {
          reject(new Error('next() called again before the previous call settled'))
          return
        }
        waiting = { resolve, reject }
        settle()
      }),
    return: async () => {
      if (!done) stop()
      items = []
      head = 0
      failure = undefined
      settle()
      return { value: undefined, done: true }
    },
    [Symbol.asyncIterator]() {
      return iterator
    },
  }
  return iterator
}
