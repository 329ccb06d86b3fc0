import type { Static, TSchema } from '@sinclair/typebox'
import type { RemoteOperations } from './call'
import { accessWire, errorDeclarationWire } from './wire'

/** Who is calling, as the node's peer list (or an API key) resolved it. */
export interface Identity {
  /** The peer's id from the peer list. */
  id: string
  /** Scopes granted. */
  scopes: string[]
  /** Resource rights: resource type → allowed actions. */
  resources: Record<string, string[]>
}

/** What a handler gets besides its input. */
export interface HandlerContext {
  /** Aborts when the caller cancels, the deadline passes, or the connection closes. */
  readonly signal: AbortSignal
  /** The caller's identity, or `null` for an anonymous caller. */
  readonly identity: Identity | null
  /** The operation being served. */
  readonly operation: string
  /**
   * Calls another operation of this node (internal ones too) as the same caller; cancelled
   * with this request.
   */
  call<T = unknown>(operation: string, input: unknown): Promise<T>
  /**
   * The peer at the other end of the connection this request arrived on: call back the
   * operations it offered (`connect({ operations })`). Its calls are cancelled with this request.
   */
  readonly peer: RemoteOperations
}

/** Who may call an operation. Nothing set: anyone, also without identity. */
export interface Access {
  /** Scopes the identity must hold, every one. */
  requiredScopes?: string[]
  /** Scopes of which the identity must hold at least one. */
  requiredScopesAny?: string[]
  /** The resource type whose rights the identity needs. */
  resourceType?: string
  /** The action on `resourceType` the identity needs. */
  resourceAction?: string
  /**
   * A JSON pointer into the input naming which resource a call touches (e.g. `/id`), for
   * ownership checks a handler makes; it restricts nothing by itself.
   */
  resourceIdPath?: string
}

/** An error code an operation may fail with (a thrown `CallError` with an undeclared code becomes `INTERNAL`). */
export interface ErrorDeclaration {
  /** The code, e.g. `ITEM_NOT_OWNED`. */
  code: string
  /** What it means. */
  description?: string
  /** JSON Schema of the error's `details`. */
  schema?: unknown
}

/** The contract of an operation: schemas (TypeBox or plain JSON Schema), access, errors. */
export interface OperationDefinition<I extends TSchema, O extends TSchema> {
  /** Schema of the input; the handler's input type is `Static<I>`. */
  input: I
  /** Schema of each output; the handler's output type is `Static<O>`. */
  output: O
  /** Who may call it. */
  access?: Access
  /** Declared error codes. */
  errors?: ErrorDeclaration[]
  /** A human description, shown by `services/list`. */
  description?: string
  /** `internal` operations are callable only by composition inside the node. */
  visibility?: 'external' | 'internal'
}

/** A query or mutation handler. */
export type UnaryHandler<I extends TSchema, O extends TSchema> = (
  input: Static<I>,
  ctx: HandlerContext,
) => Static<O> | Promise<Static<O>>

/** A subscription handler: an async generator; `ctx.signal` aborts when the caller cancels. */
export type SubscriptionHandler<I extends TSchema, O extends TSchema> = (
  input: Static<I>,
  ctx: HandlerContext,
) => AsyncIterable<Static<O>>

/** The kind of operation. */
export type OperationType = 'query' | 'mutation' | 'subscription'

/** An operation's types as a registry records them: its kind, input and output. */
export interface OperationTypes {
  /** Query, mutation or subscription. */
  kind: OperationType
  /** The input type (`Static` of the input schema). */
  input: unknown
  /** The type of the output, or of each item of a subscription. */
  output: unknown
}

/** The types of a registry's operations, by name. */
export type OperationMap = Record<string, OperationTypes>

/** `Ops` with operation `N` added. */
type With<Ops extends OperationMap, N extends string, K extends OperationType, I extends TSchema, O extends TSchema> = Ops & {
  [P in N]: { kind: K; input: Static<I>; output: Static<O> }
}

/** A registered operation, as the node serves it. @internal */
export type RegisteredOperation =
  | { kind: 'query' | 'mutation'; spec: OperationSpecJson; handler: (input: unknown, ctx: HandlerContext) => unknown }
  | { kind: 'subscription'; spec: OperationSpecJson; handler: (input: unknown, ctx: HandlerContext) => AsyncIterable<unknown> }

/** The wire/native shape of an operation's contract. @internal */
export interface OperationSpecJson {
  name: string
  type: OperationType
  input_schema: unknown
  output_schema: unknown
  access: Record<string, unknown>
  errors: Record<string, unknown>[]
  description?: string
  visibility: 'external' | 'internal'
}

/** JSON Schema without TypeBox's symbol-keyed metadata (JSON.stringify drops symbols anyway). */
function schemaJson(schema: TSchema): unknown {
  return JSON.parse(JSON.stringify(schema))
}

/**
 * The operations a node serves. Input and output types are inferred from the schemas, so a
 * handler's types are never written twice.
 *
 * @example
 * ```ts
 * const ops = new Registry()
 *   .query('math/add', { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() },
 *     ({ a, b }) => a + b)
 * ```
 */
export class Registry<Ops extends OperationMap = {}> {
  /** @internal */
  readonly operations = new Map<string, RegisteredOperation>()

  /** Type-level only: the operations' types, for `peer.typed(registry)`. Always `undefined`. */
  declare readonly types?: Ops

  private spec<I extends TSchema, O extends TSchema>(
    name: string,
    type: OperationType,
    def: OperationDefinition<I, O>,
  ): OperationSpecJson {
    if (this.operations.has(name)) throw new Error(`operation ${JSON.stringify(name)} is already registered`)
    const spec: OperationSpecJson = {
      name,
      type,
      input_schema: schemaJson(def.input),
      output_schema: schemaJson(def.output),
      access: accessWire(def.access),
      errors: (def.errors ?? []).map(errorDeclarationWire),
      visibility: def.visibility ?? 'external',
    }
    if (def.description !== undefined) spec.description = def.description
    return spec
  }

  /** Adds a query (reads; one answer). Names are `segment/segment…`, e.g. `math/add`. */
  query<N extends string, I extends TSchema, O extends TSchema>(
    name: N,
    def: OperationDefinition<I, O>,
    handler: UnaryHandler<I, O>,
  ): Registry<With<Ops, N, 'query', I, O>> {
    this.operations.set(name, { kind: 'query', spec: this.spec(name, 'query', def), handler: handler as (input: unknown, ctx: HandlerContext) => unknown })
    return this.grown()
  }

  /** Adds a mutation (changes; one answer). */
  mutation<N extends string, I extends TSchema, O extends TSchema>(
    name: N,
    def: OperationDefinition<I, O>,
    handler: UnaryHandler<I, O>,
  ): Registry<With<Ops, N, 'mutation', I, O>> {
    this.operations.set(name, { kind: 'mutation', spec: this.spec(name, 'mutation', def), handler: handler as (input: unknown, ctx: HandlerContext) => unknown })
    return this.grown()
  }

  /** Adds a subscription (many answers; an async generator, pulled as fast as the caller reads). */
  subscription<N extends string, I extends TSchema, O extends TSchema>(
    name: N,
    def: OperationDefinition<I, O>,
    handler: SubscriptionHandler<I, O>,
  ): Registry<With<Ops, N, 'subscription', I, O>> {
    this.operations.set(name, {
      kind: 'subscription',
      spec: this.spec(name, 'subscription', def),
      handler: handler as (input: unknown, ctx: HandlerContext) => AsyncIterable<unknown>,
    })
    return this.grown()
  }

  /** This registry, typed with the operation just added (the types exist only at compile time). */
  private grown<More extends OperationMap>(): Registry<More> {
    return this as Registry<OperationMap> as Registry<More>
  }

  /** The kind of operation `name`, if registered. */
  kindOf(name: string): OperationType | undefined {
    return this.operations.get(name)?.kind
  }
}
