// The call protocol's caller side over a WebSocket (`wss://host:port/alknet/call`): one binary
// message = one envelope. Plain TypeScript, the same in a browser and in Node.js; it shares the
// envelope, subscription, typing and error code with the native `Peer`.
import { type RemoteOperations, type RequestOptions, type Subscription, itemStream } from './call'
import { type Envelope, EnvelopeError, decodeEnvelope, encodeEnvelope, envelope, requestEnvelope } from './envelope'
import { CallError, ConnectError, callErrorFrom } from './errors'
import type { OperationMap, Registry } from './registry'
import { type OperationInfo, type TopicMessage, discover } from './remote'
import { type TypedApi, typedApi } from './typed'
import { unknownOption } from './wire'
import { type WebSocketLike, createWebSocket } from './websocket'

/** Options of the WebSocket client's {@link connect}. */
export interface ClientOptions {
  /** The node's WebSocket carrier: `wss://host:port/alknet/call` (`ws://` only without TLS). */
  url: string
  /**
   * A bearer token (peer token or `alk_…` API key). It travels in the WebSocket handshake as the
   * subprotocol `alknet.bearer.<token>`, never in the URL; a token with characters a subprotocol
   * cannot carry is sent with every request instead. A token the node does not accept does not
   * fail `connect()`: requests that need an identity answer `UNAUTHENTICATED`.
   */
  token?: string
  /** How long opening the WebSocket may take before `connect()` fails with `CONNECT_TIMEOUT` (default 10 000 ms). */
  connectTimeoutMs?: number
  /**
   * Node.js only: PEM certificate(s) to trust for the node (self-signed or from a private CA);
   * the `ws` package then carries the connection. A browser trusts its own certificate store.
   */
  ca?: string
  /**
   * Items of one subscription that may wait for its consumer (default 4096). A WebSocket has no
   * flow control on receive, so a consumer that falls further behind gets `OVERLOADED` and the
   * subscription is cancelled on the node, as a slow subscriber is on the node's side.
   */
  maxQueuedItems?: number
}

/** The subprotocol the node selects for the call protocol. */
const CALL_SUBPROTOCOL = 'alknet.call'
/** The prefix of the subprotocol that carries a bearer token. */
const BEARER_SUBPROTOCOL = 'alknet.bearer.'
/** What a subprotocol may consist of (an HTTP token, RFC 9110 `tchar`). */
const SUBPROTOCOL_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** The node's deadline for calls that ask for none (CALL-PROTOCOL.md). */
const DEFAULT_TIMEOUT_MS = 30_000
/** How long after a deadline the caller gives up on its own if the node did not answer `TIMEOUT`. */
const DEADLINE_GRACE_MS = 500

const OPTIONS: { readonly [K in keyof Required<ClientOptions>]: true } = {
  url: true,
  token: true,
  connectTimeoutMs: true,
  ca: true,
  maxQueuedItems: true,
}

/** What a request in flight does with the envelopes for its id, and with the connection's end. */
interface Pending {
  receive(message: Envelope): void
  fail(error: CallError): void
}

function cancelled(): CallError {
  return new CallError('CANCELLED', 'the request was cancelled by its AbortSignal')
}

function unavailable(why: string): CallError {
  return new CallError('UNAVAILABLE', `connection unavailable: ${why}`)
}

/** The error of a terminal `call.error` payload. */
function remoteError(payload: Record<string, unknown>): CallError {
  return callErrorFrom(payload) ?? new CallError('INTERNAL', 'the node sent a call.error without a code')
}

/** The bytes of a binary WebSocket message (an ArrayBuffer, or a view in some runtimes). */
function bytesOf(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  return undefined
}

/**
 * A connection to a node over its WebSocket carrier: call its operations, subscribe, publish.
 * The same surface as the native `Peer`, in a browser or in Node.js. It does not reconnect:
 * when the connection ends, requests in flight and later ones fail with `UNAVAILABLE`, and
 * {@link WebSocketPeer.closed} resolves; connect again for a new one.
 *
 * @example
 * ```ts
 * import { connect } from '@alkdev/alknet/client'
 * const peer = await connect({ url: 'wss://node.example:4433/alknet/call', token })
 * const sum = await peer.call<number>('math/add', { a: 1, b: 2 })
 * for await (const tick of peer.subscribe<string>('clock/ticks', { everyMs: 100 })) { … }
 * peer.close()
 * ```
 */
export class WebSocketPeer implements RemoteOperations {
  private readonly socket: WebSocketLike
  private readonly pending = new Map<string, Pending>()
  private readonly requestToken: string | undefined
  private readonly maxQueuedItems: number
  private nextId = 1
  /** Set once the connection has ended: what every request fails with from then on. */
  private ended: CallError | undefined
  private markClosed!: () => void

  /** Resolves once the connection has ended (either side closed it, or it was lost); requests in flight have failed by then. */
  readonly closed: Promise<void>

  /** @internal */
  constructor(socket: WebSocketLike, requestToken: string | undefined, maxQueuedItems: number) {
    this.socket = socket
    this.requestToken = requestToken
    this.maxQueuedItems = maxQueuedItems
    this.closed = new Promise((resolve) => (this.markClosed = resolve))
    socket.onmessage = (event) => this.receive(event.data)
    socket.onerror = () => {}
    socket.onclose = (event) => this.end(unavailable(`the WebSocket closed (code ${event.code}${event.reason ? `: ${event.reason}` : ''})`))
  }

  /** Calls a query or mutation. Rejects with a {@link CallError}. */
  call<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const signal = options?.signal
      if (signal?.aborted) return reject(cancelled())
      const id = this.open()
      const finish = (): void => {
        this.pending.delete(id)
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const giveUp = (error: CallError): void => {
        finish()
        this.send(envelope('call.aborted', id))
        reject(error)
      }
      const onAbort = (): void => giveUp(cancelled())
      const deadline = (options?.timeoutMs ?? DEFAULT_TIMEOUT_MS) + DEADLINE_GRACE_MS
      const timer = setTimeout(() => giveUp(new CallError('TIMEOUT', `${operation}: no answer within ${deadline} ms`)), deadline)
      this.pending.set(id, {
        receive: ({ type, payload }) => {
          if (type === 'call.responded') {
            finish()
            resolve(payload.output as T)
          } else if (type === 'call.error') {
            finish()
            reject(remoteError(payload))
          } else if (type === 'call.completed') {
            finish()
            reject(new CallError('INVALID_OPERATION_TYPE', `${operation} is a subscription; use subscribe`))
          } else if (type === 'call.aborted') {
            finish()
            reject(new CallError('CANCELLED', 'the callee gave up on the request'))
          }
        },
        fail: (error) => {
          finish()
          reject(error)
        },
      })
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        this.request(id, operation, input, options)
      } catch (e) {
        finish()
        reject(e)
      }
    })
  }

  /**
   * Subscribes; iterate with `for await`. Breaking out of the loop, `return()`, or aborting
   * `options.signal` cancels the subscription on the node (`call.aborted`).
   */
  subscribe<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Subscription<T> {
    return itemStream<T>(
      (sink) => {
        const id = this.open()
        this.pending.set(id, {
          receive: ({ type, payload }) => {
            if (type === 'call.responded') return sink.items([payload.output as T])
            if (type === 'call.completed') sink.end()
            else if (type === 'call.error') sink.fail(remoteError(payload))
            else if (type === 'call.aborted') sink.fail(new CallError('CANCELLED', 'the callee ended the subscription'))
            else return
            this.pending.delete(id)
          },
          fail: (error) => {
            this.pending.delete(id)
            sink.fail(error)
          },
        })
        try {
          this.request(id, operation, input, options)
        } catch (e) {
          this.pending.delete(id)
          throw e
        }
        return {
          request: () => {},
          cancel: () => {
            if (this.pending.delete(id)) this.send(envelope('call.aborted', id))
          },
        }
      },
      options,
      this.maxQueuedItems,
    )
  }

  /** Publishes to a topic on the node; resolves with how many subscriptions it reached. */
  async publish(topic: string, data: unknown, options?: RequestOptions): Promise<number> {
    const { delivered } = await this.call<{ delivered: number }>('pubsub/publish', { topic, data: data ?? null }, options)
    return delivered
  }

  /** Receives what is published to topics matching `pattern` (`*` one segment, `>` the rest). */
  topic<T = unknown>(pattern: string, options?: RequestOptions): Subscription<TopicMessage<T>> {
    return this.subscribe<TopicMessage<T>>('pubsub/subscribe', { topic: pattern }, options)
  }

  /** The operations this caller may call on the node, with their schemas. */
  discover(options?: RequestOptions): Promise<OperationInfo[]> {
    return discover(this, options)
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

  /** Closes the connection; requests in flight fail with `UNAVAILABLE`. Resolves once it has ended. */
  close(): Promise<void> {
    if (this.ended === undefined) {
      this.socket.close(1000)
      this.end(unavailable('closed by this side'))
    }
    return this.closed
  }

  /** A fresh request id, if the connection is still up. */
  private open(): string {
    if (this.ended !== undefined) throw this.ended
    return String(this.nextId++)
  }

  private request(id: string, operation: string, input: unknown, options: RequestOptions | undefined): void {
    const token = options?.token ?? this.requestToken
    let bytes: Uint8Array
    try {
      bytes = encodeEnvelope(requestEnvelope(id, operation, input, { timeoutMs: options?.timeoutMs, token }))
    } catch (e) {
      throw new CallError('INVALID_INPUT', `request cannot be sent: ${(e as Error).message}`)
    }
    this.socket.send(bytes)
  }

  private send(message: Envelope): void {
    if (this.ended === undefined) this.socket.send(encodeEnvelope(message))
  }

  private receive(data: unknown): void {
    if (this.ended !== undefined) return
    const bytes = bytesOf(data)
    if (bytes === undefined) return this.violation(1003, 'the node sent a text message; the call protocol uses binary messages')
    let message: Envelope
    try {
      message = decodeEnvelope(bytes)
    } catch (e) {
      if (!(e instanceof EnvelopeError)) throw e
      return this.violation(1002, `the node sent an invalid envelope (${e.message})`)
    }
    if (message.type === 'call.requested') {
      // The protocol is symmetric, but this client offers no operations.
      this.send(envelope('call.error', message.id, { code: 'NOT_FOUND', message: 'this WebSocket client serves no operations', retryable: false }))
      return
    }
    // An id not (or no longer) open: answers that crossed an abort, discarded.
    this.pending.get(message.id)?.receive(message)
  }

  /** The node broke the protocol: close with `code` and fail everything. */
  private violation(code: number, why: string): void {
    this.socket.close(code)
    this.end(unavailable(why))
  }

  private end(error: CallError): void {
    if (this.ended !== undefined) return
    this.ended = error
    for (const pending of [...this.pending.values()]) pending.fail(error)
    this.pending.clear()
    this.markClosed()
  }
}

/**
 * Opens a WebSocket to a node's call carrier. Rejects with a `ConnectError`: `INVALID_OPTION`
 * (the option is named), `UNREACHABLE` (nothing accepted the WebSocket at `url`, or what did is
 * not an alknet node), `CONNECT_TIMEOUT`.
 *
 * @example
 * ```ts
 * const peer = await connect({ url: `wss://${location.host}/alknet/call`, token })
 * ```
 */
export async function connect(options: ClientOptions): Promise<WebSocketPeer> {
  for (const key of Object.keys(options)) {
    if (!(key in OPTIONS)) throw unknownOption('connect()', key, Object.keys(OPTIONS))
  }
  const { url, token, connectTimeoutMs = 10_000, ca, maxQueuedItems = 4096 } = options
  if (typeof url !== 'string' || !/^wss?:\/\//i.test(url)) throw new ConnectError('INVALID_OPTION', `url must be a ws:// or wss:// URL (wss://host:port/alknet/call), not ${JSON.stringify(url)}`)
  if (!Number.isInteger(maxQueuedItems) || maxQueuedItems < 1) throw new ConnectError('INVALID_OPTION', `maxQueuedItems must be a whole number above 0, not ${maxQueuedItems}`)
  const inHandshake = token !== undefined && SUBPROTOCOL_CHARS.test(token)
  const protocols = inHandshake ? [CALL_SUBPROTOCOL, `${BEARER_SUBPROTOCOL}${token}`] : [CALL_SUBPROTOCOL]
  let socket: WebSocketLike
  try {
    socket = await createWebSocket(url, protocols, ca)
  } catch (e) {
    if (e instanceof ConnectError) throw e
    // The constructor throws for a malformed URL; the message names what is wrong, never the token.
    throw new ConnectError('INVALID_OPTION', `url ${JSON.stringify(url)}: ${(e as Error).message}`)
  }
  socket.binaryType = 'arraybuffer'
  await new Promise<void>((resolve, reject) => {
    const fail = (error: ConnectError): void => {
      clearTimeout(timer)
      socket.onopen = socket.onclose = null
      // `ws` reports closing a socket that is still connecting as an error: keep a listener.
      socket.onerror = () => {}
      socket.close()
      reject(error)
    }
    const timer = setTimeout(() => fail(new ConnectError('CONNECT_TIMEOUT', `no WebSocket to ${url} within ${connectTimeoutMs} ms`)), connectTimeoutMs)
    socket.onopen = () => {
      if (socket.protocol !== CALL_SUBPROTOCOL) {
        return fail(new ConnectError('UNREACHABLE', `${url} accepted the WebSocket without the ${CALL_SUBPROTOCOL} subprotocol: not an alknet node's call carrier`))
      }
      clearTimeout(timer)
      socket.onopen = socket.onerror = socket.onclose = null
      resolve()
    }
    // Browsers say nothing about why (by design); `ws` does (status code, TLS error).
    socket.onerror = (event) => fail(new ConnectError('UNREACHABLE', `no WebSocket to ${url}${event.message ? `: ${event.message}` : ''}`))
    socket.onclose = (event) => fail(new ConnectError('UNREACHABLE', `no WebSocket to ${url} (closed with code ${event.code})`))
  })
  return new WebSocketPeer(socket, token !== undefined && !inHandshake ? token : undefined, maxQueuedItems)
}
