// The client surface: typed proxies, discovery, subscriptions and their cancellation, pub/sub,
// transports, pinning, tokens, and draining on close.
import { describe, expect, expectTypeOf, it } from 'vitest'
import { createHash } from 'node:crypto'
import { alknet } from './helpers'
import { addOps, deferred, dial, gatedOps, rejection, start } from './support'

const { connect, Keypair, Registry, Type } = alknet

const api = () =>
  addOps()
    .subscription('clock/count', { input: Type.Object({ to: Type.Integer() }), output: Type.Integer(), description: 'counts' }, async function* ({ to }) {
      for (let n = 1; n <= to; n++) yield n
    })
    .mutation('todo/create', { input: Type.Object({ title: Type.String() }), output: Type.Object({ id: Type.Integer() }) }, () => ({ id: 7 }))

describe('Peer', () => {
  it('typed() calls queries, mutations and subscriptions as nested methods typed from the registry', async () => {
    const ops = api()
    const peer = await dial(await start(ops))
    const typed = peer.typed(ops)
    const sum = await typed.math.add({ a: 1, b: 2 })
    expectTypeOf(sum).toEqualTypeOf<number>()
    expect(sum).toBe(3)
    await expect(typed.todo.create({ title: 'x' })).resolves.toEqual({ id: 7 })
    const counted: number[] = []
    for await (const n of typed.clock.count({ to: 3 })) counted.push(n)
    expect(counted).toEqual([1, 2, 3])
    // @ts-expect-error b must be a number, as the schema says
    expect((await rejection(typed.math.add({ a: 1, b: 'two' }))).code).toBe('INVALID_INPUT')
    await expect((async () => (typed as unknown as { math: { nope(i: object): Promise<unknown> } }).math.nope({}))()).rejects.toThrow(/not an operation/)
  })

  it('discover() lists what this caller may call, with schemas', async () => {
    const ops = api().mutation('admin/wipe', { input: Type.Object({}), output: Type.Null(), access: { requiredScopes: ['admin'] } }, () => null)
    const peer = await dial(await start(ops))
    const found = await peer.discover()
    const byName = new Map(found.map((op) => [op.name, op]))
    expect(byName.has('admin/wipe')).toBe(false)
    expect(byName.get('clock/count')).toMatchObject({ type: 'subscription', description: 'counts', outputSchema: { type: 'integer' } })
    expect(byName.get('math/add')?.inputSchema).toMatchObject({ type: 'object', required: ['a', 'b'] })
  })

  it('delivers a long fast subscription completely and in order', async () => {
    const peer = await dial(await start(api()))
    let expected = 1
    for await (const n of peer.subscribe<number>('clock/count', { to: 20_000 })) {
      if (n !== expected) throw new Error(`item ${n} arrived where ${expected} was due`)
      expected++
    }
    expect(expected).toBe(20_001)
  })

  it('aborting a subscription signal rejects the iterator with CANCELLED and aborts the generator', async () => {
    const running = deferred()
    const stopped = deferred<boolean>()
    const ops = new Registry().subscription('feed/forever', { input: Type.Object({}), output: Type.Integer() }, async function* (_i, ctx) {
      try {
        running.resolve()
        yield 1
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))
      } finally {
        stopped.resolve(ctx.signal.aborted)
      }
    })
    const peer = await dial(await start(ops))
    const controller = new AbortController()
    const items = peer.subscribe<number>('feed/forever', {}, { signal: controller.signal })
    await expect(items.next()).resolves.toEqual({ done: false, value: 1 })
    await running.promise
    const pending = items.next()
    controller.abort()
    expect((await rejection(pending)).code).toBe('CANCELLED')
    expect(await stopped.promise).toBe(true)
  })

  it('pub/sub between peers with wildcards: * one segment, > the rest', async () => {
    const node = await start(new Registry(), { pubsub: { rules: [{ pattern: 'chat/>', publish: null, subscribe: null, anonymous: true }] } })
    const alice = await dial(node)
    const bob = await dial(node)
    const oneLevel = bob.topic<{ text: string }>('chat/*')
    const deep = bob.topic<{ text: string }>('chat/>')
    // A subscription is in place once a publication reaches it: publish until both count.
    let delivered = 0
    while (delivered < 2) delivered = await alice.publish('chat/room1', { text: 'warm-up' })
    await alice.publish('chat/room1/thread', { text: 'deep' })
    await alice.publish('chat/room1', { text: 'hi' })
    const firstReal = async (it: AsyncIterableIterator<{ topic: string; data: { text: string } }>) => {
      for await (const m of it) if (m.data.text !== 'warm-up') return m
      return undefined
    }
    await expect(firstReal(deep)).resolves.toEqual({ topic: 'chat/room1/thread', data: { text: 'deep' } })
    await expect(firstReal(oneLevel)).resolves.toEqual({ topic: 'chat/room1', data: { text: 'hi' } })
    expect((await rejection(alice.publish('news/x', {}))).code).toBe('UNAUTHENTICATED')
  })

  it('the node publishes as itself to peers subscribed to a topic', async () => {
    const node = await start(new Registry(), { pubsub: { rules: [{ pattern: 'news/>', publish: [], subscribe: null, anonymous: true }] } })
    const peer = await dial(node)
    expect(peer.fingerprint).toBe(node.fingerprint)
    const news = peer.topic<string>('news/>')
    const first = news.next()
    let delivered = 0
    while (delivered === 0) delivered = await node.publish('news/tech', 'hello')
    await expect(first).resolves.toEqual({ done: false, value: { topic: 'news/tech', data: 'hello' } })
    // publish: [] means no peer may publish, while the node itself still can.
    expect((await rejection(peer.publish('news/tech', 'spoof'))).code).toBe('UNAUTHENTICATED')
    await news.return()
  })

  it('publishes with the peer token, or with the token a publish names', async () => {
    const sha = (t: string) => `sha256:${createHash('sha256').update(t).digest('hex')}`
    const node = await start(new Registry(), {
      auth: { peers: [{ id: 'press', tokenHash: sha('tok-press'), scopes: ['press'] }] },
      pubsub: { rules: [{ pattern: 'news/>', publish: ['press'], subscribe: null, anonymous: true }] },
    })
    await expect((await dial(node, { token: 'tok-press' })).publish('news/a', 1)).resolves.toBe(0)
    const stranger = await dial(node)
    expect((await rejection(stranger.publish('news/a', 2))).code).toBe('UNAUTHENTICATED')
    await expect(stranger.publish('news/a', 3, { token: 'tok-press' })).resolves.toBe(0)
    expect((await rejection(stranger.publish('news/a', 4, { token: 'tok-wrong' }))).code).toBe('UNAUTHENTICATED')
  })

  it('works over TCP+TLS as over QUIC', async () => {
    const node = await start(api())
    const peer = await dial(node, { transport: 'tcp' })
    await expect(peer.call('math/add', { a: 20, b: 22 })).resolves.toBe(42)
  })

  it('refuses a node whose key is not the one pinned', async () => {
    const node = await start(api())
    const other = Keypair.generate().fingerprint
    await expect(connect({ address: node.address, fingerprint: other, key: Keypair.generate() })).rejects.toThrow(/fingerprint|pin/i)
  })

  it('a bearer token identifies a caller whose key is unknown', async () => {
    const token = 'tok-for-carol'
    const hash = `sha256:${createHash('sha256').update(token).digest('hex')}`
    const ops = new Registry().query('who/ami', { input: Type.Object({}), output: Type.Unknown() }, (_i, ctx) => ctx.identity?.id ?? null)
    const node = await start(ops, { auth: { peers: [{ id: 'carol', tokenHash: hash }] } })
    await expect((await dial(node, { token })).call('who/ami', {})).resolves.toBe('carol')
    await expect((await dial(node)).call('who/ami', {}, { token })).resolves.toBe('carol')
    expect((await rejection((await dial(node, { token: 'wrong' })).call('who/ami', {}))).code).toBe('UNAUTHENTICATED')
  })

  it('an alk_ API key identifies its caller with its scopes until it expires', async () => {
    const sha = (t: string) => `sha256:${createHash('sha256').update(t).digest('hex')}`
    const ops = new Registry().mutation(
      'todo/create',
      { input: Type.Object({}), output: Type.Unknown(), access: { requiredScopes: ['todo:write'] } },
      (_i, ctx) => ctx.identity?.id ?? null,
    )
    const node = await start(ops, {
      auth: {
        apiKeys: [
          { prefix: 'ci', hash: sha('alk_ci_s3cret'), scopes: ['todo:write'] },
          { prefix: 'old', hash: sha('alk_old_s3cret'), scopes: ['todo:write'], expiresAt: 1 },
        ],
      },
    })
    await expect((await dial(node, { token: 'alk_ci_s3cret' })).call('todo/create', {})).resolves.toBe('apikey:ci')
    expect((await rejection((await dial(node, { token: 'alk_ci_guess' })).call('todo/create', {}))).code).toBe('UNAUTHENTICATED')
    expect((await rejection((await dial(node, { token: 'alk_old_s3cret' })).call('todo/create', {}))).code).toBe('UNAUTHENTICATED')
  })

  it('close() lets calls in flight finish and refuses new connections', async () => {
    const { ops, started, release } = gatedOps()
    const node = await start(ops, { drainTimeoutMs: 10_000 })
    const peer = await dial(node)
    const call = peer.call('work/gated', {})
    await started
    const closed = node.close()
    await expect(connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate() })).rejects.toThrow()
    release()
    await expect(call).resolves.toBe('finished')
    await closed
  })
})
