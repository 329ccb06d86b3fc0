// The WebSocket client (`@alkdev/alknet/client`) in Node.js against a real node's WebSocket
// carrier over wss:// (TLS 1.3, a self-signed certificate the client trusts with `ca`): calls,
// subscriptions and their cancellation, pub/sub with a native peer, discovery, the typed API,
// tokens, and what happens when the node goes away. Node 20 has no global WebSocket, so these run
// on the `ws` package, loaded lazily by the client.
import { afterAll, afterEach, describe, expect, expectTypeOf, it } from 'vitest'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { type AddressInfo, type Socket, createServer } from 'node:net'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { selfSignedCertificate } from './certificate'
import { alknet, client } from './helpers'
import { addOps, deferred, dial, foreverOps, rejection, start } from './support'

const { Registry, Type } = alknet
type ServeOptions = Parameters<typeof alknet.serve>[0]
type WebSocketPeer = InstanceType<typeof client.WebSocketPeer>

const certificate = selfSignedCertificate()
afterAll(() => certificate.remove())

const clients: WebSocketPeer[] = []
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close()
})

const sha = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`

/** A node with the WebSocket carrier on, and the URL a client reaches it at. */
async function serveWs(operations: InstanceType<typeof Registry>, extra: Partial<ServeOptions> = {}) {
  const node = await start(operations, { tls: { cert: certificate.cert, key: certificate.key }, http: { websocket: true }, ...extra })
  return { node, url: `wss://${node.address}/alknet/call` }
}

/** A WebSocket client of `url` trusting the test certificate, closed after the test. */
async function wsClient(url: string, extra: Partial<Parameters<typeof client.connect>[0]> = {}): Promise<WebSocketPeer> {
  const peer = await client.connect({ url, ca: certificate.pem, ...extra })
  clients.push(peer)
  return peer
}

describe('the WebSocket client in Node.js', () => {
  it('calls an operation and gets protocol errors as CallError with a code', async () => {
    const { url } = await serveWs(addOps())
    const peer = await wsClient(url)
    await expect(peer.call('math/add', { a: 1, b: 2 })).resolves.toBe(3)
    const invalid = await rejection(peer.call('math/add', { a: 1, b: 'two' }))
    expect(invalid).toBeInstanceOf(client.CallError)
    expect(invalid.code).toBe('INVALID_INPUT')
    expect(invalid.details).toMatchObject({ errors: [expect.objectContaining({ path: expect.any(String) })] })
    expect((await rejection(peer.call('math/nope', {}))).code).toBe('NOT_FOUND')
  })

  it('answers many concurrent calls, each with its own result', async () => {
    const { url } = await serveWs(addOps())
    const peer = await wsClient(url)
    const sums = await Promise.all(Array.from({ length: 200 }, (_, n) => peer.call<number>('math/add', { a: n, b: n })))
    expect(sums).toEqual(Array.from({ length: 200 }, (_, n) => 2 * n))
  })

  it('a subscription delivers in order; break cancels it on the node', async () => {
    const { ops, stopped } = foreverOps()
    const { url } = await serveWs(ops)
    const peer = await wsClient(url)
    const seen: number[] = []
    for await (const n of peer.subscribe<number>('feed/forever', {})) {
      seen.push(n)
      if (seen.length === 5) break
    }
    expect(seen).toEqual([0, 1, 2, 3, 4])
    expect(await stopped).toBe(true)
    await expect(peer.call('math/add', { a: 2, b: 2 })).resolves.toBe(4)
  })

  it('aborting the signal rejects the iterator with CANCELLED and cancels the subscription on the node', async () => {
    const { ops, stopped } = foreverOps()
    const { url } = await serveWs(ops)
    const peer = await wsClient(url)
    const controller = new AbortController()
    const items = peer.subscribe<number>('feed/forever', {}, { signal: controller.signal })
    await expect(items.next()).resolves.toEqual({ done: false, value: 0 })
    controller.abort()
    expect((await rejection(items.next())).code).toBe('CANCELLED')
    expect(await stopped).toBe(true)
  })

  it('aborting a call rejects it with CANCELLED and aborts the handler', async () => {
    const started = deferred()
    const aborted = deferred<boolean>()
    const ops = new Registry().query('work/hang', { input: Type.Object({}), output: Type.Null() }, (_i, ctx) => {
      started.resolve()
      return new Promise<null>((resolve) =>
        ctx.signal.addEventListener('abort', () => {
          aborted.resolve(true)
          resolve(null)
        }),
      )
    })
    const { url } = await serveWs(ops)
    const peer = await wsClient(url)
    const controller = new AbortController()
    const call = peer.call('work/hang', {}, { signal: controller.signal })
    await started.promise
    controller.abort()
    expect((await rejection(call)).code).toBe('CANCELLED')
    expect(await aborted.promise).toBe(true)
  })

  it('a subscription ends when its generator returns', async () => {
    const ops = new Registry().subscription('clock/count', { input: Type.Object({ to: Type.Integer() }), output: Type.Integer() }, async function* ({ to }) {
      for (let n = 1; n <= to; n++) yield n
    })
    const { url } = await serveWs(ops)
    const peer = await wsClient(url)
    const counted: number[] = []
    for await (const n of peer.subscribe<number>('clock/count', { to: 1000 })) counted.push(n)
    expect(counted).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
  })

  it('a consumer that lets more than maxQueuedItems pile up gets OVERLOADED, and the node cancels the subscription', async () => {
    const yielded = deferred()
    const stopped = deferred<boolean>()
    const ops = new Registry().subscription('feed/burst', { input: Type.Object({}), output: Type.Integer() }, async function* (_i, ctx) {
      try {
        for (let n = 0; n < 10; n++) yield n
        yielded.resolve()
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))
      } finally {
        stopped.resolve(ctx.signal.aborted)
      }
    })
    const { url } = await serveWs(ops)
    const peer = await wsClient(url, { maxQueuedItems: 3 })
    const items = peer.subscribe<number>('feed/burst', {})
    // Nothing is taken: the fourth item to arrive overflows the queue and cancels remotely.
    expect(await stopped.promise).toBe(true)
    expect((await rejection(items.next())).code).toBe('OVERLOADED')
  })

  it('pub/sub both ways between the WebSocket client and a native peer', async () => {
    const { node, url } = await serveWs(new Registry(), { pubsub: { rules: [{ pattern: 'chat/>', publish: null, subscribe: null, anonymous: true }] } })
    const browser = await wsClient(url)
    const native = await dial(node)

    // Patterns that do not overlap: the second half's count must not include the first half's
    // subscription while its cancel is still on the way.
    const fromNative = browser.topic<{ text: string; warmUp?: boolean }>('chat/room/>')
    // A subscription is in place once a publication reaches it: publish until one counts.
    while ((await native.publish('chat/room/warm', { text: 'warm-up', warmUp: true })) < 1);
    await native.publish('chat/room/thread', { text: 'hello from the native peer' })
    for await (const m of fromNative) {
      if (m.data.warmUp) continue
      expect(m).toEqual({ topic: 'chat/room/thread', data: { text: 'hello from the native peer' } })
      break
    }

    const fromBrowser = native.topic<{ text: string; warmUp?: boolean }>('chat/*')
    while ((await browser.publish('chat/lobby', { text: 'warm-up', warmUp: true })) < 1);
    expect(await browser.publish('chat/lobby', { text: 'hello from the WebSocket' })).toBe(1)
    for await (const m of fromBrowser) {
      if (m.data.warmUp) continue
      expect(m).toEqual({ topic: 'chat/lobby', data: { text: 'hello from the WebSocket' } })
      break
    }
    expect((await rejection(browser.publish('news/x', {}))).code).toBe('UNAUTHENTICATED')
  })

  it('discover() lists what this caller may call, with schemas and access in camelCase', async () => {
    const ops = addOps()
      .mutation('todo/create', { input: Type.Object({ title: Type.String() }), output: Type.Null(), access: { requiredScopes: ['todo:write'] } }, () => null)
      .mutation('admin/wipe', { input: Type.Object({}), output: Type.Null(), access: { requiredScopes: ['admin'] } }, () => null)
    const { url } = await serveWs(ops, { auth: { peers: [{ id: 'dana', tokenHash: sha('tok-dana'), scopes: ['todo:write'] }] } })
    const found = await (await wsClient(url, { token: 'tok-dana' })).discover()
    const byName = new Map(found.map((op) => [op.name, op]))
    expect(byName.has('admin/wipe')).toBe(false)
    expect(byName.get('math/add')).toMatchObject({ type: 'query', inputSchema: { type: 'object', required: ['a', 'b'] }, outputSchema: { type: 'number' } })
    expect(byName.get('todo/create')?.access).toEqual({ requiredScopes: ['todo:write'] })
  })

  it('typed() calls operations as methods typed from the registry, the same as the native Peer', async () => {
    const ops = addOps().subscription('clock/count', { input: Type.Object({ to: Type.Integer() }), output: Type.Integer() }, async function* ({ to }) {
      for (let n = 1; n <= to; n++) yield n
    })
    const { node, url } = await serveWs(ops)
    const api = (await wsClient(url)).typed(ops)
    const sum = await api.math.add({ a: 20, b: 22 })
    expectTypeOf(sum).toEqualTypeOf<number>()
    expect(sum).toBe(42)
    const counted: number[] = []
    for await (const n of api.clock.count({ to: 3 })) counted.push(n)
    expect(counted).toEqual([1, 2, 3])
    expectTypeOf(api).toEqualTypeOf((await dial(node)).typed(ops))
    // @ts-expect-error b must be a number, as the schema says
    expect((await rejection(api.math.add({ a: 1, b: 'two' }))).code).toBe('INVALID_INPUT')
  })

  it('typed() works from a contract (kinds only), as a browser holding no handlers uses it', async () => {
    const { url } = await serveWs(addOps())
    const api = (await wsClient(url)).typed(client.contract<{ 'math/add': { kind: 'query'; input: { a: number; b: number }; output: number } }>({ 'math/add': 'query' }))
    await expect(api.math.add({ a: 1, b: 1 })).resolves.toBe(2)
  })

  it('a token in the handshake identifies the caller; a bad one still connects and gets UNAUTHENTICATED', async () => {
    const ops = addOps().query('who/ami', { input: Type.Object({}), output: Type.String(), access: { requiredScopes: ['me'] } }, (_i, ctx) => ctx.identity?.id ?? 'nobody')
    const { url } = await serveWs(ops, { auth: { peers: [{ id: 'carol', tokenHash: sha('tok-carol'), scopes: ['me'] }] } })
    await expect((await wsClient(url, { token: 'tok-carol' })).call('who/ami', {})).resolves.toBe('carol')
    const bad = await wsClient(url, { token: 'tok-mallory' })
    const refused = await rejection(bad.call('who/ami', {}))
    expect(refused.code).toBe('UNAUTHENTICATED')
    expect(refused.message).not.toContain('tok-mallory')
    // The bad token rode in the handshake: the connection is anonymous, so what needs no identity works.
    await expect(bad.call('math/add', { a: 1, b: 2 })).resolves.toBe(3)
    expect((await rejection((await wsClient(url)).call('who/ami', {}))).code).toBe('UNAUTHENTICATED')
    // A token per request wins for that request.
    await expect(bad.call('who/ami', {}, { token: 'tok-carol' })).resolves.toBe('carol')
  })

  it('a token a subprotocol cannot carry travels with each request instead', async () => {
    const token = 'a/b+c=='
    const ops = new Registry().query('who/ami', { input: Type.Object({}), output: Type.String(), access: { requiredScopes: ['me'] } }, (_i, ctx) => ctx.identity?.id ?? 'nobody')
    const { url } = await serveWs(ops, { auth: { peers: [{ id: 'erin', tokenHash: sha(token), scopes: ['me'] }] } })
    await expect((await wsClient(url, { token })).call('who/ami', {})).resolves.toBe('erin')
  })

  it('a call with a deadline the handler misses fails with TIMEOUT', async () => {
    const ops = new Registry().query('work/slow', { input: Type.Object({}), output: Type.Null() }, (_i, ctx) => new Promise<null>((resolve) => ctx.signal.addEventListener('abort', () => resolve(null))))
    const { url } = await serveWs(ops)
    expect((await rejection((await wsClient(url)).call('work/slow', {}, { timeoutMs: 20 }))).code).toBe('TIMEOUT')
  })

  it('refuses what is not a call carrier, and bad options, with a ConnectError that says why', async () => {
    const { node, url } = await serveWs(addOps())
    const connectError = async (options: Parameters<typeof client.connect>[0]) => {
      const e = await client.connect(options).then(
        () => undefined,
        (error: unknown) => error,
      )
      if (!(e instanceof client.ConnectError)) throw new Error(`expected a ConnectError, got ${String(e)}`)
      return e
    }
    const notThere = await connectError({ url: `wss://${node.address}/elsewhere`, ca: certificate.pem })
    expect(notThere.code).toBe('UNREACHABLE')
    expect(notThere.message).toMatch(/404/)
    const untrusted = await connectError({ url })
    expect(untrusted.code).toBe('UNREACHABLE')
    expect(untrusted.message).toMatch(/certificate/i)
    const wrongScheme = await connectError({ url: `https://${node.address}/alknet/call` })
    expect(wrongScheme.code).toBe('INVALID_OPTION')
    const typo = await connectError({ url, tokn: 'x' } as Parameters<typeof client.connect>[0])
    expect(typo.message).toMatch(/did you mean "token"/)
  })

  it('gives up with CONNECT_TIMEOUT on a server that accepts TCP and never answers', async () => {
    const silent = createServer(() => {})
    const held: Socket[] = []
    silent.on('connection', (socket) => held.push(socket))
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    try {
      const { port } = silent.address() as AddressInfo
      const e = await client.connect({ url: `wss://127.0.0.1:${port}/alknet/call`, ca: certificate.pem, connectTimeoutMs: 200 }).then(
        () => undefined,
        (error: unknown) => error,
      )
      expect(e).toBeInstanceOf(client.ConnectError)
      expect((e as InstanceType<typeof client.ConnectError>).code).toBe('CONNECT_TIMEOUT')
    } finally {
      for (const socket of held) socket.destroy()
      silent.close()
    }
  })

  it('a handler calling back into the WebSocket client gets NOT_FOUND: the client serves no operations', async () => {
    const ops = new Registry().query('call/back', { input: Type.Object({}), output: Type.String() }, async (_i, ctx) => {
      try {
        await ctx.peer.call('browser/anything', {})
        return 'answered'
      } catch (e) {
        return (e as { code?: string }).code ?? String(e)
      }
    })
    const { url } = await serveWs(ops)
    await expect((await wsClient(url)).call('call/back', {})).resolves.toBe('NOT_FOUND')
  })

  it('the node going away mid-call fails the call, and every later one, with UNAVAILABLE', async () => {
    const script = `
      const { serve, Keypair, Registry, Type } = require(${JSON.stringify(fileURLToPath(new URL('../dist/index.js', import.meta.url)))})
      const ops = new Registry().query('test/hang', { input: Type.Object({}), output: Type.Null() }, () => {
        console.log('hanging')
        return new Promise(() => {})
      })
      serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops, tls: { cert: ${JSON.stringify(certificate.cert)}, key: ${JSON.stringify(certificate.key)} }, http: { websocket: true } })
        .then((node) => console.log(node.address))
    `
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    const exited = once(child, 'exit')
    const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]()
    try {
      const address = (await lines.next()).value as string
      const peer = await wsClient(`wss://${address}/alknet/call`)
      const call = peer.call('test/hang', {})
      expect((await lines.next()).value).toBe('hanging')
      child.kill('SIGKILL')
      const lost = await rejection(call)
      expect(lost.code).toBe('UNAVAILABLE')
      expect(lost.retryable).toBe(true)
      expect(lost.message).toMatch(/connection unavailable: the WebSocket closed/)
      await peer.closed
      expect((await rejection(peer.call('test/hang', {}))).code).toBe('UNAVAILABLE')
      const items = peer.subscribe('test/hang', {})
      expect((await rejection(items.next())).code).toBe('UNAVAILABLE')
    } finally {
      child.kill('SIGKILL')
      await exited
    }
  })
})

// No real node sends these; a bare `ws` server stands in for one that breaks the protocol.
describe('the WebSocket client against a server that breaks the protocol', () => {
  /** A server that selects alknet.call and answers the first message with `reply`; resolves the close code it then gets. */
  async function misbehaving(reply: string | Buffer) {
    const { WebSocketServer } = await import('ws')
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (offered) => (offered.has('alknet.call') ? 'alknet.call' : false) })
    await once(server, 'listening')
    const closeCode = new Promise<number>((resolve) =>
      server.on('connection', (socket) => {
        socket.once('message', () => socket.send(reply))
        socket.on('close', (code) => resolve(code))
      }),
    )
    const { port } = server.address() as AddressInfo
    return { url: `ws://127.0.0.1:${port}/alknet/call`, closeCode, close: () => new Promise((resolve) => server.close(resolve)) }
  }

  it.each([
    ['a text message', '{"type":"call.responded","id":"1","payload":{"output":3}}', 1003, /text message/],
    ['bytes that are not an envelope', Buffer.from('{"type":"call.responded"}'), 1002, /invalid envelope \("id" is missing/],
  ] as const)('%s fails what is in flight with UNAVAILABLE and closes the socket with the code the protocol says', async (_what, reply, code, message) => {
    const server = await misbehaving(reply)
    try {
      const peer = await wsClient(server.url)
      const error = await rejection(peer.call('math/add', { a: 1, b: 2 }))
      expect(error.code).toBe('UNAVAILABLE')
      expect(error.message).toMatch(message)
      expect(await server.closeCode).toBe(code)
    } finally {
      await server.close()
    }
  })
})
