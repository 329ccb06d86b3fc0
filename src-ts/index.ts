/**
 * `@alkdev/alknet`: secure service-to-service networking. One Ed25519 key per node, one port
 * (QUIC + TCP+TLS), typed RPC (queries, mutations, subscriptions) with pub/sub.
 *
 * @example
 * ```ts
 * import { serve, connect, Keypair, Registry, Type } from '@alkdev/alknet'
 * const ops = new Registry().query('math/add',
 *   { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() },
 *   ({ a, b }) => a + b)
 * const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops })
 * const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate() })
 * await peer.call('math/add', { a: 1, b: 2 }) // 3
 * ```
 *
 * @packageDocumentation
 */
export { Type } from '@sinclair/typebox'
export type { Static, TSchema } from '@sinclair/typebox'
export { CallError, ConnectError, PROTOCOL_ERRORS } from './errors'
export type { ConnectErrorCode, ErrorCode, ProtocolErrorCode } from './errors'
export { Keypair } from './keypair'
export { Registry } from './registry'
export type {
  Access,
  ErrorDeclaration,
  HandlerContext,
  Identity,
  OperationDefinition,
  OperationMap,
  OperationType,
  OperationTypes,
  SubscriptionHandler,
  UnaryHandler,
} from './registry'
export type { RemoteOperations, RequestOptions, Subscription } from './call'
export type { HandlerErrorReporter } from './host'
export { serve } from './node'
export type { AlknetNode, ApiKeyEntry, AuthConfig, Backplane, BackplaneStatus, Decoy, DynamicConfig, ForwardingPolicy, ForwardRule, HttpFeature, HttpOptions, IrohOptions, Limits, NatsBackplane, PeerEntry, ServeOptions, Services, TlsMode, TopicRule } from './node'
export type { ProtocolConstants } from './wire'
export { Peer, connect } from './peer'
export type { CallOptions, ConnectOptions, ForwardOptions, HostForwardOptions, OperationInfo, PeerStatus, ReconnectOptions, SocketForwardOptions, Socks5Options, SubscribeOptions, TopicMessage, TunnelListener } from './peer'
export type { OperationMethod, TypedApi } from './typed'
export type { ImportedOperation, NameFilter, Unsupported, UnsupportedReporter } from './bridge'
export { contract } from './contract'
export type { OperationKinds } from './contract'
export { OpenApiRegistry, fromOpenAPI } from './openapi'
export type { FromOpenApiOptions, OpenApiOperationRef, OpenApiSource, SseEvent, UpstreamCall, UpstreamCredentials } from './openapi'
export { openApiTypes } from './openapi-types'
export type { OpenApiTypesOptions } from './openapi-types'
export { McpRegistry, fromMCP } from './mcp-from'
export type { FromMcpOptions, McpCommand, McpSource } from './mcp-from'
export { toMCP } from './mcp-to'
export type { DiscoverableOperations, McpTarget, ToMcpOptions } from './mcp-to'
export type { McpClient, McpRequestOptions, McpServer, McpTransport } from './mcp-types'
