// Unary calls JS→JS: the batched completion path (outcomes of calls that finish together reach
// JavaScript as one array), handlers answered without a promise hop, and cancellation and
// deadlines through both.
import { describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { deferred, dial, gatedOps, rejection, start } from './support'

const { CallError, Registry, Type } = alknet

const N = Type.Object({ n: Type.Integer({ minimum: 0 }) })
const errors = [{ code: 'CONFLICT' }]

/** `echo/sync` answers at once, `echo/async` after a promise, `echo/thenable` with a non-promise thenable; odd `n` fails with `CONFLICT` (thrown, rejected, or through the thenable). */
function echoOps() {
  const fail = (n: number) => new CallError('CONFLICT', `odd ${n}`)
  return new Registry()
    .query('echo/sync', { input: N, output: N, errors }, ({ n }) => {
      if (n % 2 === 1) throw fail(n)
      return { n }
    })
    .query('echo/async', { input: N, output: N, errors }, async ({ n }) => {
      await new Promise(setImmediate)
      if (n % 2 === 1) throw fail(n)
      return { n }
    })
    .query('echo/thenable', { input: N, output: N, errors }, ({ n }) => {
      const thenable = {
        then(resolve: (v: { n: number }) => void, reject: (e: unknown) => void) {
          setImmediate(() => (n % 2 === 1 ? reject(fail(n)) : resolve({ n })))
        },
      }
      return thenable as unknown as Promise<{ n: number }>
    })
}

describe('unary calls', () => {
  for (const transport of ['quic', 'tcp'] as const) {
    it(`${transport}: 600 concurrent calls each settle with their own answer or error, whatever the handler returns`, async () => {
      const peer = await dial(await start(echoOps()), { transport })
      const calls: Promise<string>[] = []
      for (let n = 0; n < 600; n++) {
        const op = ['echo/sync', 'echo/async', 'echo/thenable'][n % 3]
        calls.push(
          peer.call<{ n: number }>(op, { n }).then(
            (out) => `${op} ${out.n}`,
            (e: InstanceType<typeof CallError>) => `${op} ${e.code} ${e.message}`,
          ),
        )
      }
      const outcomes = await Promise.all(calls)
      outcomes.forEach((outcome, n) => {
        const op = ['echo/sync', 'echo/async', 'echo/thenable'][n % 3]
        expect(outcome).toBe(n % 2 === 1 ? `${op} CONFLICT odd ${n}` : `${op} ${n}`)
      })
    })
  }

  it('a thenable that calls back twice settles its call once, and one whose then throws fails only its call', async () => {
    const ops = echoOps()
      .query('echo/twice', { input: N, output: N, errors }, ({ n }) => {
        const thenable = {
          then(resolve: (v: { n: number }) => void, reject: (e: unknown) => void) {
            resolve({ n })
            reject(new CallError('CONFLICT', 'too late'))
            resolve({ n: n + 1 })
          },
        }
        return thenable as unknown as Promise<{ n: number }>
      })
      .query('echo/throws', { input: N, output: N }, () => {
        const thenable = {
          then() {
            throw new Error('then threw')
          },
        }
        return thenable as unknown as Promise<{ n: number }>
      })
    const peer = await dial(await start(ops))
    await expect(peer.call('echo/twice', { n: 6 })).resolves.toEqual({ n: 6 })
    expect((await rejection(peer.call('echo/throws', { n: 1 }))).code).toBe('INTERNAL')
    // The connection goes on serving, each call with its own answer.
    const more = await Promise.all([8, 10, 12].map((n) => peer.call('echo/twice', { n })))
    expect(more).toEqual([{ n: 8 }, { n: 10 }, { n: 12 }])
  })

  it('an input JSON cannot hold rejects that call only', async () => {
    const peer = await dial(await start(echoOps()))
    await expect(peer.call('echo/sync', { n: 1n })).rejects.toThrow(/BigInt/)
    await expect(peer.call('echo/sync', { n: 2 })).resolves.toEqual({ n: 2 })
  })

  it('aborting a call mid-flight rejects it with CANCELLED and aborts the handler; other calls are unaffected', async () => {
    const started = deferred()
    const aborted = deferred<unknown>()
    const ops = echoOps().query('work/hang', { input: Type.Object({}), output: Type.Null() }, (_i, ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason))
      started.resolve()
      return new Promise<null>(() => {})
    })
    const peer = await dial(await start(ops))
    const controller = new AbortController()
    const outcome = rejection(peer.call('work/hang', {}, { signal: controller.signal }))
    await started.promise
    const other = peer.call('echo/async', { n: 4 })
    controller.abort()
    expect((await outcome).code).toBe('CANCELLED')
    expect(await aborted.promise).toMatchObject({ code: 'CANCELLED' })
    await expect(other).resolves.toEqual({ n: 4 })
  })

  it('a deadline (timeoutMs) fails the call with TIMEOUT and aborts the handler', async () => {
    const aborted = deferred()
    const ops = new Registry().query('work/hang', { input: Type.Object({}), output: Type.Null() }, (_i, ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve())
      return new Promise<null>(() => {})
    })
    const peer = await dial(await start(ops))
    expect((await rejection(peer.call('work/hang', {}, { timeoutMs: 50 }))).code).toBe('TIMEOUT')
    await aborted.promise
  })

  it('a signal aborted before the call rejects at once without reaching the node', async () => {
    let ran = false
    const ops = new Registry().query('work/mark', { input: Type.Object({}), output: Type.Null() }, () => {
      ran = true
      return null
    })
    const peer = await dial(await start(ops))
    const controller = new AbortController()
    controller.abort()
    expect((await rejection(peer.call('work/mark', {}, { signal: controller.signal }))).code).toBe('CANCELLED')
    await expect(peer.call('services/list', {})).resolves.toBeTruthy()
    expect(ran).toBe(false)
  })

  it('cancelling a subscription leaves the calls in flight on the same peer alone', async () => {
    const started = deferred()
    const release = deferred()
    const stopped = deferred<boolean>()
    const ops = new Registry()
      .query('work/gated', { input: Type.Object({}), output: Type.String() }, async () => {
        started.resolve()
        await release.promise
        return 'finished'
      })
      .subscription('feed/forever', { input: Type.Object({}), output: Type.Integer() }, async function* (_i, ctx) {
        try {
          for (let n = 0; !ctx.signal.aborted; n++) {
            yield n
            await new Promise(setImmediate)
          }
        } finally {
          stopped.resolve(ctx.signal.aborted)
        }
      })
    const peer = await dial(await start(ops))
    const call = peer.call('work/gated', {})
    await started.promise
    const items = peer.subscribe<number>('feed/forever', {})
    expect((await items.next()).value).toBe(0)
    await items.return()
    expect(await stopped.promise).toBe(true)
    release.resolve()
    await expect(call).resolves.toBe('finished')
  })

  it('closing the peer fails the calls it has in flight', async () => {
    const { ops, started } = gatedOps()
    const peer = await dial(await start(ops))
    const call = rejection(peer.call('work/gated', {}))
    await started
    await peer.close()
    expect(['UNAVAILABLE', 'CANCELLED']).toContain((await call).code)
  })
})
