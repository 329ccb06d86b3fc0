import * as native from '../index.js'
import { ConnectError, fromNative } from './errors'
import { HandlerHost, type HandlerErrorReporter, reportToConsole } from './host'
import { holdEventLoop } from './keepalive'
import { NodePublisher } from './node-publisher'
import type { Keypair } from './keypair'
import type { Registry } from './registry'
import type { TopicMessage } from './remote'
import { type ProtocolConstants, dynamicConfigWire, nodeConfigWire } from './wire'

/** A known peer (`PeerEntry`): who may connect and what they may do. */
export interface PeerEntry {
  /** Unique name; becomes `Identity.id`. */
  id: string
  /** Key fingerprints (`ed25519:…` or `SHA256:…`) that identify this peer. */
  fingerprints?: string[]
  /** `sha256:<hex>` of a bearer token that also identifies this peer. */
  tokenHash?: string
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
  /** Resource type → allowed actions. */
  resources?: Record<string, string[]>
  /** Unix seconds after which it is refused. */
  expiresAt?: number
}

/** Peers and API keys. */
export interface AuthConfig {
  /** Known peers. */
  peers?: PeerEntry[]
  /** Bearer tokens. */
  apiKeys?: ApiKeyEntry[]
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

/**
 * A forwarding rule (SSH `-L`/`-D`/`-R` and the native tunnel): the first rule that matches
 * decides. Private, loopback and link-local addresses are opened only by a rule that names them
 * by CIDR or address.
 */
export interface ForwardRule {
  /** Peer ids it applies to (empty: every known peer). */
  peers?: string[]
  /** Name patterns (`example.com`, `*.example.com`), CIDRs or addresses (empty: any). */
  hosts?: string[]
  /** Ports or `'low-high'` ranges (empty: any). */
  ports?: (number | string)[]
  /** `'connect'` (default: outbound connections) or `'listen'` (`-R` binds on the node). */
  direction?: 'connect' | 'listen'
  /**
   * The carriers the client's connection came on (empty: any): `'quic'`, `'tcp-tls'`, `'iroh'`,
   * or `'ssh'` (the node's plain SSH port).
   */
  transports?: ('quic' | 'tcp-tls' | 'iroh' | 'ssh')[]
  /**
   * Unix sockets on the node (`'/run/app.sock'`, or `'/run/app/'` for the sockets under it): with
   * direction `'connect'` for `ssh -L port:/path`, with `'listen'` the paths where the node may
   * create a socket for `ssh -R /path:host:port` (never over an existing file; mode 0600; removed
   * when the forward ends). A rule with `sockets` has no `hosts` or `ports`, and a socket is
   * opened or created only by such a rule.
   */
  sockets?: string[]
  /** Allow or deny. */
  action: 'allow' | 'deny'
}

/** Where SSH and tunnel clients may forward to. */
export interface ForwardingPolicy {
  /** When no rule matches: `'public'` (default: public addresses; `-R` on loopback), `'deny'`, `'allow'`. */
  default?: 'public' | 'deny' | 'allow'
  /** Rules, first match wins. */
  rules?: ForwardRule[]
  /** Open channels (and `-R` listeners) one connection may hold (default 256). */
  maxChannels?: number
}

/** The hot-reloadable configuration. */
export interface DynamicConfig {
  /** Peers and API keys. */
  auth?: AuthConfig
  /** Pub/sub rules. */
  pubsub?: { rules?: TopicRule[] }
  /** SSH and tunnel forwarding rules. */
  forwarding?: ForwardingPolicy
}

/** Which services besides `alknet/call` a node offers (each off by default). */
export interface Services {
  /** `alknet/ssh`: SSH port forwarding (`-D`, `-L`, `-R`) for known peers. */
  ssh?: boolean
  /** `alknet/tunnel`: the native tunnel (QUIC, iroh or TCP+TLS) for known peers. */
  tunnel?: boolean
}

/** How the node proves its identity in TLS. */
export type TlsMode =
  /** The node's Ed25519 key as an RFC 7250 raw public key (default); callers pin `ed25519:<hex>`. */
  | 'raw'
  /** A certificate for `localhost`, signed by the node's key; callers pin its `SHA256:` fingerprint. */
  | 'self-signed'
  /** A self-signed certificate for the given DNS names. */
  | { selfSigned: string[] }
  /** A PEM certificate chain and private key from files (e.g. from a CA). */
  | { cert: string; key: string }

/** Limits that protect a node from one greedy or hostile peer. */
export interface Limits {
  /** Open connections allowed from one IP address, an IPv6 /64 counting as one (default 64). */
  connectionsPerIp?: number
  /** Open connections allowed in total, every carrier together (default 4096); past it a QUIC client is told why, a TCP one is closed before TLS. */
  connections?: number
  /** Handshakes in flight from one IP address, IPv6 by its /64 (default 32). */
  handshakesPerIp?: number
  /** Handshakes in flight in total (default 256); with half of them taken, new QUIC clients must first prove their address (a Retry, one round trip). */
  handshakes?: number
  /** Open connections arriving through the iroh relay, together (default 256): they share the relay's address. */
  relayConnections?: number
  /** Concurrent QUIC streams a peer may open on one connection (default 1024). */
  streamsPerConnection?: number
  /** Concurrent requests per connection, subscriptions included (default 1024); beyond it `OVERLOADED`. */
  maxConcurrentRequests?: number
  /** Items a pub/sub subscription may have queued (default 1024); a subscriber further behind gets `OVERLOADED`. */
  subscriptionQueue?: number
  /** Bytes of published messages one subscription may hold until they are written (default 8 MiB; one message of any size is always taken); over it, `OVERLOADED`. */
  subscriptionQueueBytes?: number
  /** The same, summed over one connection's subscriptions (default 64 MiB). */
  connectionQueueBytes?: number
  /** Deadline of calls that ask for none (default 30 000 ms); a handler past it is cancelled and the caller gets `TIMEOUT`. */
  defaultTimeoutMs?: number
  /** Cap on any deadline a caller asks for (default 600 000 ms). */
  maxTimeoutMs?: number
  /** Largest frame (one message) accepted, in bytes (default 16 MiB, from 1 KiB to 64 MiB). */
  maxFrameBytes?: number
  /** Largest frame accepted on a connection whose key is not a known peer (default 1 MiB; token-only callers included). */
  anonymousMaxFrameBytes?: number
  /** Bytes of partly received frames one identified connection may buffer (default 64 MiB); beyond it, reading waits. */
  connectionInputBytes?: number
  /** The same, shared by every connection without an identity (default 64 MiB). */
  anonymousInputBytes?: number
  /** How long a frame may take to arrive once begun (default 60 000 ms). */
  frameDeadlineMs?: number
  /** How long a QUIC connection may stay silent before the node counts it lost and cancels its requests (default 30 000 ms); clients send a keep-alive every 10 s. */
  quicIdleTimeoutMs?: number
}

/** iroh for a node: reachable by its key alone, through a relay when no direct path exists. */
export interface IrohOptions {
  /**
   * `'none'` (default: reachable at its direct addresses only), `'n0'` (number 0's public
   * relays; contacts third-party servers) or the `https://` URL of your own relay. Nothing
   * phones home unless set.
   */
  relay?: string
  /** PEM certificate(s) to trust for the relay, for a relay with its own CA or a self-signed one. */
  relayCa?: string
  /** Use direct UDP paths (default true); `false`: relay only, the node's IP stays hidden. */
  direct?: boolean
}

/**
 * What the node's web site shows on every path nothing else claims (and to every request for a
 * feature that requires an identity it does not carry): a built-in plain page, the files of a
 * directory, or an upstream site it forwards to.
 */
export type Decoy = 'builtin' | { dir: string } | { proxy: string }

/**
 * An opt-in HTTP feature: `true` (for everyone), `false`, or `{ requireIdentity: true }` (only
 * requests with a valid bearer token or TLS client key see it; the rest get the decoy).
 */
export type HttpFeature = boolean | { requireIdentity?: boolean }

/** The HTTP side of the node's port (`h2` and `http/1.1` over TCP+TLS). */
export interface HttpOptions {
  /** What the web site shows (default `'builtin'`). */
  decoy?: Decoy
  /** The `alknet/call` WebSocket carrier at `/alknet/call`, for browsers (default off). */
  websocket?: HttpFeature
  /** The HTTP gateway: `POST /call/<operation>`, JSON in, JSON or Server-Sent Events out (default off). */
  gateway?: HttpFeature
  /** `GET /openapi.json`: an OpenAPI 3.1 document of the gateway, for the caller (default off). */
  openapi?: HttpFeature
}

/** Options of {@link serve}. */
export interface ServeOptions extends DynamicConfig {
  /** `host:port` (QUIC over UDP, TCP+TLS on the same port number); port 0 picks a free one. */
  listen: string
  /** The node's key. */
  key: Keypair
  /** The operations to serve. */
  operations: Registry
  /** TLS identity (default `'raw'`). */
  tls?: TlsMode
  /** Also accept TCP+TLS on the same port number (default true). */
  tcp?: boolean
  /** Also accept over iroh, with the same key, handlers and peer list (`true`: no relay). */
  iroh?: IrohOptions | boolean
  /** Per-peer limits. */
  limits?: Limits
  /** How long `close()` waits for in-flight connections (default 10 000 ms). */
  drainTimeoutMs?: number
  /** How long a handshake may take, QUIC or TCP+TLS (default 10 000 ms); a client trickling its handshake is cut off at it. */
  handshakeTimeoutMs?: number
  /** HTTP on the same port (default: the decoy web site only); `false` turns HTTP off. */
  http?: HttpOptions | false
  /** Services besides `alknet/call`. */
  services?: Services
  /**
   * Plain SSH for OpenSSH clients on a TCP port of its own (`{ listen: '127.0.0.1:2222' }`), and
   * `userCa`: OpenSSH public key lines of CAs whose user certificates are taken (principal = SSH
   * user name = an enabled peer id).
   */
  ssh?: { listen?: string; userCa?: string[] }
  /** Where handler failures are reported (default `console.error`). */
  onHandlerError?: HandlerErrorReporter
  /** Pub/sub rules (reloadable) and the backplane that carries topics between nodes (needs a restart). */
  pubsub?: { rules?: TopicRule[]; backplane?: Backplane }
}

/** What carries pub/sub topics between nodes. */
export interface Backplane {
  /** NATS servers shared by the nodes of a fleet. */
  nats: NatsBackplane
}

/**
 * A NATS backplane: a publish on any node reaches the subscribers on every node connected to the
 * same NATS servers (at most once; in order per publisher; `delivered` counts the publishing
 * node's own subscribers). Topic `a/b` travels as subject `<subjectPrefix>.a.b`.
 */
export interface NatsBackplane {
  /** NATS server URLs (`nats://host:4222`, `tls://…`); the client fails over between them. */
  servers: string[]
  /** Path of a NATS credentials file (`.creds`), for servers that need one. */
  credentials?: string
  /** The first subject token(s) of every topic (default `alknet`). */
  subjectPrefix?: string
}

/** What a node's backplane has done since it started. */
export interface BackplaneStatus {
  /** Whether the NATS connection is up now. */
  connected: boolean
  /** Messages handed to NATS for the other nodes. */
  sent: number
  /** Messages from other nodes delivered to this node's subscribers. */
  received: number
  /** Messages for other nodes dropped while NATS was unreachable or too slow (at most once). */
  lost: number
  /** Messages from NATS refused (not a pub/sub item, or on the wrong subject). */
  rejected: number
}

/** A running node. */
export interface AlknetNode {
  /** What callers pin: `ed25519:<hex>` (raw key) or `SHA256:<hex>` (certificate). */
  readonly fingerprint: string
  /** `host:port` it listens on. */
  readonly address: string
  /**
   * With iroh: the ticket to dial it by, `iroh:<node id>?relay=…&addr=…` (pass it to
   * `connect({ iroh })`); the node id is the hex of its `ed25519:` fingerprint. `null` without iroh.
   */
  readonly irohTicket: string | null
  /** Replaces peers, API keys and pub/sub rules; throws with the reason (keeping the old ones) if invalid. */
  reload(config: DynamicConfig): void
  /**
   * Publishes to a topic as the node itself; resolves with how many subscriptions it reached.
   * Publishes made in the same tick cross into the native layer together at its end, in the order
   * they were made (as one {@link AlknetNode.publishMany}); each still settles with its own count or
   * error.
   */
  publish(topic: string, data: unknown): Promise<number>
  /**
   * Publishes several messages as the node itself, in order, in one call into the native layer
   * (cheaper per message than {@link AlknetNode.publish} when there are many); resolves with how
   * many subscriptions each reached, in the same order. Each subscriber receives them as it would
   * the same publishes one after another. If any topic is invalid, nothing is published and it
   * rejects with `INVALID_INPUT` naming the message.
   *
   * @example
   * ```ts
   * const counts = await node.publishMany([
   *   { topic: 'prices/eur', data: 1.08 },
   *   { topic: 'prices/gbp', data: 0.86 },
   * ])
   * ```
   */
  publishMany(messages: readonly TopicMessage[]): Promise<number[]>
  /** The pub/sub backplane's state; `undefined` without `pubsub.backplane`. */
  backplaneStatus(): BackplaneStatus | undefined
  /**
   * Resolves once the backplane is connected and the NATS servers have the subscriptions of
   * every subscriber this node has now: from then on, what other nodes publish reaches them.
   * Resolves at once without a backplane.
   */
  backplaneReady(): Promise<void>
  /** Graceful: stops accepting, lets in-flight calls finish (up to `drainTimeoutMs`), closes; the process may exit afterwards. */
  close(): Promise<void>
}

/** Throws if `value` is set and not a whole number in `[min, max]`, naming the option. */
function whole(name: string, value: number | undefined, min: number, max = 2 ** 32 - 1): void {
  if (value !== undefined && (!Number.isInteger(value) || value < min || value > max)) {
    throw new ConnectError('INVALID_OPTION', `${name} must be a whole number from ${min} to ${max}, not ${value}`)
  }
}

let constants: ProtocolConstants | undefined

/** The protocol's constants as the native layer defines them (read once). */
function protocolConstants(): ProtocolConstants {
  constants ??= JSON.parse(native.protocolConstants()) as ProtocolConstants
  return constants
}

/** Range checks that name the camelCase option (Rust checks again, naming `alknet.toml`'s keys). */
function checkNumbers(options: ServeOptions): void {
  const limits = options.limits ?? {}
  const { min_frame_limit_bytes, max_frame_limit_bytes } = protocolConstants()
  whole('drainTimeoutMs', options.drainTimeoutMs, 0)
  whole('handshakeTimeoutMs', options.handshakeTimeoutMs, 1)
  for (const name of ['connectionsPerIp', 'connections', 'handshakesPerIp', 'handshakes', 'relayConnections', 'streamsPerConnection', 'maxConcurrentRequests', 'subscriptionQueue', 'subscriptionQueueBytes', 'connectionQueueBytes', 'defaultTimeoutMs', 'maxTimeoutMs', 'frameDeadlineMs', 'quicIdleTimeoutMs'] as const) {
    whole(`limits.${name}`, limits[name], 1)
  }
  whole('limits.maxFrameBytes', limits.maxFrameBytes, min_frame_limit_bytes, max_frame_limit_bytes)
  whole('limits.anonymousMaxFrameBytes', limits.anonymousMaxFrameBytes, min_frame_limit_bytes, max_frame_limit_bytes)
  whole('limits.connectionInputBytes', limits.connectionInputBytes, min_frame_limit_bytes, Number.MAX_SAFE_INTEGER)
  whole('limits.anonymousInputBytes', limits.anonymousInputBytes, min_frame_limit_bytes, Number.MAX_SAFE_INTEGER)
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
  const host = new HandlerHost(options.operations, options.onHandlerError ?? reportToConsole)
  let n: native.Node
  try {
    checkNumbers(options)
    n = await native.serve(JSON.stringify(nodeConfigWire(options)), host.specsJson(), options.key.native, host.native)
  } catch (e) {
    throw fromNative(e)
  }
  const release = holdEventLoop()
  const publisher = new NodePublisher(n)
  let closing: Promise<void> | undefined
  return {
    fingerprint: n.fingerprint,
    address: n.address,
    irohTicket: n.irohTicket ?? null,
    reload: (config: DynamicConfig) => {
      publisher.flush() // what was published before the reload goes out under the old rules
      n.reload(JSON.stringify(dynamicConfigWire(config)))
    },
    publish: (topic: string, data: unknown) => publisher.publish(topic, data),
    publishMany: async (messages: readonly TopicMessage[]) => publisher.publishMany(messages),
    backplaneStatus: () => {
      const status = n.backplaneStatus()
      return status === null ? undefined : (JSON.parse(status) as BackplaneStatus)
    },
    backplaneReady: () => n.backplaneReady(),
    close: () => {
      publisher.flush()
      closing ??= n.close().finally(release)
      return closing
    },
  }
}
