/**
 * `@alkdev/alknet/client`: call a node from a browser (or from Node.js without the native
 * binding) over the node's WebSocket carrier, `wss://host:port/alknet/call`. Plain TypeScript, no
 * native code; the same calls, subscriptions, pub/sub, discovery, typed API and errors as the
 * native `Peer`.
 *
 * @example
 * ```ts
 * import { connect, CallError } from '@alkdev/alknet/client'
 * const peer = await connect({ url: `wss://${location.host}/alknet/call`, token })
 * await peer.call('math/add', { a: 1, b: 2 }) // 3
 * for await (const m of peer.topic('chat/*')) console.log(m.topic, m.data)
 * ```
 *
 * @packageDocumentation
 */
export { WebSocketPeer, connect } from './websocket-peer'
export type { ClientOptions } from './websocket-peer'
export { CallError, ConnectError, PROTOCOL_ERRORS } from './errors'
export type { ConnectErrorCode, ErrorCode, ProtocolErrorCode } from './errors'
export { Registry } from './registry'
export type { Access, ErrorDeclaration, OperationDefinition, OperationMap, OperationType, OperationTypes } from './registry'
export { contract } from './contract'
export type { OperationKinds } from './contract'
export type { RemoteOperations, RequestOptions, Subscription } from './call'
export type { OperationInfo, TopicMessage } from './remote'
export type { OperationMethod, TypedApi } from './typed'
