// fromMCP: an MCP server's tools (and resources) as a Registry, through the official MCP SDK
// client. The mapping rules are documented in docs/bridges.md.
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js'
import { Type } from '@sinclair/typebox'
import { type ImportedOperation, type NameFilter, Names, describeOperations, type Unsupported, type UnsupportedReporter, isObject, reporter, segment, selected } from './bridge'
import { CallError } from './errors'
import type { McpClient } from './mcp-types'
import { type Access, type HandlerContext, type OperationMap, Registry } from './registry'

/** An MCP server to start as a child process and talk to over stdio. */
export interface McpCommand {
  /** The executable, e.g. `npx` or `node`. */
  command: string
  /** Its arguments. */
  args?: string[]
  /** Its environment (default: the SDK's safe subset of this process's environment). */
  env?: Record<string, string>
  /** Its working directory. */
  cwd?: string
  /** Where its stderr goes (default `inherit`). */
  stderr?: 'inherit' | 'ignore' | 'pipe'
}

/** Where the MCP server is: a connected SDK `Client`, a command to start (stdio), or a Streamable HTTP URL. */
export type McpSource = McpClient | McpCommand | string | URL

/** Options of {@link fromMCP}. */
export interface FromMcpOptions {
  /** The first name segment of every operation (default `mcp`). */
  namespace?: string
  /** A naming rule of your own for tools (default `namespace/tool_name`); must return a valid name. */
  name?: (tool: string) => string
  /** Only these operations (alknet names or tool names; `prefix/*` and regular expressions allowed). */
  include?: NameFilter
  /** Not these operations (same forms as `include`). */
  exclude?: NameFilter
  /** Also import resources as queries (`namespace/resources/list`, `/read`, `/templates`; default true). */
  resources?: boolean
  /** Per MCP request: past it the call fails with `TIMEOUT`. The alknet deadline (`ctx.signal`) always applies. */
  timeoutMs?: number
  /** Access rule of every imported operation (default: none). */
  access?: Access
  /** Throw instead of reporting when a feature is unsupported (default false). */
  strict?: boolean
  /** Where unsupported features are reported (default: one line each on `console.warn`). */
  onUnsupported?: UnsupportedReporter
}

/** The registry {@link fromMCP} makes: its handlers call the MCP server; close it to disconnect. */
export class McpRegistry<Ops extends OperationMap = OperationMap> extends Registry<Ops> {
  /** The connected MCP SDK client the handlers use. */
  readonly client: McpClient
  /** What the import could not carry over, and why (also reported through `onUnsupported`). */
  readonly unsupported: readonly Unsupported[]

  /** @internal */
  constructor(client: McpClient, unsupported: Unsupported[]) {
    super()
    this.client = client
    this.unsupported = unsupported
  }

  /** The operations imported, with their schemas: what a node serving this registry offers. */
  describe(): ImportedOperation[] {
    return describeOperations(this.operations)
  }

  /** Closes the MCP client (and stops the server process `fromMCP` started); calls fail with `UNAVAILABLE` afterwards. */
  async close(): Promise<void> {
    await this.client.close()
  }
}

/** Error codes every imported tool declares. @internal */
export const MCP_ERRORS = [
  { code: 'TOOL_ERROR', description: 'the tool reported an error (isError); details: { content }' },
  { code: 'MCP_ERROR', description: 'the MCP server answered with a protocol error; details: { code, message }' },
]

/** The MCP SDK's default is 60 s; here the alknet deadline decides unless `timeoutMs` is set. */
const NO_TIMEOUT = 2 ** 31 - 1

/** An MCP failure as a contract error (the table is in docs/bridges.md). @internal */
export function mcpError(e: unknown, signal: AbortSignal, where: string): CallError {
  if (e instanceof CallError) return e
  if (signal.aborted) return new CallError('CANCELLED', `the request to ${where} was cancelled`)
  // By shape, not `instanceof`: the SDK ships ESM and CommonJS builds, and an error (or client)
  // made by one is not an instance of the other's class.
  if (e instanceof Error && e.name === McpError.name && typeof (e as McpError).code === 'number') {
    const code = (e as McpError).code
    const message = e.message
    switch (code) {
      case ErrorCode.InvalidParams:
        return new CallError('INVALID_INPUT', `${where}: the MCP server refused the arguments`, { details: { code, message } })
      case ErrorCode.RequestTimeout:
        return new CallError('TIMEOUT', `${where} did not answer in time`)
      case ErrorCode.ConnectionClosed:
        return new CallError('UNAVAILABLE', `${where}: the MCP connection closed`)
      default:
        return new CallError('MCP_ERROR', `${where}: the MCP server answered error ${code}`, { details: { code, message } })
    }
  }
  return new CallError('UNAVAILABLE', `${where}: the MCP server cannot be reached`)
}

/** A connected SDK client, recognised by shape (it may come from the SDK's other build). */
function isClient(source: McpSource): source is McpClient {
  return typeof source === 'object' && !(source instanceof URL) && typeof (source as McpClient).callTool === 'function'
}

async function connectSource(source: McpSource): Promise<McpClient> {
  if (isClient(source)) return source
  const client = new Client({ name: 'alknet-fromMCP', version: '1' })
  const transport =
    typeof source === 'string' || source instanceof URL
      ? new StreamableHTTPClientTransport(new URL(source))
      : new StdioClientTransport({ command: source.command, args: source.args, env: source.env, cwd: source.cwd, stderr: source.stderr })
  try {
    await client.connect(transport)
  } catch (e) {
    await client.close().catch(() => {})
    throw new Error(`fromMCP: cannot connect to the MCP server: ${(e as Error).message}`)
  }
  return client
}

/** Every page of a cursor-paginated MCP list. */
async function all<T>(page: (cursor: string | undefined) => Promise<{ items: T[]; nextCursor?: string }>): Promise<T[]> {
  const items: T[] = []
  let cursor: string | undefined
  do {
    const result = await page(cursor)
    items.push(...result.items)
    cursor = result.nextCursor
  } while (cursor !== undefined)
  return items
}

/** A tool's JSON Schema as an operation schema: its `$schema` (often draft-07) dropped, the rest kept as 2020-12. */
function schemaOf(schema: unknown): Record<string, unknown> {
  if (!isObject(schema)) return {}
  const copy: Record<string, unknown> = { ...schema }
  delete copy.$schema
  return copy
}

const CONTENT_LIST = { type: 'array', items: { type: 'object', properties: { type: { type: 'string' } }, required: ['type'] } }

/**
 * Imports an MCP server as a {@link Registry}: one operation per tool (input: the tool's
 * `inputSchema`; output: its `structuredContent` when it has an `outputSchema`, else its content
 * list), and resources as queries. Tools marked `readOnlyHint` are queries, the others mutations.
 * Aborting an alknet call cancels the MCP request (`notifications/cancelled`).
 *
 * @example
 * ```ts
 * const everything = await fromMCP({ command: 'npx', args: ['@modelcontextprotocol/server-everything'] }, { namespace: 'everything' })
 * const node = await serve({ listen: '0.0.0.0:4433', key, operations: everything })
 * // elsewhere: await peer.call('everything/echo', { message: 'hi' })
 * ```
 */
export async function fromMCP<Ops extends OperationMap = OperationMap>(source: McpSource, options: FromMcpOptions = {}): Promise<McpRegistry<Ops>> {
  const client = await connectSource(source)
  try {
    return await importServer<Ops>(client, options)
  } catch (e) {
    await client.close().catch(() => {})
    throw e
  }
}

/** A string field of an MCP object, if it is one. */
function str(o: Record<string, unknown>, key: string): string | undefined {
  return typeof o[key] === 'string' ? (o[key] as string) : undefined
}

async function importServer<Ops extends OperationMap>(client: McpClient, options: FromMcpOptions): Promise<McpRegistry<Ops>> {
  const ns = options.namespace ?? 'mcp'
  const unsupported: Unsupported[] = []
  const report = reporter('fromMCP', options, unsupported)
  const registry = new McpRegistry<Ops>(client, unsupported)
  const names = new Names('fromMCP')
  const caps = client.getServerCapabilities()
  const capabilities: Record<string, unknown> = isObject(caps) ? caps : {}
  const requestOptions = (ctx: HandlerContext) => ({ signal: ctx.signal, timeout: options.timeoutMs ?? NO_TIMEOUT })

  const listed = capabilities.tools ? await all((cursor) => client.listTools({ cursor }).then((r) => ({ items: r.tools, nextCursor: r.nextCursor }))) : []
  for (const tool of listed.filter(isObject)) {
    const toolName = str(tool, 'name')
    if (toolName === undefined) continue
    const where = `tool ${toolName}`
    const name = options.name ? options.name(toolName) : `${ns}/${segment(toolName)}`
    if (!selected([name, toolName], options.include, options.exclude)) continue
    if (isObject(tool.execution) && tool.execution.taskSupport === 'required') {
      report(where, 'task-only tool', 'operation skipped', 'tools that must run as MCP tasks are not supported')
      continue
    }
    names.claim(name, where)
    const structured = isObject(tool.outputSchema)
    const def = {
      input: Type.Unsafe<unknown>(schemaOf(tool.inputSchema)),
      output: Type.Unsafe<unknown>(structured ? schemaOf(tool.outputSchema) : CONTENT_LIST),
      errors: MCP_ERRORS,
      access: options.access,
      description: [str(tool, 'title'), str(tool, 'description')].filter((s) => s !== undefined && s !== '').join(': ') || undefined,
    }
    const handler = async (input: unknown, ctx: HandlerContext): Promise<unknown> => {
      let answer: object
      try {
        answer = await client.callTool({ name: toolName, arguments: isObject(input) ? input : {} }, undefined, requestOptions(ctx))
      } catch (e) {
        throw mcpError(e, ctx.signal, where)
      }
      const result: Record<string, unknown> = isObject(answer) ? answer : {}
      const content = Array.isArray(result.content) ? result.content : []
      if (result.isError === true) {
        const text = content.map((c) => (isObject(c) && typeof c.text === 'string' ? c.text : '')).join(' ').trim()
        throw new CallError('TOOL_ERROR', text === '' ? `${where} failed` : `${where} failed: ${text}`, { details: { content } })
      }
      if (!structured) return content
      if (!isObject(result.structuredContent)) throw new CallError('MCP_ERROR', `${where} declared an outputSchema but answered no structuredContent`)
      return result.structuredContent
    }
    if (isObject(tool.annotations) && tool.annotations.readOnlyHint === true) registry.query(name, def, handler)
    else registry.mutation(name, def, handler)
  }

  if (capabilities.resources && options.resources !== false) {
    const resource = (op: string, description: string, input: Record<string, unknown>, call: (input: Record<string, unknown>, ctx: HandlerContext) => Promise<unknown>): void => {
      const name = `${ns}/resources/${op}`
      if (!selected([name], options.include, options.exclude)) return
      names.claim(name, `resources/${op}`)
      registry.query(
        name,
        { input: Type.Unsafe<unknown>(input), output: Type.Unsafe<unknown>({ type: 'object' }), errors: MCP_ERRORS, access: options.access, description },
        async (i, ctx) => {
          try {
            return await call(isObject(i) ? i : {}, ctx)
          } catch (e) {
            throw mcpError(e, ctx.signal, `resources/${op}`)
          }
        },
      )
    }
    const cursorInput = { type: 'object', properties: { cursor: { type: 'string' } }, additionalProperties: false }
    resource('list', 'One page of the MCP server\'s resources: { resources, nextCursor? }', cursorInput, (i, ctx) =>
      client.listResources(typeof i.cursor === 'string' ? { cursor: i.cursor } : {}, requestOptions(ctx)),
    )
    resource('templates', 'One page of the MCP server\'s resource templates: { resourceTemplates, nextCursor? }', cursorInput, (i, ctx) =>
      client.listResourceTemplates(typeof i.cursor === 'string' ? { cursor: i.cursor } : {}, requestOptions(ctx)),
    )
    resource(
      'read',
      'Reads one resource of the MCP server by URI: { contents }',
      { type: 'object', properties: { uri: { type: 'string' } }, required: ['uri'], additionalProperties: false },
      (i, ctx) => client.readResource({ uri: String(i.uri) }, requestOptions(ctx)),
    )
    if (isObject(capabilities.resources) && capabilities.resources.subscribe === true) {
      report('resources', 'resource subscriptions', 'part left out', 'resources/subscribe is not imported; read resources with the read query')
    }
  }
  if (capabilities.prompts) {
    report('prompts', 'prompts', 'part left out', 'prompts are message templates for a model, not operations')
  }
  return registry
}
