import { afterEach, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { alknet, eventually, sleep } from './helpers'

const { serve, connect, Keypair, Registry, Type, CallError } = alknet
type Closable = { close(): Promise<void> }
const open: Closable[] = []
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close()
})

async function start(ops: InstanceType<typeof Registry>, extra: Partial<Parameters<typeof serve>[0]> = {}) {
  const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops, drainTimeoutMs: 1000, onHandlerError: () => {}, ...extra })
  open.push(node)
  return node
}

async function dial(node: { address: string; fingerprint: string }, key = Keypair.generate()) {
  const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
  open.push(peer)
  return peer
}

const addOps = () =>
  new Registry().query(
    'math/add',
    { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() },
    ({ a, b }) => a + b, // a and b are inferred as number from the schema
  )

describe('@alkdev/alknet', () => {
  it('serves a TypeBox-typed query that a peer calls', async () => {
    const node = await start(addOps())
    expect(node.fingerprint).toMatch(/^ed25519:[0-9a-f]{64}$/)
    const peer = await dial(node)
    await expect(peer.call<number>('math/add', { a: 1, b: 2 })).resolves.toBe(3)
  })

  it('answers INVALID_INPUT with the schema errors as details', async () => {
    const node = await start(addOps())
    const peer = await dial(node)
    const err = await peer.call('math/add', { a: 'one' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(CallError)
    const callError = err as InstanceType<typeof CallError>
    expect(callError.code).toBe('INVALID_INPUT')
    expect(callError.retryable).toBe(false)
    expect(callError.details).toMatchObject({ errors: expect.arrayContaining([expect.objectContaining({ path: '/a' })]) })
  })

  it('turns a throwing handler into INTERNAL and keeps serving', async () => {
    const reported: string[] = []
    const ops = addOps().query('boom/now', { input: Type.Object({}), output: Type.Null() }, () => {
      throw new Error('kaboom')
    })
    const node = await start(ops, { onHandlerError: (_e, op) => reported.push(op) })
    const peer = await dial(node)
    const err = (await peer.call('boom/now', {}).catch((e: unknown) => e)) as InstanceType<typeof CallError>
    expect(err).toBeInstanceOf(CallError)
    expect(err.code).toBe('INTERNAL')
    expect(reported).toEqual(['boom/now'])
    await expect(peer.call('math/add', { a: 2, b: 2 })).resolves.toBe(4)
  })

  it('passes declared CallErrors through to the caller', async () => {
    const ops = new Registry().mutation(
      'todo/delete',
      { input: Type.Object({ id: Type.Integer() }), output: Type.Null(), errors: [{ code: 'ITEM_NOT_OWNED' }] },
      () => {
        throw new CallError('ITEM_NOT_OWNED', 'someone else owns it', { details: { owner: 'bob' } })
      },
    )
    const node = await start(ops)
    const peer = await dial(node)
    const err = (await peer.call('todo/delete', { id: 1 }).catch((e: unknown) => e)) as InstanceType<typeof CallError>
    expect(err.code).toBe('ITEM_NOT_OWNED')
    expect(err.details).toEqual({ owner: 'bob' })
  })

  it('stops a subscription when the consumer breaks out, running the generator finally', async () => {
    let finished = false
    const ops = new Registry().subscription(
      'clock/ticks',
      { input: Type.Object({ everyMs: Type.Integer({ minimum: 1 }) }), output: Type.Integer() },
      async function* ({ everyMs }, ctx) {
        try {
          for (let n = 0; !ctx.signal.aborted; n++) {
            yield n
            await sleep(everyMs)
          }
        } finally {
          finished = true
        }
      },
    )
    const node = await start(ops)
    const peer = await dial(node)
    const seen: number[] = []
    for await (const n of peer.subscribe<number>('clock/ticks', { everyMs: 10 })) {
      seen.push(n)
      if (seen.length === 3) break
    }
    expect(seen).toEqual([0, 1, 2])
    await eventually(() => finished)
    await expect(peer.call('services/list', {})).resolves.toBeTruthy()
  })

  it('cancels a slow call through an AbortSignal, aborting the handler ctx.signal', async () => {
    let aborted = false
    const ops = new Registry().query('work/slow', { input: Type.Object({}), output: Type.String() }, (_i, ctx) =>
      new Promise<string>((resolve) => {
        const timer = setTimeout(() => resolve('done'), 10_000)
        ctx.signal.addEventListener('abort', () => {
          aborted = true
          clearTimeout(timer)
          resolve('aborted')
        })
      }),
    )
    const node = await start(ops)
    const peer = await dial(node)
    const controller = new AbortController()
    const started = Date.now()
    const call = peer.call('work/slow', {}, { signal: controller.signal })
    setTimeout(() => controller.abort(), 200)
    const err = (await call.catch((e: unknown) => e)) as InstanceType<typeof CallError>
    expect(err.code).toBe('CANCELLED')
    expect(Date.now() - started).toBeLessThan(5000)
    await eventually(() => aborted)
  })

  it('applies a reload of the peer list to new connections', async () => {
    const alice = Keypair.generate()
    const ops = new Registry().mutation(
      'todo/create',
      { input: Type.Object({ title: Type.String() }), output: Type.Object({ by: Type.String() }), access: { requiredScopes: ['todo:write'] } },
      (_input, ctx) => ({ by: ctx.identity?.id ?? 'nobody' }),
    )
    const node = await start(ops, { auth: { peers: [{ id: 'alice', fingerprints: [alice.fingerprint], scopes: ['todo:write'] }] } })
    const before = await dial(node, alice)
    await expect(before.call('todo/create', { title: 'x' })).resolves.toEqual({ by: 'alice' })

    expect(() => node.reload({ auth: { peers: [{ id: 'a', fingerprints: ['nonsense'] }] } })).toThrow(/nonsense|fingerprint/i)
    node.reload({ auth: { peers: [{ id: 'alice', fingerprints: [alice.fingerprint], scopes: ['todo:write'], enabled: false }] } })

    const after = await dial(node, alice)
    const err = (await after.call('todo/create', { title: 'x' }).catch((e: unknown) => e)) as InstanceType<typeof CallError>
    expect(err.code).toBe('UNAUTHENTICATED')
  })

  it('delivers publications to topic subscribers', async () => {
    const node = await start(new Registry(), { pubsub: { rules: [{ pattern: 'chat/>', publish: null, subscribe: null, anonymous: true }] } })
    const peer = await dial(node)
    const messages = peer.topic<{ text: string }>('chat/*')
    const first = messages.next()
    let delivered = 0
    for (let i = 0; i < 100 && delivered === 0; i++) {
      delivered = await node.publish('chat/room1', { text: 'hi' })
      if (delivered === 0) await sleep(20)
    }
    expect(delivered).toBe(1)
    await expect(first).resolves.toEqual({ done: false, value: { topic: 'chat/room1', data: { text: 'hi' } } })
    await messages.return?.()
  })

  it('lets the process exit by itself once everything is closed', async () => {
    const script = `
      const { serve, connect, Keypair, Registry, Type } = require(${JSON.stringify(fileURLToPath(new URL('../dist/index.js', import.meta.url)))})
      ;(async () => {
        const ops = new Registry().query('math/add', { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() }, ({ a, b }) => a + b)
        const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops })
        const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate() })
        const sub = peer.subscribe('pubsub/subscribe', { topic: 'x/y' })
        console.log(await peer.call('math/add', { a: 20, b: 22 }))
        await sub.return()
        await peer.close()
        await node.close()
      })()
    `
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error('the process did not exit by itself within 15 s of close()'))
      }, 15_000)
      child.on('exit', (c) => {
        clearTimeout(timer)
        resolve(c)
      })
    })
    expect(code).toBe(0)
    expect(out.trim()).toBe('42')
  })
})
