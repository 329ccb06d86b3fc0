// Every error code of the call contract reaches a JavaScript caller as a typed CallError.
import { describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { addOps, deferred, dial, rejection, start } from './support'

const { Keypair, Registry, Type, CallError } = alknet

const scoped = () =>
  new Registry().mutation(
    'todo/create',
    { input: Type.Object({}), output: Type.Null(), access: { requiredScopes: ['todo:write'] } },
    () => null,
  )

/** A query whose handler waits until the test lets it go; `started` resolves when it runs. */
function gated() {
  const started = deferred()
  const release = deferred()
  const ops = new Registry().query('work/gated', { input: Type.Object({}), output: Type.String() }, async () => {
    started.resolve()
    await release.promise
    return 'done'
  })
  return { ops, started: started.promise, release: () => release.resolve() }
}

describe('contract errors as CallError', () => {
  it('NOT_FOUND for an operation the node does not have', async () => {
    const peer = await dial(await start(addOps()))
    const err = await rejection(peer.call('math/sub', { a: 1, b: 2 }))
    expect(err).toBeInstanceOf(CallError)
    expect([err.code, err.retryable]).toEqual(['NOT_FOUND', false])
    expect(err.message).toContain('math/sub')
  })

  it('UNAUTHENTICATED for a caller without identity on a scoped operation', async () => {
    const peer = await dial(await start(scoped()))
    const err = await rejection(peer.call('todo/create', {}))
    expect([err.code, err.retryable]).toEqual(['UNAUTHENTICATED', false])
  })

  it('FORBIDDEN for a known caller without the scope', async () => {
    const bob = Keypair.generate()
    const node = await start(scoped(), { auth: { peers: [{ id: 'bob', fingerprints: [bob.fingerprint], scopes: ['todo:read'] }] } })
    const peer = await dial(node, { key: bob })
    const err = await rejection(peer.call('todo/create', {}))
    expect([err.code, err.retryable]).toEqual(['FORBIDDEN', false])
  })

  it('INVALID_INPUT with each schema error path in details', async () => {
    const peer = await dial(await start(addOps()))
    const err = await rejection(peer.call('math/add', { a: 'one' }))
    expect(err.code).toBe('INVALID_INPUT')
    expect(err.details).toMatchObject({ errors: expect.arrayContaining([expect.objectContaining({ path: '/a' })]) })
  })

  it('INVALID_OPERATION_TYPE when a handler calls a subscription', async () => {
    const ops = new Registry()
      .subscription('feed/items', { input: Type.Object({}), output: Type.Integer() }, async function* () {
        yield 1
      })
      .query('feed/first', { input: Type.Object({}), output: Type.Integer() }, (_i, ctx) => ctx.call<number>('feed/items', {}))
    const peer = await dial(await start(ops))
    const err = await rejection(peer.call('feed/first', {}))
    expect([err.code, err.retryable]).toEqual(['INVALID_OPERATION_TYPE', false])
  })

  it('TIMEOUT when the handler outlives the caller deadline, whose ctx.signal then aborts', async () => {
    const aborted = deferred<unknown>()
    const ops = new Registry().query('work/hang', { input: Type.Object({}), output: Type.String() }, (_i, ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason))
      return new Promise<string>(() => {})
    })
    const peer = await dial(await start(ops))
    const err = await rejection(peer.call('work/hang', {}, { timeoutMs: 100 }))
    expect([err.code, err.retryable]).toEqual(['TIMEOUT', true])
    expect(await aborted.promise).toBeInstanceOf(CallError)
  })

  it('TIMEOUT after the node default deadline when the caller asks for none', async () => {
    const ops = new Registry().query('work/hang', { input: Type.Object({}), output: Type.String() }, () => new Promise<string>(() => {}))
    const peer = await dial(await start(ops, { limits: { defaultTimeoutMs: 100 } }))
    expect((await rejection(peer.call('work/hang', {}))).code).toBe('TIMEOUT')
  })

  it('CANCELLED when the caller aborts its signal', async () => {
    const { ops, started, release } = gated()
    const peer = await dial(await start(ops))
    const controller = new AbortController()
    const call = peer.call('work/gated', {}, { signal: controller.signal })
    await started
    controller.abort()
    const err = await rejection(call)
    expect([err.code, err.retryable]).toEqual(['CANCELLED', false])
    release()
  })

  it('CANCELLED at once for a signal that is already aborted', async () => {
    const peer = await dial(await start(addOps()))
    const err = await rejection(peer.call('math/add', { a: 1, b: 1 }, { signal: AbortSignal.abort() }))
    expect(err.code).toBe('CANCELLED')
  })

  it('OVERLOADED beyond the concurrent request limit, and served again once below it', async () => {
    const { ops, started, release } = gated()
    const node = await start(ops.query('math/one', { input: Type.Object({}), output: Type.Integer() }, () => 1), {
      limits: { maxConcurrentRequests: 1 },
    })
    const peer = await dial(node)
    const first = peer.call('work/gated', {})
    await started
    const err = await rejection(peer.call('math/one', {}))
    expect([err.code, err.retryable]).toEqual(['OVERLOADED', true])
    release()
    await expect(first).resolves.toBe('done')
    await expect(peer.call('math/one', {})).resolves.toBe(1)
  })

  it('UNAVAILABLE for calls in flight when the node cuts off after its drain timeout', async () => {
    const { ops, started, release } = gated()
    const node = await start(ops, { drainTimeoutMs: 50 })
    const peer = await dial(node)
    const outcome = rejection(peer.call('work/gated', {}))
    await started
    await node.close()
    const err = await outcome
    expect([err.code, err.retryable]).toEqual(['UNAVAILABLE', true])
    release()
  })

  it('UNAVAILABLE for a call on a closed peer', async () => {
    const peer = await dial(await start(addOps()))
    await peer.close()
    const err = await rejection(peer.call('math/add', { a: 1, b: 1 }))
    expect(err.code).toBe('UNAVAILABLE')
  })

  it('INTERNAL for an undeclared code, while a declared one passes with its details', async () => {
    const ops = new Registry()
      .mutation('todo/delete', { input: Type.Object({}), output: Type.Null(), errors: [{ code: 'ITEM_NOT_OWNED' }] }, () => {
        throw new CallError('ITEM_NOT_OWNED', 'someone else owns it', { details: { owner: 'bob' } })
      })
      .mutation('todo/purge', { input: Type.Object({}), output: Type.Null() }, () => {
        throw new CallError('SECRET_REASON', 'internal detail')
      })
    const peer = await dial(await start(ops))
    const declared = await rejection(peer.call('todo/delete', {}))
    expect([declared.code, declared.message, declared.details]).toEqual(['ITEM_NOT_OWNED', 'someone else owns it', { owner: 'bob' }])
    const undeclared = await rejection(peer.call('todo/purge', {}))
    expect(undeclared.code).toBe('INTERNAL')
    expect(undeclared.message).not.toContain('internal detail')
  })
})
