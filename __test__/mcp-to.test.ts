// toMCP driven by the official MCP SDK client: over stdio (a child process serving a peer's
// operations), over Streamable HTTP (a real HTTP server), and for a local registry.
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { afterEach, describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { deferred, dial, start } from './support'

const { Registry, Type, CallError, toMCP } = alknet
const stdioServer = fileURLToPath(new URL('./fixtures/mcp/to-mcp-stdio.cjs', import.meta.url))

const cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c()
})

/** The operations every test exposes; `waiting` resolves when wait/forever runs, `aborted` when its signal aborts. */
function operations() {
  const waiting = deferred()
  const aborted = deferred()
  const ops = new Registry()
    .query('math/add', { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number(), description: 'Adds two numbers' }, ({ a, b }) => a + b)
    .mutation(
      'todo/create',
      {
        input: Type.Object({ title: Type.String({ minLength: 1 }) }),
        output: Type.Object({ id: Type.Integer(), title: Type.String() }),
        errors: [{ code: 'TODO_EXISTS', description: 'a todo with this title exists' }],
      },
      ({ title }) => {
        if (title === 'dup') throw new CallError('TODO_EXISTS', 'there is already a todo "dup"')
        return { id: 1, title }
      },
    )
    .subscription('count/up', { input: Type.Object({ to: Type.Integer() }), output: Type.Integer() }, async function* ({ to }) {
      for (let i = 1; i <= to; i++) yield i
    })
    .query('wait/forever', { input: Type.Object({}), output: Type.Null() }, async (_input, ctx) => {
      waiting.resolve()
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      aborted.resolve()
      return null
    })
    .query('math/double', { input: Type.Number(), output: Type.Number() }, (x) => 2 * x)
    .query('hidden/secret', { input: Type.Object({}), output: Type.String() }, () => 'no')
  return { ops, waiting: waiting.promise, aborted: aborted.promise }
}

async function connected(transport: ConstructorParameters<typeof Client>[0] extends unknown ? Parameters<Client['connect']>[0] : never) {
  const client = new Client({ name: 'test', version: '1' })
  await client.connect(transport)
  cleanup.push(() => client.close())
  return client
}

/** The checks every transport must pass: tools listed, called, errors as isError, subscriptions, cancellation. */
async function exercise(client: Client, started: ReturnType<typeof operations>, opts: { hidden: boolean }) {
  const { tools } = await client.listTools()
  const names = tools.map((t) => t.name).sort()
  expect(names).toEqual(['count__up', 'math__add', 'math__double', 'todo__create', 'wait__forever', ...(opts.hidden ? ['hidden__secret'] : [])].sort())
  const add = tools.find((t) => t.name === 'math__add')!
  expect(add.description).toBe('Adds two numbers (alknet query)')
  expect(add.annotations).toMatchObject({ readOnlyHint: true, title: 'math/add' })
  expect(tools.find((t) => t.name === 'todo__create')!.annotations?.readOnlyHint).toBe(false)

  // A non-object output is wrapped in { result }; an object output is the structuredContent itself.
  expect((await client.callTool({ name: 'math__add', arguments: { a: 1, b: 2 } })).structuredContent).toEqual({ result: 3 })
  // A non-object input is the tool's `input` argument.
  const double = tools.find((t) => t.name === 'math__double')!
  expect(double.inputSchema).toEqual({ type: 'object', properties: { input: { type: 'number' } }, required: ['input'] })
  expect(double.outputSchema).toEqual({ type: 'object', properties: { result: { type: 'number' } }, required: ['result'] })
  expect((await client.callTool({ name: 'math__double', arguments: { input: 21 } })).structuredContent).toEqual({ result: 42 })
  const created = await client.callTool({ name: 'todo__create', arguments: { title: 'x' } })
  expect(created.structuredContent).toEqual({ id: 1, title: 'x' })
  expect(created.content).toEqual([{ type: 'text', text: '{"id":1,"title":"x"}' }])

  // Errors are tool results the model can read: declared codes, and the node's own validation.
  const dup = await client.callTool({ name: 'todo__create', arguments: { title: 'dup' } })
  expect(dup).toMatchObject({ isError: true, content: [{ type: 'text', text: 'TODO_EXISTS: there is already a todo "dup"' }] })
  const invalid = await client.callTool({ name: 'math__add', arguments: { a: 'one', b: 2 } })
  expect(invalid.isError).toBe(true)
  expect((invalid.content as { text: string }[])[0]!.text).toMatch(/^INVALID_INPUT: /)

  // A subscription returns its items, reporting each as progress.
  const progress: number[] = []
  const counted = await client.callTool({ name: 'count__up', arguments: { to: 3 } }, undefined, { onprogress: (p) => progress.push(p.progress) })
  expect(counted.structuredContent).toEqual({ items: [1, 2, 3] })
  // The SDK client handles notifications a microtask after the response when both arrive in one
  // read, and drops progress that comes after it: what arrives must be in order, some may not.
  expect([1, 2, 3].slice(0, progress.length)).toEqual(progress)

  // Cancelling the MCP request aborts the operation's handler.
  const controller = new AbortController()
  const pending = client.callTool({ name: 'wait__forever', arguments: {} }, undefined, { signal: controller.signal })
  await started.waiting
  controller.abort()
  await expect(pending).rejects.toThrow()
  await started.aborted
}

describe('toMCP(peer) driven by the MCP SDK client', () => {
  it('over stdio: a child process exposes a node\'s operations, reached by key', async () => {
    const started = operations()
    const node = await start(started.ops)
    const client = await connected(
      new StdioClientTransport({
        command: process.execPath,
        args: [stdioServer],
        env: { ...(process.env as Record<string, string>), ALKNET_ADDRESS: node.address, ALKNET_FINGERPRINT: node.fingerprint },
        stderr: 'inherit',
      }),
    )
    expect(client.getServerVersion()?.name).toBe('alknet-test')
    await exercise(client, started, { hidden: false })
  })

  it('over Streamable HTTP (one toMCP server per session)', async () => {
    const started = operations()
    const peer = await dial(await start(started.ops))
    const sessions = new Map<string, InstanceType<typeof StreamableHTTPServerTransport>>()
    const http = createServer(async (req, res) => {
      const id = req.headers['mcp-session-id']
      let transport = typeof id === 'string' ? sessions.get(id) : undefined
      if (transport === undefined) {
        const fresh = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), onsessioninitialized: (sid) => void sessions.set(sid, fresh) })
        const server = toMCP(peer)
        cleanup.push(() => server.close())
        await server.connect(fresh)
        transport = fresh
      }
      await transport.handleRequest(req, res)
    })
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
    cleanup.push(() => new Promise((resolve) => http.close(() => resolve())))
    cleanup.push(async () => void http.closeAllConnections())
    const port = (http.address() as { port: number }).port
    const client = await connected(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`)))
    await exercise(client, started, { hidden: true })
  })
})

describe('toMCP(registry)', () => {
  it('runs the handlers in process, validating inputs against their schemas', async () => {
    const started = operations()
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair()
    const server = toMCP(started.ops, { include: ['math/*', 'todo/*', 'count/*', 'wait/*', 'hidden/*'] })
    await server.connect(serverSide)
    cleanup.push(() => server.close())
    await exercise(await connected(clientSide), started, { hidden: true })
  })

  it('a subscription tool returns the items that arrived within subscriptionWaitMs', async () => {
    const ops = new Registry().subscription('feed/one_then_wait', { input: Type.Object({}), output: Type.String() }, async function* (_input, ctx) {
      yield 'first'
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
    })
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair()
    const server = toMCP(ops, { subscriptionWaitMs: 100 })
    await server.connect(serverSide)
    cleanup.push(() => server.close())
    const result = await (await connected(clientSide)).callTool({ name: 'feed__one_then_wait', arguments: {} })
    expect(result.structuredContent).toEqual({ items: ['first'] })
  })

  it('include/exclude, tool names and collisions', async () => {
    const { ops } = operations()
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair()
    const server = toMCP(ops, { include: ['math/*', /^todo\//], exclude: ['todo/create'], toolName: (op) => op.replace('/', '.') })
    await server.connect(serverSide)
    cleanup.push(() => server.close())
    const client = await connected(clientSide)
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['math.add', 'math.double'])

    const [c2, s2] = InMemoryTransport.createLinkedPair()
    const clash = toMCP(ops, { toolName: () => 'same' })
    await clash.connect(s2)
    cleanup.push(() => clash.close())
    await expect((await connected(c2)).listTools()).rejects.toThrow(/both map to the tool name same/)
  })
})
