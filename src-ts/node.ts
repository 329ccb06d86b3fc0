import * as native from '../index.js'
import { CallError } from './errors'
import { holdEventLoop } from './keepalive'
import type { Keypair } from './keypair'
import type { HandlerContext, Identity, RegisteredOperation, Registry } from './registry'

/** A known peer (`PeerEntry`): who may connect and what they may do. */
export interface PeerEntry {
  /** Unique name; becomes `Identity.id`. */
  id: string
  /** Key fingerprints (`ed25519:…` or `SHA256:…`) that identify this peer. */
  fingerprints?: string[]
  /** `sha256:<hex>` of a bearer token that also identifies this peer. */
  token_hash?: string
  /** Scopes granted. */
  scopes?: string[]
  /** Resource type → allowed actions. */
  resources?: Record<string, string[]>
  /** A disabled peer resolves to no identity (default true). */
  enabled?: boolean
}

/** An `alk_…` bearer token. */
export interface ApiKeyEntry {
  /** The token's prefix. */
  prefix: string
  /** `sha256:<hex>` of the whole token. */
  hash: string
  /** Scopes granted. */
  scopes?: string[]
  /** Unix seconds after which it is refused. */
  expires_at?: number
}

/** Peers and API keys. */
export interface AuthConfig {
  /** Known peers. */
  peers?: PeerEntry[]
  /** Bearer tokens. */
  api_keys?: ApiKeyEntry[]
}

/** A pub/sub topic rule: the first matching rule decides. */
export interface TopicRule {
  /** Topic pattern (`*` one segment, `>` the rest). */
  pattern: string
  /** Scopes allowed to publish (`null`: any identity; `[]`: nobody). */
  publish?: string[] | null
  /** Scopes allowed to subscribe (`null`: any identity; `[]`: nobody). */
  subscribe?: string[] | null
  /** Whether callers without identity are allowed too. */
  anonymous?: boolean
}

/** The hot-reloadable configuration. */
export interface DynamicConfig {
  /** Peers and API keys. */
  auth?: AuthConfig
  /** Pub/sub rules. */
  pubsub?: { rules?: TopicRule[] }
}

/** Options of {@link serve}. */
export interface ServeOptions extends DynamicConfig {
  /** `host:port` (QUIC over UDP, TCP+TLS on the same port number); port 0 picks a free one. */
  listen: string
  /** The node's key. */
  key: Keypair
  /** The operations to serve. */
  operations: Registry
  /** How long `close()` waits for in-flight connections (default 10 000 ms). */
  drainTimeoutMs?: number
  /** Where handler failures are reported (default `console.error`). */
  onHandlerError?: (error: unknown, operation: string) => void
}

/** A running node. */
export interface AlknetNode {
  /** `ed25519:<hex>`: what callers pin. */
  readonly fingerprint: string
  /** `host:port` it listens on. */
  readonly address: string
  /** Replaces peers, API keys and pub/sub rules; throws with the reason (keeping the old ones) if invalid. */
  reload(config: DynamicConfig): void
  /** Publishes to a topic as the node itself; resolves with how many subscriptions it reached. */
  publish(topic: string, data: unknown): Promise<number>
  /** Graceful: stops accepting, drains, closes; the process may exit afterwards. */
  close(): Promise<void>
}

interface Running {
  operation: string
  controller: AbortController
  iterator?: AsyncIterator<unknown>
}

function errorJson(error: unknown, operation: string, report: (error: unknown, operation: string) => void): string {
  if (error instanceof CallError) return JSON.stringify(error)
  report(error, operation)
  return JSON.stringify({ code: 'INTERNAL', message: 'the handler failed' })
}

function parseIdentity(json: string): Identity | null {
  const value: unknown = JSON.parse(json)
  return value === null || typeof value !== 'object' ? null : (value as Identity)
}

function configJson(config: DynamicConfig): string {
  return JSON.stringify({ auth: config.auth ?? {}, pubsub: config.pubsub ?? {} })
}

/**
 * Starts a node serving `options.operations`; resolves once it listens.
 *
 * @example
 * ```ts
 * const node = await serve({ listen: '127.0.0.1:0', key, operations: ops, auth: { peers } })
 * await node.close()
 * ```
 */
export async function serve(options: ServeOptions): Promise<AlknetNode> {
  const operations: ReadonlyMap<string, RegisteredOperation> = options.operations.operations
  const report = options.onHandlerError ?? ((error: unknown, operation: string) => console.error(`alknet: handler of ${operation} failed:`, error))
  const running = new Map<number, Running>()
  // Set once the native node exists; events cannot be answered before that.
  let ready: Promise<native.Node> = Promise.reject(new Error('not started'))
  ready.catch(() => {})
  // Answers may race a cancel: a request that is no longer open is not an error here.
  const answer = (f: (n: native.Node) => void): void => {
    ready.then((n) => {
      try {
        f(n)
      } catch {
        /* cancelled meanwhile */
      }
    }, () => {})
  }

  const pull = (id: number): void => {
    const entry = running.get(id)
    if (!entry?.iterator) return
    const operation = entry.operation
    entry.iterator.next().then(
      (r) => {
        if (r.done) {
          running.delete(id)
          answer((n) => n.end(id))
        } else {
          answer((n) => n.push(id, JSON.stringify(r.value ?? null)))
        }
      },
      (e: unknown) => {
        running.delete(id)
        answer((n) => n.reject(id, errorJson(e, operation, report)))
      },
    )
  }

  const dispatch = (event: string, id: number, operation: string, inputJson: string, identityJson: string): void => {
    try {
      switch (event) {
        case 'call':
        case 'subscribe': {
          const op = operations.get(operation)
          const controller = new AbortController()
          const ctx: HandlerContext = { signal: controller.signal, identity: parseIdentity(identityJson), operation }
          const input: unknown = JSON.parse(inputJson)
          if (!op) {
            answer((n) => n.reject(id, JSON.stringify({ code: 'NOT_FOUND', message: `no operation /${operation}` })))
          } else if (op.kind === 'subscription') {
            const entry: Running = { operation, controller }
            running.set(id, entry)
            try {
              entry.iterator = op.handler(input, ctx)[Symbol.asyncIterator]()
            } catch (e) {
              running.delete(id)
              answer((n) => n.reject(id, errorJson(e, operation, report)))
              return
            }
            pull(id)
          } else {
            running.set(id, { operation, controller })
            new Promise<unknown>((resolve) => resolve(op.handler(input, ctx))).then(
              (out) => {
                running.delete(id)
                answer((n) => n.resolve(id, JSON.stringify(out ?? null)))
              },
              (e: unknown) => {
                running.delete(id)
                answer((n) => n.reject(id, errorJson(e, operation, report)))
              },
            )
          }
          break
        }
        case 'next':
          pull(id)
          break
        case 'cancel': {
          const entry = running.get(id)
          running.delete(id)
          if (entry) {
            entry.controller.abort(new CallError('CANCELLED', 'the caller cancelled the request'))
            entry.iterator?.return?.().catch(() => {})
          }
          break
        }
      }
    } catch (e) {
      report(e, operation)
    }
  }

  const specs = [...operations.values()].map((op) => op.spec)
  ready = native.serve(
    {
      listen: options.listen,
      config: configJson(options),
      operations: JSON.stringify(specs),
      drainTimeoutMs: options.drainTimeoutMs,
    },
    options.key.native,
    dispatch,
  )
  const n = await ready
  const release = holdEventLoop()
  let closing: Promise<void> | undefined
  return {
    fingerprint: n.fingerprint,
    address: n.address,
    reload: (config: DynamicConfig) => n.reload(configJson(config)),
    publish: async (topic: string, data: unknown) => n.publish(topic, JSON.stringify(data ?? null)),
    close: () => {
      closing ??= n.close().finally(release)
      return closing
    },
  }
}
