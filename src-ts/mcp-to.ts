// toMCP: alknet operations as MCP tools, served by the official MCP SDK `Server` on any MCP
// transport (stdio, Streamable HTTP, in-memory). The mapping rules are documented in docs/bridges.md.
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { CallToolRequestSchema, type CallToolResult, ErrorCode, ListToolsRequestSchema, McpError, type Tool } from '@modelcontextprotocol/sdk/types.js'
import Ajv2020 from 'ajv/dist/2020'
import { type NameFilter, isObject, selected } from './bridge'
import type { RemoteOperations, RequestOptions, Subscription } from './call'
import { CallError } from './errors'
import type { McpServer } from './mcp-types'
import { type OperationInfo, operationInfo } from './remote'
import { type HandlerContext, type Identity, type OperationType, type RegisteredOperation, Registry } from './registry'

/** What {@link toMCP} can expose: a connected peer (what it may call on its node) or a local registry. */
export type McpTarget = DiscoverableOperations | Registry

/** Operations that can be listed with their schemas and called: a {@link Peer}. */
export interface DiscoverableOperations extends RemoteOperations {
  /** The operations this caller may call, with their schemas. */
  discover(options?: RequestOptions): Promise<OperationInfo[]>
}

/** Options of {@link toMCP}. */
export interface ToMcpOptions {
  /** The server name MCP clients see (default `alknet`). */
  name?: string
  /** The server version MCP clients see (default `0.1.0`). */
  version?: string
  /** Instructions for the model, sent at initialisation. */
  instructions?: string
  /** Only these operations (`prefix/*` and regular expressions allowed); the built-in `services/*` and `pubsub/*` are never exposed. */
  include?: NameFilter
  /** Not these operations. */
  exclude?: NameFilter
  /** The tool name of an operation (default: `/` → `__`, `math/add` → `math__add`, which every MCP client accepts). */
  toolName?: (operation: string) => string
  /** A subscription tool returns after this many items (default 100). */
  subscriptionItems?: number
  /** A subscription tool returns what it has after this long (default 10 000 ms). */
  subscriptionWaitMs?: number
  /** With a registry: the identity its handlers see in `ctx.identity` (default `null`, anonymous). */
  identity?: Identity | null
}

/** An operation as a tool. */
interface Exposed {
  name: string
  kind: OperationType
  tool: Tool
  /** The operation input is under `input` (its schema is not an object). */
  wrappedInput: boolean
  /** The output goes under `result` (its schema is not an object). */
  wrappedOutput: boolean
}

const BUILT_IN = [/^services\//, /^pubsub\//]

/** `schema` is a JSON Schema of objects. */
function isObjectSchema(schema: unknown): boolean {
  return isObject(schema) && schema.type === 'object'
}

/** `{ type: 'object', properties: { [key]: schema } }`, with the inner `$defs` moved to the root so `$ref`s still resolve. */
function wrap(key: string, schema: unknown, required: boolean): Record<string, unknown> {
  const inner: Record<string, unknown> = isObject(schema) ? { ...schema } : {}
  const $defs = inner.$defs
  delete inner.$defs
  const out: Record<string, unknown> = { type: 'object', properties: { [key]: inner } }
  if (required) out.required = [key]
  if ($defs !== undefined) out.$defs = $defs
  return out
}

function expose(info: { name: string; type: OperationType; description?: string; inputSchema: unknown; outputSchema: unknown }, toolName: (op: string) => string): Exposed {
  const wrappedInput = !isObjectSchema(info.inputSchema)
  const wrappedOutput = info.type === 'subscription' || !isObjectSchema(info.outputSchema)
  const output = info.type === 'subscription' ? { type: 'array', items: info.outputSchema } : info.outputSchema
  const kind = info.type === 'subscription' ? 'subscription, returns its first items' : info.type
  const tool: Tool = {
    name: toolName(info.name),
    description: `${info.description ?? `The alknet operation ${info.name}.`} (alknet ${kind})`,
    inputSchema: (wrappedInput ? wrap('input', info.inputSchema, true) : info.inputSchema) as Tool['inputSchema'],
    outputSchema: (wrappedOutput ? wrap(info.type === 'subscription' ? 'items' : 'result', output, true) : output) as Tool['outputSchema'],
    annotations: { title: info.name, readOnlyHint: info.type === 'query' },
  }
  return { name: info.name, kind: info.type, tool, wrappedInput, wrappedOutput }
}

/** The text content of a result: the JSON of the structured output, for clients that read text only. */
function textResult(structured: Record<string, unknown>): CallToolResult {
  return { content: [{ type: 'text', text: JSON.stringify(structured) }], structuredContent: structured }
}

/** A contract error as a tool error the model can read and act on. */
function errorResult(e: unknown): CallToolResult {
  const error = e instanceof CallError ? e : new CallError('INTERNAL', 'the operation failed')
  return { isError: true, content: [{ type: 'text', text: `${error.code}: ${error.message}` }] }
}

/** Calls for one kind of target: a peer (over the network) or a registry (in this process). */
interface Backend {
  list(): Promise<OperationInfo[]>
  call(name: string, input: unknown, signal: AbortSignal): Promise<unknown>
  subscribe(name: string, input: unknown, signal: AbortSignal): AsyncIterable<unknown>
}

function peerBackend(peer: DiscoverableOperations): Backend {
  return {
    list: () => peer.discover(),
    call: (name, input, signal) => peer.call(name, input, { signal }),
    subscribe: (name, input, signal) => peer.subscribe(name, input, { signal }),
  }
}

function refused<T>(): Subscription<T> {
  const error = new CallError('UNAVAILABLE', 'toMCP runs a registry without a connection: there is no peer to call back')
  const it: Subscription<T> = {
    next: () => Promise.reject(error),
    return: async () => ({ value: undefined, done: true }),
    [Symbol.asyncIterator]: () => it,
  }
  return it
}

/**
 * A registry run in this process: inputs are validated against the input schema (Ajv, JSON Schema
 * 2020-12) before the handler runs; there is no access control (nobody authenticated) and outputs
 * are not validated — serve the registry on a node and pass a peer for those.
 */
function registryBackend(registry: Registry, identity: Identity | null): Backend {
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true })
  const validators = new Map<string, ReturnType<typeof ajv.compile>>()
  const find = (name: string): RegisteredOperation => {
    const op = registry.operations.get(name)
    if (op === undefined || op.spec.visibility === 'internal') throw new CallError('NOT_FOUND', `no operation ${name}`)
    return op
  }
  const context = (name: string, signal: AbortSignal): HandlerContext => ({
    signal,
    identity,
    operation: name,
    call: <T>(operation: string, input: unknown) => run(operation, input, signal, true) as Promise<T>,
    peer: {
      call: () => Promise.reject(new CallError('UNAVAILABLE', 'toMCP runs a registry without a connection: there is no peer to call back')),
      subscribe: refused,
    },
  })
  const validate = (name: string, op: RegisteredOperation, input: unknown): void => {
    let check = validators.get(name)
    if (check === undefined) {
      check = ajv.compile(op.spec.input_schema as object)
      validators.set(name, check)
    }
    if (!check(input)) {
      const errors = (check.errors ?? []).map((e) => ({ path: e.instancePath, message: e.message ?? 'invalid' }))
      throw new CallError('INVALID_INPUT', `the input of ${name} does not match its schema`, { details: { errors } })
    }
  }
  const run = async (name: string, input: unknown, signal: AbortSignal, internal = false): Promise<unknown> => {
    const op = internal ? registry.operations.get(name) : find(name)
    if (op === undefined) throw new CallError('NOT_FOUND', `no operation ${name}`)
    if (op.kind === 'subscription') throw new CallError('INVALID_OPERATION_TYPE', `${name} is a subscription`)
    validate(name, op, input)
    return op.handler(input, context(name, signal))
  }
  return {
    list: async () =>
      [...registry.operations.values()]
        .filter((op) => op.spec.visibility !== 'internal')
        .map((op) => operationInfo(op.spec as unknown as Record<string, unknown>)),
    call: (name, input, signal) => run(name, input, signal),
    subscribe: (name, input, signal) => {
      const op = find(name)
      if (op.kind !== 'subscription') throw new CallError('INVALID_OPERATION_TYPE', `${name} is not a subscription`)
      validate(name, op, input)
      return op.handler(input, context(name, signal))
    },
  }
}

/**
 * An MCP server (the official SDK's `Server`) exposing alknet operations as MCP tools: queries
 * and mutations call the operation; a subscription becomes a tool that returns its first items
 * (`subscriptionItems`, or what arrived within `subscriptionWaitMs`), reporting each as MCP
 * progress. Connect it to any MCP transport; for many Streamable HTTP sessions, make one per session.
 *
 * With a peer, the tools are what that peer may call on its node (listed afresh on each
 * `tools/list`), validated and access-checked by that node. Operation errors become tool results
 * with `isError` and `CODE: message` text, so the model can read them.
 *
 * @example
 * ```ts
 * const peer = await connect({ address, fingerprint, key })
 * await toMCP(peer, { include: ['todo/*'] }).connect(new StdioServerTransport())
 * ```
 */
export function toMCP(target: McpTarget, options: ToMcpOptions = {}): McpServer {
  const backend = target instanceof Registry ? registryBackend(target, options.identity ?? null) : peerBackend(target)
  const toolName = options.toolName ?? ((op: string) => op.split('/').join('__'))
  const maxItems = options.subscriptionItems ?? 100
  const waitMs = options.subscriptionWaitMs ?? 10_000
  const server = new Server(
    { name: options.name ?? 'alknet', version: options.version ?? '0.1.0' },
    { capabilities: { tools: { listChanged: false } }, instructions: options.instructions },
  )

  let exposed: Map<string, Exposed> | undefined
  const refresh = async (): Promise<Map<string, Exposed>> => {
    const tools = new Map<string, Exposed>()
    for (const info of await backend.list()) {
      if (BUILT_IN.some((re) => re.test(info.name)) || !selected([info.name], options.include, options.exclude)) continue
      const e = expose(info, toolName)
      const other = tools.get(e.tool.name)
      if (other !== undefined) throw new McpError(ErrorCode.InternalError, `toMCP: ${other.name} and ${info.name} both map to the tool name ${e.tool.name}; pass a toolName option`)
      tools.set(e.tool.name, e)
    }
    exposed = tools
    return tools
  }

  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [...(await refresh()).values()].map((e) => e.tool) }))

  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> => {
    const e = (exposed ?? (await refresh())).get(request.params.name) ?? (await refresh()).get(request.params.name)
    if (e === undefined) throw new McpError(ErrorCode.InvalidParams, `no tool ${request.params.name}`)
    const args = request.params.arguments ?? {}
    const input = e.wrappedInput ? args.input : args
    try {
      if (e.kind !== 'subscription') {
        const output = await backend.call(e.name, input, extra.signal)
        return textResult(e.wrappedOutput ? { result: output } : (output as Record<string, unknown>))
      }
      const progressToken = request.params._meta?.progressToken
      const items: unknown[] = []
      const stop = new AbortController()
      const timer = setTimeout(() => stop.abort(), waitMs)
      const iterator = backend.subscribe(e.name, input, AbortSignal.any([extra.signal, stop.signal]))[Symbol.asyncIterator]()
      // Our own wait ending is not a failure: the items so far are the answer. It also ends a
      // generator that is waiting for its next item, which only the race below can interrupt.
      const stopped = new Promise<IteratorResult<unknown>>((resolve) =>
        stop.signal.addEventListener('abort', () => resolve({ done: true, value: undefined }), { once: true }),
      )
      try {
        while (items.length < maxItems) {
          const next = await Promise.race([iterator.next(), stopped]).catch((err: unknown) => {
            if (stop.signal.aborted && !extra.signal.aborted) return { done: true as const, value: undefined }
            throw err
          })
          if (next.done) break
          items.push(next.value)
          if (progressToken !== undefined) {
            await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: items.length } })
          }
        }
      } finally {
        clearTimeout(timer)
        void iterator.return?.()?.catch(() => {})
      }
      return textResult({ items })
    } catch (err) {
      return errorResult(err)
    }
  })
  return server
}
