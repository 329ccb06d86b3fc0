// Revocation reaches what is open, from the Node API: a reload that disables a peer ends its
// subscription (the iterator rejects with the typed error, the handler's signal aborts) while
// another peer goes on; Peer.publish publishes as the connection's token; Host.push is held to
// the credit by the native side.
import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { alknet } from './helpers'
import { deferred, dial, rejection, start } from './support'

const { Keypair, Registry, Type, CallError } = alknet

const tokenHash = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`

describe('revocation', () => {
  it('ends the subscription of a peer disabled by a reload with UNAUTHENTICATED', async () => {
    const aborted = deferred<boolean>()
    const ops = new Registry()
      .subscription('feed/watch', { input: Type.Object({}), output: Type.Integer() }, async function* (_input, ctx) {
        yield 1
        // Never ends by itself: only the request's signal stops it.
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }))
        aborted.resolve(ctx.signal.aborted)
      })
      .query('math/add', { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() }, ({ a, b }) => a + b)
    const [alice, bob] = [Keypair.generate(), Keypair.generate()]
    const peers = [
      { id: 'alice', fingerprints: [alice.fingerprint] },
      { id: 'bob', fingerprints: [bob.fingerprint] },
    ]
    const node = await start(ops, { auth: { peers } })
    const asAlice = await dial(node, { key: alice })
    const asBob = await dial(node, { key: bob })
    const sub = asAlice.subscribe<number>('feed/watch', {})
    expect((await sub.next()).value).toBe(1)

    node.reload({ auth: { peers: [{ ...peers[0], enabled: false }, peers[1]] } })

    const ended = await rejection(sub.next())
    expect(ended).toBeInstanceOf(CallError)
    expect(ended.code).toBe('UNAUTHENTICATED')
    expect(await aborted.promise).toBe(true)
    await expect(asBob.call('math/add', { a: 1, b: 2 })).resolves.toBe(3)
  })

  it('publishes as the token the peer connected with', async () => {
    const ops = new Registry()
    const node = await start(ops, {
      auth: {
        peers: [
          { id: 'writer', tokenHash: tokenHash('writer-token'), scopes: ['news:write'] },
          { id: 'reader', tokenHash: tokenHash('reader-token'), scopes: [] },
        ],
      },
      pubsub: { rules: [{ pattern: 'news/>', publish: ['news:write'] }] },
    })
    const writer = await dial(node, { token: 'writer-token' })
    const reader = await dial(node, { token: 'reader-token' })
    await expect(writer.publish('news/today', { headline: 'x' })).resolves.toBe(0)
    expect((await rejection(reader.publish('news/today', { headline: 'y' }))).code).toBe('FORBIDDEN')
  })
})

describe('Host.push', () => {
  it('refuses items beyond the credit granted', async () => {
    const require = createRequire(import.meta.url)
    const native: typeof import('../index.js') = require('../index.js')
    const refused = deferred<string>()
    const batched = deferred<string>()
    const host = new native.Host(
      () => {
        const events = JSON.parse(host.takeEvents()) as Array<[string, number]>
        for (const [event, requestId] of events) {
          if (event !== 'subscribe') continue
          // The initial credit is 128 items: 129 at once is one too many, pushed alone or
          // within a batch of answers.
          const items = JSON.stringify(Array.from({ length: 129 }, (_, i) => i))
          try {
            host.push(requestId, items)
            refused.resolve('accepted')
          } catch (e) {
            refused.resolve(String(e))
          }
          try {
            host.answerMany(`[[2,${requestId},${items}]]`)
            batched.resolve('accepted')
          } catch (e) {
            batched.resolve(String(e))
          }
          host.end(requestId)
        }
      },
      new native.CompletionQueue(() => {}),
    )
    const specs = JSON.stringify([{ name: 'feed/many', type: 'subscription', input_schema: {}, output_schema: {} }])
    const node = await native.serve(JSON.stringify({ listen: '127.0.0.1:0' }), specs, native.Keypair.generate(), host)
    try {
      const peer = await dial({ address: node.address, fingerprint: node.fingerprint })
      const items: unknown[] = []
      for await (const item of peer.subscribe('feed/many', {})) items.push(item)
      expect(await refused.promise).toMatch(/129 items pushed with a credit of 128/)
      expect(await batched.promise).toMatch(/129 items pushed with a credit of 128/)
      expect(items).toEqual([])
    } finally {
      await node.close()
    }
  })
})
