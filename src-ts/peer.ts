import * as native from '../index.js'
import { Completions, type RemoteOperations, type RequestOptions, type Subscription, stream } from './call'
import { fromNative } from './errors'
import { HandlerHost, type HandlerErrorReporter, reportToConsole } from './host'
import { holdEventLoop } from './keepalive'
import type { Keypair } from './keypair'
import type { Access, ErrorDeclaration, OperationMap, OperationType, Registry } from './registry'
import { type TypedApi, typedApi } from './typed'
import { ACCESS, ERROR_DECLARATION, connectConfigWire, fromWire } from './wire'

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
  /** Operations this side offers the node: its handlers may call them back through `ctx.peer`. */
  operations?: Registry
  /** Where failures of `operations`' handlers are reported (default `console.error`). */
  onHandlerError?: HandlerErrorReporter
}

/** One message of a topic. */
export interface TopicMessage<T = unknown> {
  /** The concrete topic it was published to. */
  topic: string
  /** What was published. */
  data: T
}

/** An operation as the remote node describes it to this caller (`services/list` + `services/schema`). */
export interface OperationInfo {
  /** e.g. `math/add`. */
  name: string
  /** Query, mutation or subscription. */
  type: OperationType
  /** What it does, if the node said. */
  description?: string
  /** JSON Schema of the input. */
  inputSchema: unknown
  /** JSON Schema of the output (of each item, for a subscription). */
  outputSchema: unknown
  /** Error codes it declares. */
  errors: ErrorDeclaration[]
  /** Who may call it. */
  access: Access
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
  private readonly native: native.Peer
  private readonly completions: Completions
  private readonly release: () => void
  private closed = false

  /** @internal */
  constructor(peer: native.Peer, completions: Completions) {
    this.native = peer
    this.completions = completions
    this.release = holdEventLoop()
  }

  /** The remote node's fingerprint as pinned. */
  get fingerprint(): string | null {
    return this.native.fingerprint
  }

  /** Calls a query or mutation. Rejects with a {@link CallError}. */
  call<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Promise<T> {
    let inputJson: string
    try {
      inputJson = JSON.stringify(input ?? null)
    } catch (e) {
      return Promise.reject(e)
    }
    const peer = this.native
    return this.completions.run<T>((id, o) => peer.call(id, operation, inputJson, o), (id) => peer.cancel(id), options)
  }

  /**
   * Subscribes; iterate with `for await`. Breaking out of the loop, `return()`, or aborting
   * `options.signal` cancels the subscription on the remote node.
   */
  subscribe<T = unknown>(operation: string, input: unknown, options?: RequestOptions): Subscription<T> {
    const inputJson = JSON.stringify(input ?? null)
    return stream<T>((o, listener) => this.native.subscribe(operation, inputJson, o, listener), options)
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
  topic<T = unknown>(pattern: string, options?: RequestOptions): Subscription<TopicMessage<T>> {
    return this.subscribe<TopicMessage<T>>('pubsub/subscribe', { topic: pattern }, options)
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
  async discover(options?: RequestOptions): Promise<OperationInfo[]> {
    const list = await this.call<{ operations: { name: string }[] }>('services/list', {}, options)
    const schemas = await Promise.all(list.operations.map((op) => this.call<Record<string, unknown>>('services/schema', { name: op.name }, options)))
    return schemas.map(operationInfo)
  }

  /** Closes the connection; in-flight requests fail. The process may exit afterwards. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.native.close()
    this.release()
  }
}

/** A `services/schema` answer in the TypeScript API's casing. */
function operationInfo(schema: Record<string, unknown>): OperationInfo {
  const info: OperationInfo = {
    name: String(schema.name),
    type: schema.type as OperationType,
    inputSchema: schema.input_schema,
    outputSchema: schema.output_schema,
    errors: ((schema.errors ?? []) as Record<string, unknown>[]).map((e) => fromWire<ErrorDeclaration>(e, ERROR_DECLARATION)),
    access: fromWire<Access>((schema.access ?? {}) as Record<string, unknown>, ACCESS),
  }
  if (typeof schema.description === 'string') info.description = schema.description
  return info
}

/**
 * Dials a node, pinning its fingerprint. Rejects if the node cannot be reached or is not the one
 * pinned (the error says which fingerprint it presented).
 */
export async function connect(options: ConnectOptions): Promise<Peer> {
  const host = options.operations ? new HandlerHost(options.operations, options.onHandlerError ?? reportToConsole) : undefined
  const completions = new Completions()
  try {
    const peer = await native.connect(
      { config: JSON.stringify(connectConfigWire(options)), token: options.token, operations: host?.specsJson() },
      options.key.native,
      completions.complete,
      host?.native,
    )
    return new Peer(peer, completions)
  } catch (e) {
    throw fromNative(e)
  }
}
