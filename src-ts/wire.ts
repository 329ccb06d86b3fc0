// The one place where the TypeScript API's camelCase meets the snake_case of `alknet.toml`, the
// native layer and the wire. Each table names every field of one shared type; `satisfies` makes
// the compiler refuse a table that misses or invents a field of the TypeScript type, and
// `__test__/wire.test.ts` checks the snake_case side against the Rust types' own samples
// (`alknet_node::wire`), so the two languages cannot drift apart silently. Nothing here loads the
// native binding: the browser client (`./client`) shares these tables.

import { ConnectError } from './errors'
import type { Access, ErrorDeclaration, Identity } from './registry'
import type { ApiKeyEntry, DynamicConfig, ForwardingPolicy, ForwardRule, HttpFeature, HttpOptions, IrohOptions, Limits, NatsBackplane, PeerEntry, ServeOptions, TlsMode, TopicRule } from './node'
import type { ConnectOptions } from './peer'

/** The protocol's constants, from the Rust side (error codes, frame limits, default deadlines). */
export interface ProtocolConstants {
  /** Every protocol error code and whether a retry may succeed. */
  error_codes: { code: string; retryable: boolean }[]
  /** The frame size limit a node uses unless configured (16 MiB). */
  default_max_frame_bytes: number
  /** The largest frame size limit a node may be configured with (64 MiB). */
  max_frame_limit_bytes: number
  /** The smallest frame size limit a node may be configured with (1 KiB). */
  min_frame_limit_bytes: number
  /** Deadline of calls that ask for none. */
  default_timeout_ms: number
  /** Cap on any deadline a caller asks for. */
  max_timeout_ms: number
}

/** A table naming the snake_case key of every field of `T`. */
type KeyTable<T> = { readonly [K in keyof Required<T>]: string }

/** @internal */
export const PEER_ENTRY = {
  id: 'id',
  fingerprints: 'fingerprints',
  tokenHash: 'token_hash',
  scopes: 'scopes',
  resources: 'resources',
  enabled: 'enabled',
} as const satisfies KeyTable<PeerEntry>

/** @internal */
export const API_KEY_ENTRY = {
  prefix: 'prefix',
  hash: 'hash',
  scopes: 'scopes',
  resources: 'resources',
  expiresAt: 'expires_at',
} as const satisfies KeyTable<ApiKeyEntry>

/** @internal */
export const TOPIC_RULE = {
  pattern: 'pattern',
  publish: 'publish',
  subscribe: 'subscribe',
  anonymous: 'anonymous',
} as const satisfies KeyTable<TopicRule>

/** @internal */
export const FORWARD_RULE = {
  peers: 'peers',
  hosts: 'hosts',
  ports: 'ports',
  direction: 'direction',
  transports: 'transports',
  sockets: 'sockets',
  action: 'action',
} as const satisfies KeyTable<ForwardRule>

/** @internal */
export const FORWARDING = {
  default: 'default',
  rules: 'rules',
  maxChannels: 'max_channels',
} as const satisfies KeyTable<ForwardingPolicy>

/** @internal */
export const LIMITS = {
  connectionsPerIp: 'connections_per_ip',
  connections: 'connections',
  handshakesPerIp: 'handshakes_per_ip',
  handshakes: 'handshakes',
  relayConnections: 'relay_connections',
  streamsPerConnection: 'streams_per_connection',
  maxConcurrentRequests: 'max_concurrent_requests',
  subscriptionQueue: 'subscription_queue',
  subscriptionQueueBytes: 'subscription_queue_bytes',
  connectionQueueBytes: 'connection_queue_bytes',
  defaultTimeoutMs: 'default_timeout_ms',
  maxTimeoutMs: 'max_timeout_ms',
  maxFrameBytes: 'max_frame_bytes',
  anonymousMaxFrameBytes: 'anonymous_max_frame_bytes',
  connectionInputBytes: 'connection_input_bytes',
  anonymousInputBytes: 'anonymous_input_bytes',
  frameDeadlineMs: 'frame_deadline_ms',
  quicIdleTimeoutMs: 'quic_idle_timeout_ms',
} as const satisfies KeyTable<Limits>

/** @internal */
export const IROH = {
  relay: 'relay',
  relayCa: 'relay_ca',
  direct: 'direct',
} as const satisfies KeyTable<IrohOptions>

/** @internal */
export const NATS = {
  servers: 'servers',
  credentials: 'credentials',
  subjectPrefix: 'subject_prefix',
} as const satisfies KeyTable<NatsBackplane>

/** @internal */
export const HTTP = {
  decoy: 'decoy',
  websocket: 'websocket',
  gateway: 'gateway',
  openapi: 'openapi',
} as const satisfies KeyTable<HttpOptions>

/** The options form of an HTTP feature. @internal */
export const HTTP_FEATURE = {
  requireIdentity: 'require_identity',
} as const satisfies KeyTable<Exclude<HttpFeature, boolean>>

/** @internal */
export const ACCESS = {
  requiredScopes: 'required_scopes',
  requiredScopesAny: 'required_scopes_any',
  resourceType: 'resource_type',
  resourceAction: 'resource_action',
  resourceIdPath: 'resource_id_path',
} as const satisfies KeyTable<Access>

/** @internal */
export const ERROR_DECLARATION = {
  code: 'code',
  description: 'description',
  schema: 'schema',
} as const satisfies KeyTable<ErrorDeclaration>

/** Identities cross as they are (the same keys in both languages). @internal */
export const IDENTITY = {
  id: 'id',
  scopes: 'scopes',
  resources: 'resources',
} as const satisfies KeyTable<Identity>

/**
 * The static part of {@link ServeOptions} and where each goes in `NodeConfig`; `null` marks an
 * option that stays in TypeScript (the key object, the registry, callbacks) or is the dynamic part.
 * @internal
 */
export const SERVE_OPTIONS = {
  listen: 'listen',
  tls: 'tls',
  tcp: 'tcp',
  iroh: 'iroh',
  limits: 'limits',
  drainTimeoutMs: 'drain_timeout_ms',
  handshakeTimeoutMs: 'handshake_timeout_ms',
  http: 'http',
  auth: 'auth',
  pubsub: 'pubsub',
  forwarding: 'forwarding',
  services: 'services',
  ssh: 'ssh',
  key: null,
  operations: null,
  onHandlerError: null,
} as const satisfies { readonly [K in keyof Required<ServeOptions>]: string | null }

/**
 * {@link ConnectOptions} and where each goes in `ConnectConfig`; `null` marks what stays in
 * TypeScript or travels beside the config (the key, the token, the operations offered back).
 * @internal
 */
export const CONNECT_OPTIONS = {
  address: 'address',
  fingerprint: 'fingerprint',
  iroh: 'iroh',
  relay: 'relay',
  relayCa: 'relay_ca',
  irohAddrs: 'iroh_addrs',
  transport: 'transport',
  connectTimeoutMs: 'connect_timeout_ms',
  reconnect: null,
  key: null,
  token: null,
  operations: null,
  onHandlerError: null,
} as const satisfies { readonly [K in keyof Required<ConnectOptions>]: string | null }

/** `connect()` options as the `ConnectConfig` JSON the native layer parses. @internal */
export function connectConfigWire(options: ConnectOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (!(key in CONNECT_OPTIONS)) throw unknownOption('connect()', key, Object.keys(CONNECT_OPTIONS))
    const wire = CONNECT_OPTIONS[key as keyof ConnectOptions]
    if (wire !== null && value !== undefined) out[wire] = value
  }
  return out
}

/** `NodeConfig` keys with no `serve()` option, and why. @internal */
export const NODE_CONFIG_ONLY = {
  key_file: 'serve() takes the key as a Keypair object',
} as const

/** Edit distance, for "did you mean" (options are short; the quadratic table is fine). */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    row = next
  }
  return row[b.length]
}

/** The error for an option `key` that `known` does not have, suggesting the closest one. @internal */
export function unknownOption(where: string, key: string, known: readonly string[]): ConnectError {
  const closest = known.map((k) => ({ k, d: distance(key.toLowerCase(), k.toLowerCase()) })).sort((a, b) => a.d - b.d)[0]
  const hint = closest !== undefined && closest.d <= Math.max(2, Math.floor(key.length / 3)) ? `; did you mean ${JSON.stringify(closest.k)}?` : ''
  return new ConnectError('INVALID_OPTION', `unknown ${where} option ${JSON.stringify(key)}${hint}`)
}

/** `value` with its keys renamed by `table`; unset (`undefined`) fields are left out. */
function renamed<T extends object>(value: T | undefined, table: KeyTable<T>, where: string): Record<string, unknown> | undefined {
  if (value === undefined) return undefined
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value) as [keyof T & string, unknown][]) {
    if (field === undefined) continue
    const wire = (table as Record<string, string>)[key]
    // An option the table does not know is refused by name here, before Rust refuses its snake_case.
    if (wire === undefined) throw unknownOption(where, key, Object.keys(table))
    out[wire] = field
  }
  return out
}

/** The dynamic configuration as `alknet.toml` spells it. @internal */
export function dynamicConfigWire(config: DynamicConfig): Record<string, unknown> {
  return {
    auth: {
      peers: (config.auth?.peers ?? []).map((p) => renamed(p, PEER_ENTRY, 'auth.peers[]')),
      api_keys: (config.auth?.apiKeys ?? []).map((k) => renamed(k, API_KEY_ENTRY, 'auth.apiKeys[]')),
    },
    pubsub: { rules: (config.pubsub?.rules ?? []).map((r) => renamed(r, TOPIC_RULE, 'pubsub.rules[]')) },
    forwarding: forwardingWire(config.forwarding),
  }
}

function forwardingWire(policy: ForwardingPolicy | undefined): Record<string, unknown> {
  const { rules, ...rest } = policy ?? {}
  return {
    ...renamed(rest, FORWARDING, 'forwarding'),
    rules: (rules ?? []).map((r) => renamed(r, FORWARD_RULE, 'forwarding.rules[]')),
  }
}

function tlsWire(tls: TlsMode | undefined): Record<string, unknown> {
  if (tls === undefined || tls === 'raw') return { mode: 'raw' }
  if (tls === 'self-signed') return { mode: 'self-signed' }
  if ('selfSigned' in tls) return { mode: 'self-signed', names: tls.selfSigned }
  return { mode: 'x509', cert: tls.cert, key: tls.key }
}

function httpWire(http: HttpOptions | undefined): Record<string, unknown> | undefined {
  const out = renamed(http, HTTP, 'http')
  if (out === undefined) return undefined
  for (const key of ['websocket', 'gateway', 'openapi'] as const) {
    const feature = http?.[key]
    if (typeof feature === 'object' && feature !== null) out[key] = renamed(feature, HTTP_FEATURE, `http.${key}`)
  }
  return out
}

/** `serve()` options as the `NodeConfig` JSON the native layer parses. @internal */
export function nodeConfigWire(options: ServeOptions): Record<string, unknown> {
  for (const key of Object.keys(options)) {
    if (!(key in SERVE_OPTIONS)) throw unknownOption('serve()', key, Object.keys(SERVE_OPTIONS))
  }
  const iroh = options.iroh === true ? {} : options.iroh === false ? undefined : options.iroh
  const dynamic = dynamicConfigWire(options)
  const backplane = options.pubsub?.backplane
  if (backplane !== undefined) {
    for (const key of Object.keys(backplane)) {
      if (key !== 'nats') throw unknownOption('pubsub.backplane', key, ['nats'])
    }
    dynamic.pubsub = { ...(dynamic.pubsub as object), backplane: { nats: renamed(backplane.nats, NATS, 'pubsub.backplane.nats') } }
  }
  return {
    listen: options.listen,
    tls: tlsWire(options.tls),
    tcp: options.tcp,
    iroh: renamed(iroh, IROH, 'iroh'),
    limits: renamed(options.limits ?? {}, LIMITS, 'limits'),
    drain_timeout_ms: options.drainTimeoutMs,
    handshake_timeout_ms: options.handshakeTimeoutMs,
    http: options.http === false ? undefined : httpWire(options.http),
    // The Node.js package always serves alknet/call; `http: false` turns HTTP off.
    services: { call: true, http: options.http !== false, ssh: options.services?.ssh ?? false, tunnel: options.services?.tunnel ?? false },
    ssh: options.ssh === undefined ? undefined : renamed(options.ssh, { listen: 'listen', userCa: 'user_ca' }, 'ssh'),
    ...dynamic,
  }
}

/** An operation's access rule as the wire spells it. @internal */
export function accessWire(access: Access | undefined): Record<string, unknown> {
  return renamed(access ?? {}, ACCESS, 'access') ?? {}
}

/** An error declaration as the wire spells it. @internal */
export function errorDeclarationWire(error: ErrorDeclaration): Record<string, unknown> {
  return renamed(error, ERROR_DECLARATION, 'errors[]') ?? {}
}

/** `value` with snake_case keys renamed back through `table` (what the wire sends us). @internal */
export function fromWire<T extends object>(value: Record<string, unknown>, table: KeyTable<T>): T {
  const out: Record<string, unknown> = {}
  for (const [camel, snake] of Object.entries(table) as [string, string][]) {
    if (value[snake] !== undefined) out[camel] = value[snake]
  }
  return out as T
}
