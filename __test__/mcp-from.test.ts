// fromMCP against the reference MCP server (@modelcontextprotocol/server-everything, pinned),
// started over stdio, imported into a registry, served on a node and called from a peer.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js'
import { afterEach, describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { deferred, dial, rejection, start } from './support'

const { fromMCP } = alknet
const require = createRequire(import.meta.url)
const everything = { command: process.execPath, args: [require.resolve('@modelcontextprotocol/server-everything/dist/index.js'), 'stdio'], stderr: 'ignore' as const }
type McpRegistry = Awaited<ReturnType<typeof fromMCP>>

const registries: McpRegistry[] = []
afterEach(async () => {
  for (const r of registries.splice(0)) await r.close()
})
async function imported(source: Parameters<typeof fromMCP>[0] = everything, options: Parameters<typeof fromMCP>[1] = {}) {
  const r = await fromMCP(source, { namespace: 'everything', onUnsupported: () => {}, ...options })
  registries.push(r)
  return r
}

describe('fromMCP against @modelcontextprotocol/server-everything (stdio)', () => {
  it('lists tools as operations: readOnlyHint → query, else mutation; resources as queries', async () => {
    const issues: string[] = []
    const ops = await imported(everything, { onUnsupported: (i) => issues.push(i.feature) })
    const kinds = Object.fromEntries(ops.describe().map((o) => o.name).map((n) => [n, ops.kindOf(n)]))
    expect(kinds).toMatchObject({
      'everything/echo': 'query',
      'everything/get_sum': 'query',
      'everything/get_structured_content': 'query',
      'everything/trigger_long_running_operation': 'query',
      'everything/gzip_file_as_resource': 'mutation',
      'everything/resources/list': 'query',
      'everything/resources/read': 'query',
      'everything/resources/templates': 'query',
    })
    // What it cannot carry over is said, not dropped silently.
    expect(issues).toEqual(['task-only tool', 'resource subscriptions', 'prompts'])
    expect(ops.kindOf('everything/simulate_research_query')).toBeUndefined()
    expect(ops.describe().find((o) => o.name === 'everything/echo')!.input).toMatchObject({ type: 'object', properties: { message: { type: 'string' } }, required: ['message'] })
  })

  it('calls tools through a node: content list, structuredContent with outputSchema, tool errors, bad input', async () => {
    const peer = await dial(await start(await imported()))
    expect(await peer.call('everything/echo', { message: 'hello' })).toEqual([{ type: 'text', text: 'Echo: hello' }])
    expect(await peer.call('everything/get_sum', { a: 2, b: 3 })).toEqual([{ type: 'text', text: 'The sum of 2 and 3 is 5.' }])
    expect(await peer.call('everything/get_structured_content', { location: 'Chicago' })).toEqual({
      temperature: 36,
      conditions: 'Light rain / drizzle',
      humidity: 82,
    })
    const toolError = await rejection(peer.call('everything/gzip_file_as_resource', { name: 'x.gz', data: 'ftp://127.0.0.1/x' }))
    expect(toolError.code).toBe('TOOL_ERROR')
    expect(toolError.message).toMatch(/Unsupported URL protocol/)
    expect(toolError.details).toEqual({ content: [expect.objectContaining({ type: 'text' })] })
    // The node validates against the tool's inputSchema before the MCP server sees anything.
    expect((await rejection(peer.call('everything/get_sum', { a: 'two', b: 3 }))).code).toBe('INVALID_INPUT')
  })

  it('reads resources', async () => {
    const peer = await dial(await start(await imported()))
    const list = await peer.call<{ resources: { uri: string }[] }>('everything/resources/list', {})
    expect(list.resources.length).toBeGreaterThan(0)
    const uri = list.resources[0]!.uri
    const read = await peer.call<{ contents: { uri: string }[] }>('everything/resources/read', { uri })
    expect(read.contents[0]!.uri).toBe(uri)
  })

  it('aborting the alknet call cancels the MCP request (notifications/cancelled)', async () => {
    const transport = new StdioClientTransport(everything)
    const sent: JSONRPCMessage[] = []
    const toolCalled = deferred<number | string>()
    const cancelled = deferred<unknown>()
    const send = transport.send.bind(transport)
    // Observe what the SDK client writes to the real server process.
    transport.send = async (message: JSONRPCMessage) => {
      sent.push(message)
      if ('method' in message && message.method === 'tools/call' && 'id' in message) toolCalled.resolve(message.id)
      if ('method' in message && message.method === 'notifications/cancelled') cancelled.resolve(message.params)
      return send(message)
    }
    const client = new Client({ name: 'test', version: '1' })
    await client.connect(transport)
    const peer = await dial(await start(await imported(client)))
    const controller = new AbortController()
    const call = peer.call('everything/trigger_long_running_operation', { duration: 600, steps: 600 }, { signal: controller.signal })
    const requestId = await toolCalled.promise
    controller.abort()
    expect((await rejection(call)).code).toBe('CANCELLED')
    expect(await cancelled.promise).toMatchObject({ requestId })
    // The connection to the MCP server is still good.
    expect(await peer.call('everything/echo', { message: 'still here' })).toEqual([{ type: 'text', text: 'Echo: still here' }])
  })

  it('after close(), calls fail with UNAVAILABLE', async () => {
    const ops = await fromMCP(everything, { namespace: 'everything', onUnsupported: () => {} })
    const peer = await dial(await start(ops))
    await ops.close()
    expect((await rejection(peer.call('everything/echo', { message: 'x' }))).code).toBe('UNAVAILABLE')
  })

  it('include/exclude and a missing server', async () => {
    const ops = await imported(everything, { include: ['everything/echo', 'get-sum'], resources: false })
    expect(ops.describe().map((o) => o.name)).toEqual(['everything/echo', 'everything/get_sum'])
    await expect(fromMCP({ command: process.execPath, args: ['-e', 'process.exit(3)'], stderr: 'ignore' })).rejects.toThrow(/fromMCP: cannot connect to the MCP server/)
  })
})

describe('fromMCP over Streamable HTTP', () => {
  it('imports server-everything served over Streamable HTTP, by URL', async () => {
    // The server takes its port from PORT: a port free a moment ago.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port
        s.close(() => resolve(p))
      })
    })
    const child = spawn(process.execPath, [everything.args[0]!, 'streamableHttp'], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'] })
    try {
      let stderr = ''
      child.stderr.setEncoding('utf8')
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', (d: string) => {
          stderr += d
          if (stderr.includes('listening on port')) resolve()
        })
        child.once('exit', (code) => reject(new Error(`server-everything exited (${code}): ${stderr}`)))
      })
      const ops = await imported(`http://127.0.0.1:${port}/mcp`)
      const peer = await dial(await start(ops))
      expect(await peer.call('everything/get_sum', { a: 20, b: 22 })).toEqual([{ type: 'text', text: 'The sum of 20 and 22 is 42.' }])
      await ops.close()
      registries.splice(registries.indexOf(ops), 1)
    } finally {
      child.kill()
      if (child.exitCode === null) await once(child, 'exit')
    }
  })
})

describe('MCP error → contract code (docs/bridges.md)', () => {
  // The mapping function itself, row by row (the rows a real server produces are exercised above).
  // Internal (not in the published types), so loaded by path.
  const { mcpError } = require('../dist/mcp-from.js') as { mcpError: (e: unknown, signal: AbortSignal, where: string) => { code: string } }
  const live = new AbortController().signal
  it.each([
    [new McpError(ErrorCode.InvalidParams, 'bad'), 'INVALID_INPUT'],
    [new McpError(ErrorCode.RequestTimeout, 'slow'), 'TIMEOUT'],
    [new McpError(ErrorCode.ConnectionClosed, 'gone'), 'UNAVAILABLE'],
    [new McpError(ErrorCode.MethodNotFound, 'no'), 'MCP_ERROR'],
    [new McpError(ErrorCode.InternalError, 'boom'), 'MCP_ERROR'],
    [new Error('Not connected'), 'UNAVAILABLE'],
  ])('%s → %s', (error, code) => {
    expect(mcpError(error, live, 'tool x').code).toBe(code)
  })
  it('an aborted request → CANCELLED', () => {
    const c = new AbortController()
    c.abort()
    expect(mcpError(new Error('AbortError'), c.signal, 'tool x').code).toBe('CANCELLED')
  })
})
