import * as native from '../index.js'
import { Completions, type RemoteOperations, type RequestOptions, type Subscription, stream } from './call'
import { CallError, fromNative } from './errors'
import { HandlerHost, type HandlerErrorReporter, reportToConsole } from './host'
import { holdEventLoop } from './keepalive'
import type { Keypair } from './keypair'
import type { OperationMap, Registry } from './registry'
import { Publisher } from './publisher'
import { type OperationInfo, type TopicMessage, discover } from './remote'
import { type TypedApi, typedApi } from './typed'
import { connectConfigWire } from './wire'

export type { OperationInfo, TopicMessage } from './remote'

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** `host:port` of the node (QUIC, or TCP+TLS with `transport: 'tcp'`). Not needed with `iroh`. */
  address?: string
  /** The node's fingerprint, pinned exactly (`node.fingerprint` on the serving side). With `iroh`, the node id is the pin. */
  fingerprint?: string
  /** Dial over iroh: the node's ticket (`node.irohTicket`) or bare node id. */
  iroh?: string
  /** With `iroh`: the `https://` URL of the relay the node uses, if the ticket does not name it. */
  relay?: string
  /** With `iroh`: PEM certificate(s) to trust for that relay. */
  relayCa?: string
  /** With `iroh`: direct UDP addresses (`ip:port`) to try. */
  irohAddrs?: string[]
  /** This side's key: the server's peer list maps its fingerprint to an identity. */
  key: Keypair
  /** A bearer token (peer token or `alk_…` API key) sent with every request. */
  token?: string
  /**
   * Force one carrier: `quic` or `tcp` (TCP+TLS). Unset (default): QUIC first and, 250 ms later
   * or as soon as QUIC fails, TCP+TLS to the same port; whichever completes first is used, and
   * remembered for that address for 10 minutes. A network that drops UDP costs one head start.
   */
  transport?: 'quic' | 'tcp'
  /** How long connecting may take before it fails with `CONNECT_TIMEOUT` (default 10 000 ms). */
  connectTimeoutMs?: number
  /**
   * Reconnect when the connection drops (off by default): `true` or backoff settings. While
   * reconnecting, calls fail with `UNAVAILABLE` (retryable) unless they ask for `retry`;
   * `topic()` iterators (and `subscribe()` with `resumable: true`) subscribe again once
   * connected and keep yielding. Watch {@link Peer.status} for the events.
   */
  reconnect?: boolean | ReconnectOptions
  /** Operations this side offers the node: its handlers may call them back through `ctx.peer`. */
  operations?: Registry
  /** Where failures of `operations`' handlers are reported (default `console.error`). */
  onHandlerError?: HandlerErrorReporter
}

/** Backoff of a reconnecting peer: capped exponential, with jitter. */
export interface ReconnectOptions {
  /** Delay before the first attempt (default 100 ms). */
  initialDelayMs?: number
  /** Cap on the delay between attempts (default 5 000 ms). */
  maxDelayMs?: number
  /** Give up after this many failed attempts in a row (default: never); the peer then closes. */
  maxAttempts?: number
}

/** What happened to a peer's connection, as {@link Peer.status} reports it. */
export type PeerStatus =
  | { type: 'connected' }
  | { type: 'disconnected' }
  | { type: 'reconnecting'; attempt: number; delayMs: number; error?: Error }
  | { type: 'resubscribed'; operation: string }
  | { type: 'closed'; error?: Error }

/** Options of a subscription on a {@link Peer}. */
export interface SubscribeOptions extends RequestOptions {
  /**
   * Subscribe again after a reconnect and keep yielding (default: `true` for `topic()`, `false`
   * for `subscribe()`). Messages published while disconnected are missed: `onResubscribe` (and a
   * `resubscribed` status event) marks the gap.
   */
  resumable?: boolean
  /** Called each time the subscription was renewed after a reconnect: items may be missing before the next one. */
  onResubscribe?: () => void
}

/** Options of a call on a {@link Peer}. */
export interface CallOptions extends RequestOptions {
  /**
   * For idempotent operations on a reconnecting peer: on `UNAVAILABLE`, wait for the connection
   * to come back and send the call once more (default false).
   */
  retry?: boolean
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
export class Peer implements RemoteOperations {
  private native: native.Peer
  private readonly completions: Completions
  private readonly release: () => void
  private readonly redial: (() => Promise<native.Peer>) | undefined
  private readonly backoff: Required<Omit<ReconnectOptions, 'maxAttempts'>> & { maxAttempts: number }
  private closed = false
  /** Bumped on every new connection; a subscription knows which one it was opened on. */
  private generation = 0
  private readonly events = new StatusBroadcast()
  private connectedWaiters: (() => void)[] = []
  /** Resumable subscriptions renew themselves here when a new connection is up. */
  private readonly onConnected = new Set<() => void>()
  /** Publishes waiting to travel together. */
  private readonly publisher = new Publisher(
    (operation, inputJson, token) => this.callJson(operation, inputJson, token === undefined ? undefined : { token }),
    () => this.generation,
  )

  /** @internal */
  constructor(peer: native.Peer, completions: Completions, redial?: () => Promise<native.Peer>, reconnect?: ReconnectOptions) {
    this.native = peer
    this.completions = completions
    this.release = holdEventLoop()
    this.redial = redial
    this.backoff = {
      initialDelayMs: reconnect?.initialDelayMs ?? 100,
      maxDelayMs: reconnect?.maxDelayMs ?? 5_000,
      maxAttempts: reconnect?.maxAttempts ?? Number.POSITIVE_INFINITY,
    }
    if (redial !== undefined) void this.watch()
  }

  /** The remote node's fingerprint as pinned. */
  get fingerprint(): string | null {
    return this.native.fingerprint
  }

  /**
   * The connection's events as they happen: `disconnected`, `reconnecting` (attempt, delay),
   * `connected`, `resubscribed`, and finally `closed`, which ends the iteration.
   */
  status(): AsyncIterableIterator<PeerStatus> {
    return this.events.subscribe(this.closed)
  }

  /** Follows the connection: when it drops (and the peer is not closed), reconnects. */
  private async watch(): Promise<void> {
    for (;;) {
      await this.native.closed().catch(() => undefined)
      if (this.closed) return
      this.events.emit({ type: 'disconnected' })
      const next = await this.reconnect()
      if (next === undefined) return
      this.native = next
      this.generation++
      this.events.emit({ type: 'connected' })
      for (const renew of [...this.onConnected]) renew()
      for (const wake of this.connectedWaiters.splice(0)) wake()
    }
  }

  private async reconnect(): Promise<native.Peer | undefined> {
    let error: Error | undefined
    for (let attempt = 1; attempt <= this.backoff.maxAttempts; attempt++) {
      const base = Math.min(this.backoff.maxDelayMs, this.backoff.initialDelayMs * 2 ** (attempt - 1))
      const delayMs = Math.round(base * (0.5 + Math.random() / 2))
      this.events.emit({ type: 'reconnecting', attempt, delayMs, error })
      // Backoff between attempts: a timer is what it is, not a synchronisation.
      await new Promise((resolve) => setTimeout(resolve, delayMs))
      if (this.closed) return undefined
      try {
        const next = await this.redial!()
        if (this.closed) {
          next.close()
          return undefined
        }
        return next
      } catch (e) {
        error = fromNative(e) as Error
      }
    }
    void this.shutdown(error)
    return undefined
  }

  /** Resolves once a connection newer than `generation` is up; rejects if the peer closes first. */
  private connectedAfter(generation: number, signal?: AbortSignal): Promise<void> {
    if (this.generation > generation) return Promise.resolve()
    if (this.closed || this.redial === undefined) return Promise.reject(new CallError('UNAVAILABLE', 'the peer is closed'))
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(new CallError('CANCELLED', 'the request was cancelled by its AbortSignal'))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.connectedWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort)
        if (this.closed) reject(new CallError('UNAVAILABLE', 'the peer is closed'))
        else resolve()
      })
    })
  }

  /** Calls a query or mutation. Rejects with a {@link CallError}. */
  call<T = unknown>(operation: string, input: unknown, options?: CallOptions): Promise<T> {
    let inputJson: string
    try {
      inputJson = JSON.stringify(input ?? null)
    } catch (e) {
      return Promise.reject(e)
    }
    return this.callJson<T>(operation, inputJson, options)
  }

  /** {@link Peer.call} with the input already encoded. */
  private callJson<T>(operation: string, inputJson: string, options?: CallOptions): Promise<T> {
    const attempt = (): Promise<T> => {
      const peer = this.native
      return this.completions.run<T>((id, o) => peer.call(id, operation, inputJson, o), (id) => peer.cancel(id), options)
    }
    if (!options?.retry || this.redial === undefined) return attempt()
    const generation = this.generation
    return attempt().catch(async (e: unknown) => {
      if (!(e instanceof CallError && e.code === 'UNAVAILABLE')) throw e
      await this.connectedAfter(generation, options.signal)
      return attempt()
    })
  }

  /**
   * Subscribes; iterate with `for await`. Breaking out of the loop, `return()`, or aborting
   * `options.signal` cancels the subscription on the remote node. With `resumable` on a
   * reconnecting peer, it subscribes again after a reconnect.
   */
  subscribe<T = unknown>(operation: string, input: unknown, options?: SubscribeOptions): Subscription<T> {
    const inputJson = JSON.stringify(input ?? null)
    const open = (): Subscription<T> => {
      const peer = this.native
      return stream<T>((o, listener) => peer.subscribe(operation, inputJson, o, listener), options)
    }
    if (!options?.resumable || this.redial === undefined) return open()
    return this.resumable(operation, open, options)
  }

  /**
   * A subscription that opens again on the next connection when this one drops. The new one is
   * opened as soon as the peer has reconnected (not when the consumer next pulls), so that what
   * is published after the reconnect reaches it; the consumer first drains what the old one
   * delivered, then continues with the new one.
   */
  private resumable<T>(operation: string, open: () => Subscription<T>, options: SubscribeOptions): Subscription<T> {
    let current = open()
    let generation = this.generation
    let renewed: Subscription<T> | undefined
    let ended = false
    const renew = (): void => {
      if (ended || this.generation === generation) return
      generation = this.generation
      void renewed?.return()
      renewed = open()
      options.onResubscribe?.()
      this.events.emit({ type: 'resubscribed', operation })
    }
    this.onConnected.add(renew)
    const finish = async (): Promise<void> => {
      ended = true
      this.onConnected.delete(renew)
      await Promise.all([current.return(), renewed?.return()])
    }
    const iterator: Subscription<T> = {
      next: async () => {
        for (;;) {
          try {
            const next = await current.next()
            if (next.done) await finish()
            return next
          } catch (e) {
            if (!(e instanceof CallError && e.code === 'UNAVAILABLE') || this.closed || ended) {
              await finish()
              throw e
            }
            if (renewed === undefined) {
              try {
                await this.connectedAfter(generation, options.signal)
              } catch (stop) {
                await finish()
                throw stop
              }
              renew()
            }
            current = renewed ?? current
            renewed = undefined
          }
        }
      },
      return: async () => {
        await finish()
        return { value: undefined, done: true }
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
    }
    return iterator
  }

  /**
   * Publishes to a topic on the remote node (the `pubsub/publish` operation, with this peer's
   * token unless `options.token` names another); resolves with how many subscriptions it reached.
   * Publishes made in the same tick or while earlier ones are in flight travel together as one
   * `pubsub/publish_batch` request, in the order they were made (those with a `signal` or
   * `timeoutMs` go alone); each promise still settles with its own count or error.
   */
  async publish(topic: string, data: unknown, options?: RequestOptions): Promise<number> {
    if (options?.signal === undefined && options?.timeoutMs === undefined) return this.publisher.publish(topic, data, options?.token)
    const out = await this.call<{ delivered: number }>('pubsub/publish', { topic, data: data ?? null }, options)
    return out.delivered
  }

  /**
   * Receives what is published to topics matching `pattern` (`*` one segment, `>` the rest). On
   * a reconnecting peer it resumes after a reconnect unless `resumable: false`.
   */
  topic<T = unknown>(pattern: string, options?: SubscribeOptions): Subscription<TopicMessage<T>> {
    return this.subscribe<TopicMessage<T>>('pubsub/subscribe', { topic: pattern }, { resumable: true, ...options })
  }

  /**
   * The registry's operations as typed methods, called on this peer: `math/add` becomes
   * `api.math.add(input, options?)`, typed from the registry's schemas.
   *
   * @example
   * ```ts
   * const api = peer.typed(ops)
   * const sum = await api.math.add({ a: 1, b: 2 }) // number
   * ```
   */
  typed<Ops extends OperationMap>(registry: Registry<Ops>): TypedApi<Ops> {
    return typedApi(this, registry)
  }

  /** The operations this caller may call on the node, with their schemas. */
  discover(options?: RequestOptions): Promise<OperationInfo[]> {
    return discover(this, options)
  }

  /**
   * Starts a local SOCKS5 server whose CONNECTs leave from the node, names resolved there (what
   * `curl --socks5-hostname` asks for). The node must offer the service (`services: { ssh: true }`
   * or `{ tunnel: true }`) and its forwarding policy must allow the destinations. It dials its own
   * connection to the node, on first use, and redials when it is lost.
   *
   * @example
   * ```ts
   * const socks = await peer.socks5({ listen: '127.0.0.1:1080' })
   * // curl --socks5-hostname 127.0.0.1:1080 https://example.com
   * socks.close()
   * ```
   */
  async socks5(options: Socks5Options): Promise<TunnelListener> {
    try {
      return await this.native.socks5(options.listen, options.via)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * Starts a local forward (`ssh -L`): connections to `listen` reach `host:port` from the node.
   * With `remote: true` it is `ssh -R` instead (over SSH only): the node listens on `listen`
   * (`bind:port` on the node; its forwarding policy must allow the bind, by default loopback only;
   * or an absolute path: a new Unix socket on the node, which a `listen` rule's `sockets` must
   * allow, refused if a file is there, removed on `close()`) and each connection comes back to
   * `host:port` as this machine reaches it; the listener's `address` is then the node's. With `socket` instead of `host` and `port`, connections reach
   * the Unix socket at that path on the node (`ssh -L port:/path`, over SSH; the node's
   * forwarding policy must name it in a `sockets` rule).
   */
  async forward(options: ForwardOptions): Promise<TunnelListener> {
    if ('socket' in options) {
      if (options.via === 'tunnel') {
        throw new TypeError("a Unix socket forward needs via: 'ssh' (the native tunnel reaches host:port only)")
      }
      try {
        return await this.native.forwardSocket(options.listen, options.socket)
      } catch (e) {
        throw fromNative(e)
      }
    }
    if (options.remote === true && options.via === 'tunnel') {
      throw new TypeError("remote forwards need via: 'ssh' (the native tunnel carries outbound connections only)")
    }
    try {
      if (options.remote === true) {
        return await this.native.remoteForward(options.listen, options.host, options.port)
      }
      return await this.native.forward(options.listen, options.host, options.port, options.via)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** Closes the connection; in-flight requests fail. The process may exit afterwards. */
  async close(): Promise<void> {
    await this.shutdown()
  }

  private async shutdown(error?: Error): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.native.close()
    this.release()
    for (const wake of this.connectedWaiters.splice(0)) wake()
    this.events.emit(error === undefined ? { type: 'closed' } : { type: 'closed', error })
    this.events.end()
  }
}

/** A listener whose connections leave from the node, or for a remote forward come back from it (see {@link Peer.socks5}, {@link Peer.forward}). */
export interface TunnelListener {
  /** The bound `ip:port` (for a remote forward on a Unix socket: its path on the node). */
  readonly address: string
  /**
   * Stops accepting and ends the connections it carries; resolves once the port is closed (for a
   * remote forward: once the node was told, which then closes its port).
   */
  close(): Promise<void>
}

/** Options of {@link Peer.socks5}. */
export interface Socks5Options {
  /** Local `ip:port` to listen on (port 0 picks a free one). Keep it on loopback: it asks for no password. */
  listen: string
  /** What carries the connections: `'ssh'` (default, `alknet/ssh`) or `'tunnel'` (`alknet/tunnel`, QUIC only). */
  via?: 'ssh' | 'tunnel'
}

/** Options of {@link Peer.forward}: to `host:port`, or to a Unix socket on the node. */
export type ForwardOptions = HostForwardOptions | SocketForwardOptions

/** Options of {@link Peer.forward} to `host:port`. */
export interface HostForwardOptions extends Socks5Options {
  /** The destination as the node resolves it (a name or an address). */
  host: string
  /** The destination port. */
  port: number
  /**
   * `ssh -R`: `listen` is on the node (`bind:port`, or an absolute path for a Unix socket there)
   * and `host:port` is reached from here (default false).
   */
  remote?: boolean
}

/** Options of {@link Peer.forward} to a Unix socket on the node (`ssh -L port:/path`, over SSH). */
export interface SocketForwardOptions extends Socks5Options {
  /** The socket's absolute path on the node; a `sockets` rule of the node's policy must name it. */
  socket: string
}

/** Fans status events out to every `status()` iterator; each has its own unbounded-but-tiny queue. */
class StatusBroadcast {
  private readonly listeners = new Set<(event: PeerStatus | undefined) => void>()

  emit(event: PeerStatus): void {
    for (const listener of this.listeners) listener(event)
  }

  end(): void {
    for (const listener of this.listeners) listener(undefined)
    this.listeners.clear()
  }

  subscribe(alreadyClosed: boolean): AsyncIterableIterator<PeerStatus> {
    const queue: (PeerStatus | undefined)[] = alreadyClosed ? [{ type: 'closed' }, undefined] : []
    let wake: (() => void) | undefined
    const listener = (event: PeerStatus | undefined): void => {
      queue.push(event)
      wake?.()
    }
    if (!alreadyClosed) this.listeners.add(listener)
    const listeners = this.listeners
    const iterator: AsyncIterableIterator<PeerStatus> = {
      async next(): Promise<IteratorResult<PeerStatus>> {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve))
        wake = undefined
        const event = queue.shift()
        if (event === undefined) {
          listeners.delete(listener)
          return { value: undefined, done: true }
        }
        return { value: event, done: false }
      },
      async return(): Promise<IteratorResult<PeerStatus>> {
        listeners.delete(listener)
        queue.length = 0
        return { value: undefined, done: true }
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
    }
    return iterator
  }
}

/**
 * Dials a node, pinning its fingerprint. Rejects if the node cannot be reached or is not the one
 * pinned (the error says which fingerprint it presented).
 */
export async function connect(options: ConnectOptions): Promise<Peer> {
  const host = options.operations ? new HandlerHost(options.operations, options.onHandlerError ?? reportToConsole) : undefined
  const completions = new Completions((wake) => new native.CompletionQueue(wake))
  try {
    const args = { config: JSON.stringify(connectConfigWire(options)), token: options.token, operations: host?.specsJson() }
    const dial = () => native.connect(args, options.key.native, completions.queue, host?.native)
    const peer = await dial()
    const reconnect = options.reconnect === true ? {} : options.reconnect === false ? undefined : options.reconnect
    return new Peer(peer, completions, reconnect === undefined ? undefined : dial, reconnect)
  } catch (e) {
    throw fromNative(e)
  }
}
