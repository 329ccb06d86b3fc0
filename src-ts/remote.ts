// What a caller sees of a node, whatever carries the calls (the native `Peer` over QUIC or
// TCP+TLS, the WebSocket client in `./client`): operation descriptions and topic messages.
import type { RemoteOperations, RequestOptions } from './call'
import type { Access, ErrorDeclaration, OperationType } from './registry'
import { ACCESS, ERROR_DECLARATION, fromWire } from './wire'

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

/** A `services/schema` answer (or an operation spec) in the TypeScript API's casing. @internal */
export function operationInfo(schema: Record<string, unknown>): OperationInfo {
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

/** The operations `target`'s caller may call, with their schemas (`services/list`, then `services/schema` each). @internal */
export async function discover(target: RemoteOperations, options?: RequestOptions): Promise<OperationInfo[]> {
  const list = await target.call<{ operations: { name: string }[] }>('services/list', {}, options)
  const schemas = await Promise.all(list.operations.map((op) => target.call<Record<string, unknown>>('services/schema', { name: op.name }, options)))
  return schemas.map(operationInfo)
}
