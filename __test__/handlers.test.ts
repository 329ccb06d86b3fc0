// JavaScript handlers: failures become contract errors and never take the node down; context
// (identity, signal, composition, calls back to the caller) works.
import { describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { addOps, deferred, dial, rejection, start } from './support'

const { Keypair, Registry, Type } = alknet

describe('JavaScript handlers', () => {
  it('a throwing, rejecting or unencodable handler answers INTERNAL, is reported, and the node keeps serving', async () => {
    const reported: string[] = []
    const ops = addOps()
      .query('fail/throw', { input: Type.Object({}), output: Type.Null() }, () => {
        throw new Error('kaboom')
      })
      .query('fail/reject', { input: Type.Object({}), output: Type.Null() }, () => Promise.reject(new TypeError('nope')))
      .query('fail/bigint', { input: Type.Object({}), output: Type.Unknown() }, () => 10n)
    const node = await start(ops, { onHandlerError: (_e, op) => reported.push(op) })
    const peer = await dial(node)
    for (const op of ['fail/throw', 'fail/reject', 'fail/bigint']) {
      const err = await rejection(peer.call(op, {}))
      expect([op, err.code, err.message]).toEqual([op, 'INTERNAL', expect.not.stringContaining('kaboom')])
    }
    expect(reported).toEqual(['fail/throw', 'fail/reject', 'fail/bigint'])
    await expect(peer.call('math/add', { a: 2, b: 2 })).resolves.toBe(4)
  })

  it('an output that fails its schema answers INTERNAL', async () => {
    const ops = new Registry().query('math/half', { input: Type.Object({ n: Type.Integer() }), output: Type.Integer() }, ({ n }) => n / 2)
    const peer = await dial(await start(ops))
    await expect(peer.call('math/half', { n: 4 })).resolves.toBe(2)
    expect((await rejection(peer.call('math/half', { n: 3 }))).code).toBe('INTERNAL')
  })

  it('a subscription item that fails its schema ends the subscription with INTERNAL after the good ones', async () => {
    const ops = new Registry().subscription('feed/nums', { input: Type.Object({}), output: Type.Integer() }, async function* () {
      yield 1
      yield 2
      yield 'three' as unknown as number
    })
    const peer = await dial(await start(ops))
    const seen: number[] = []
    const failed = await rejection(
      (async () => {
        for await (const n of peer.subscribe<number>('feed/nums', {})) seen.push(n)
      })(),
    )
    expect(seen).toEqual([1, 2])
    expect(failed.code).toBe('INTERNAL')
  })

  it('a generator that throws mid-stream delivers its items, then the error', async () => {
    const ops = new Registry().subscription(
      'feed/broken',
      { input: Type.Object({}), output: Type.Integer(), errors: [{ code: 'FEED_BROKEN' }] },
      async function* () {
        yield 1
        throw new alknet.CallError('FEED_BROKEN', 'the feed broke')
      },
    )
    const peer = await dial(await start(ops))
    const seen: number[] = []
    const failed = await rejection(
      (async () => {
        for await (const n of peer.subscribe<number>('feed/broken', {})) seen.push(n)
      })(),
    )
    expect([seen, failed.code]).toEqual([[1], 'FEED_BROKEN'])
  })

  it('ctx.identity is the peer list entry of the caller key', async () => {
    const alice = Keypair.generate()
    const ops = new Registry().query('who/ami', { input: Type.Object({}), output: Type.Unknown() }, (_i, ctx) => ctx.identity)
    const node = await start(ops, { auth: { peers: [{ id: 'alice', fingerprints: [alice.fingerprint], scopes: ['a', 'b'] }] } })
    await expect((await dial(node, { key: alice })).call('who/ami', {})).resolves.toMatchObject({ id: 'alice', scopes: ['a', 'b'] })
    await expect((await dial(node)).call('who/ami', {})).resolves.toBeNull()
  })

  it('ctx.call composes with internal operations of the same node, as the same caller', async () => {
    const ops = addOps()
      .query('math/secret', { input: Type.Object({}), output: Type.Integer(), visibility: 'internal' }, () => 40)
      .query('math/answer', { input: Type.Object({}), output: Type.Integer() }, async (_i, ctx) => {
        const base = await ctx.call<number>('math/secret', {})
        return ctx.call<number>('math/add', { a: base, b: 2 })
      })
    const peer = await dial(await start(ops))
    await expect(peer.call('math/answer', {})).resolves.toBe(42)
    expect((await rejection(peer.call('math/secret', {}))).code).toBe('NOT_FOUND')
  })

  it('the node calls back an operation the connecting client offered, and subscribes to one', async () => {
    const server = new Registry().query('greet/me', { input: Type.Object({}), output: Type.String() }, async (_i, ctx) => {
      const name = await ctx.peer.call<string>('client/name', {})
      const letters: string[] = []
      for await (const l of ctx.peer.subscribe<string>('client/letters', { word: name })) letters.push(l)
      return `hello ${name} (${letters.join('-')})`
    })
    const client = new Registry()
      .query('client/name', { input: Type.Object({}), output: Type.String() }, () => 'ada')
      .subscription('client/letters', { input: Type.Object({ word: Type.String() }), output: Type.String() }, async function* ({ word }) {
        yield* word
      })
    const node = await start(server)
    const peer = await dial(node, { operations: client })
    await expect(peer.call('greet/me', {})).resolves.toBe('hello ada (a-d-a)')
  })

  it('a call back to a client that offered nothing is NOT_FOUND for the handler', async () => {
    const server = new Registry().query('greet/me', { input: Type.Object({}), output: Type.String() }, async (_i, ctx) => {
      const err = await rejection(ctx.peer.call('client/name', {}))
      return err.code
    })
    const peer = await dial(await start(server))
    await expect(peer.call('greet/me', {})).resolves.toBe('NOT_FOUND')
  })

  it('cancelling a request cancels the calls its handler made back to the caller', async () => {
    const calledBack = deferred()
    const childAborted = deferred()
    const server = new Registry().query('work/relay', { input: Type.Object({}), output: Type.Null() }, async (_i, ctx) => {
      await ctx.peer.call('client/wait', {})
      return null
    })
    const client = new Registry().query('client/wait', { input: Type.Object({}), output: Type.Null() }, (_i, ctx) => {
      calledBack.resolve()
      ctx.signal.addEventListener('abort', () => childAborted.resolve())
      return new Promise<null>(() => {})
    })
    const peer = await dial(await start(server), { operations: client })
    const controller = new AbortController()
    const outcome = rejection(peer.call('work/relay', {}, { signal: controller.signal }))
    await calledBack.promise
    controller.abort()
    expect((await outcome).code).toBe('CANCELLED')
    await childAborted.promise
  })

  it('a handler that rejects because its request was cancelled is not reported as failed', async () => {
    const reported: unknown[] = []
    const started = deferred()
    const rejected = deferred()
    const ops = new Registry().query('work/fetch', { input: Type.Object({}), output: Type.Null() }, (_i, ctx) => {
      started.resolve()
      // What fetch(url, { signal: ctx.signal }) does when the signal aborts.
      return new Promise<null>((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          reject(new DOMException('This operation was aborted', 'AbortError'))
          rejected.resolve()
        })
      })
    })
    const peer = await dial(await start(ops, { onHandlerError: (e) => reported.push(e) }))
    const controller = new AbortController()
    const outcome = rejection(peer.call('work/fetch', {}, { signal: controller.signal }))
    await started.promise
    controller.abort()
    expect((await outcome).code).toBe('CANCELLED')
    await rejected.promise
    // The rejection's handlers run in the microtasks before the next turn of the event loop.
    await new Promise(setImmediate)
    expect(reported).toEqual([])
  })
})
