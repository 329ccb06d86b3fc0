import * as native from '../index.js'
import { CallError, fromNative, parseCallError } from './errors'
import { holdEventLoop } from './keepalive'
import type { Keypair } from './keypair'

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** `host:port` of the node. */
  address: string
  /** The node's fingerprint, pinned exactly (`node.fingerprint` on the serving side). */
  fingerprint: string
  /** This side's key: the server's peer list maps its fingerprint to an identity. */
  key: Keypair
  /** A bearer token (peer token or `alk_…` API key) sent with every request. */
  token?: string
  /** `quic` (default) or `tcp` (TCP+TLS, for networks that block UDP). */
  transport?: 'quic' | 'tcp'
}

/** Per-request options. */
export interface RequestOptions {
  /** Aborting it cancels the request on the remote node; the call rejects with `CANCELLED`. */
  signal?: AbortSignal
  /** The deadline to ask for; the call fails with `TIMEOUT` after it. */
  timeoutMs?: number
  /** A bearer token for this request only. */
  token?: string
}

/** One message of a topic. */
export interface TopicMessage<T = unknown> {
  /** The concrete topic it was published to. */
  topic: string
  /** What was published. */
  data: T
}

let nextCancelId = 1

function cancelled(): CallError {
  return new CallError('CANCELLED', 'the request was cancelled by its AbortSignal')
}

function optionsJson(options: RequestOptions | undefined, cancelId?: number): string {
  return JSON.stringify({ timeoutMs: options?.timeoutMs, token: options?.token, cancelId })
}

/**
 * A connection to a node: call its operations, subscribe, publish.
 *
 * @example
 * ```ts
 * const peer = await connect({ address, fingerprint: node.fingerprint, key })
 * const sum = await peer.call<number>('math/add', { a: 1, b: 2 })
 * for await (const tick of peer.subscribe<string>('clock/ticks', { everyMs: 100 })) { … }
 * await peer.close()
 * ```
 */
export class Peer {
  private readonly native: native.Peer
  private readonly release: () => void
  private closed = false

  /** @internal */
  constructor(peer: native.Peer) {
    this.native = peer
    this.release = holdEventLoop()
  }

  /** The remote node's fingerprint as pinned. */
  get fingerprint(): string | null {
    return this.native.fingerprint
  }

  /** Calls a query or mutation. Rejects with a {@link CallError}. */
  async call<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Promise<T> {
    const signal = options?.signal
    if (signal?.aborted) throw cancelled()
    const cancelId = signal ? nextCancelId++ : undefined
    const onAbort = (): void => {
      if (cancelId !== undefined) this.native.cancel(cancelId)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const out = await this.native.call(operation, JSON.stringify(input ?? null), optionsJson(options, cancelId))
      return JSON.parse(out) as T
    } catch (e) {
      throw fromNative(e)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Subscribes; iterate with `for await`. Breaking out of the loop, `return()`, or aborting
   * `options.signal` cancels the subscription on the remote node.
   */
  subscribe<T = unknown>(operation: string, input: unknown, options?: RequestOptions): AsyncIterableIterator<T> {
    const queue: T[] = []
    let failure: unknown
    let done = false
    let waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined

    const settle = (): void => {
      if (!waiting) return
      const w = waiting
      if (queue.length > 0) {
        waiting = undefined
        w.resolve({ value: queue.shift() as T, done: false })
      } else if (failure !== undefined) {
        waiting = undefined
        const f = failure
        failure = undefined
        done = true
        w.reject(f)
      } else if (done) {
        waiting = undefined
        w.resolve({ value: undefined, done: true })
      }
    }

    const listener = (event: string, json: string): void => {
      if (done) return
      if (event === 'item') queue.push(JSON.parse(json) as T)
      else if (event === 'error') failure = parseCallError(json) ?? new CallError('INTERNAL', json)
      else done = true
      settle()
    }

    let subscription: native.Subscription | undefined
    const stop = (): void => {
      subscription?.cancel()
      signal?.removeEventListener('abort', onAbort)
    }
    const signal = options?.signal
    const onAbort = (): void => {
      if (done) return
      stop()
      failure = cancelled()
      queue.length = 0
      settle()
    }
    if (signal?.aborted) {
      failure = cancelled()
    } else {
      try {
        subscription = this.native.subscribe(operation, JSON.stringify(input ?? null), optionsJson(options), listener)
      } catch (e) {
        failure = fromNative(e)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
    }

    const iterator: AsyncIterableIterator<T> = {
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
        if (!done) {
          done = true
          stop()
        }
        queue.length = 0
        settle()
        return { value: undefined, done: true }
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
    }
    return iterator
  }

  /** Publishes to a topic on the remote node; resolves with how many subscriptions it reached. */
  async publish(topic: string, data: unknown): Promise<number> {
    try {
      return await this.native.publish(topic, JSON.stringify(data ?? null))
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** Receives what is published to topics matching `pattern` (`*` one segment, `>` the rest). */
  topic<T = unknown>(pattern: string, options?: RequestOptions): AsyncIterableIterator<TopicMessage<T>> {
    return this.subscribe<TopicMessage<T>>('pubsub/subscribe', { topic: pattern }, options)
  }

  /** Closes the connection; in-flight requests fail. The process may exit afterwards. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.native.close()
    this.release()
  }
}

/** Dials a node, pinning its fingerprint. Rejects if the node cannot be reached or is not the one pinned. */
export async function connect(options: ConnectOptions): Promise<Peer> {
  const peer = await native.connect(
    { address: options.address, fingerprint: options.fingerprint, token: options.token, transport: options.transport },
    options.key.native,
  )
  return new Peer(peer)
}
