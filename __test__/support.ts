import { afterEach } from 'vitest'
import { alknet } from './helpers'

const { serve, connect, Keypair, Registry, Type } = alknet
type Node = Awaited<ReturnType<typeof serve>>
type ServeOptions = Parameters<typeof serve>[0]
type ConnectOptions = Parameters<typeof connect>[0]

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close()
})

/** A node on a free loopback port, closed after the test. */
export async function start(operations: InstanceType<typeof Registry>, extra: Partial<ServeOptions> = {}): Promise<Node> {
  const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations, drainTimeoutMs: 1000, onHandlerError: () => {}, ...extra })
  open.push(node)
  return node
}

/** A peer of `node`, closed after the test. */
export async function dial(node: { address: string; fingerprint: string }, extra: Partial<ConnectOptions> = {}) {
  const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate(), ...extra })
  open.push(peer)
  return peer
}

/** A promise with its resolve function, for a test to wait on what a handler does. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

/** What `promise` rejected with (fails the test if it resolved). */
export async function rejection(promise: Promise<unknown>): Promise<InstanceType<typeof alknet.CallError>> {
  const outcome = await promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  )
  if (!('error' in outcome)) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.value)}`)
  if (!(outcome.error instanceof alknet.CallError)) throw outcome.error
  return outcome.error
}

export const addOps = () =>
  new Registry().query(
    'math/add',
    { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() },
    ({ a, b }) => a + b,
  )

/** `work/gated`: a query that reports when it started and answers `'finished'` once released. */
export function gatedOps() {
  const started = deferred()
  const release = deferred()
  const ops = new Registry().query('work/gated', { input: Type.Object({}), output: Type.String() }, async () => {
    started.resolve()
    await release.promise
    return 'finished'
  })
  return { ops, started: started.promise, release: () => release.resolve() }
}

/** `math/add` and `feed/forever`, which yields 0, 1, 2, … as it is pulled; `stopped` resolves with whether it saw the cancel. */
export function foreverOps() {
  const stopped = deferred<boolean>()
  const ops = addOps().subscription('feed/forever', { input: Type.Object({}), output: Type.Integer() }, async function* (_i, ctx) {
    try {
      for (let n = 0; !ctx.signal.aborted; n++) {
        yield n
        await new Promise((resolve) => setImmediate(resolve))
      }
    } finally {
      stopped.resolve(ctx.signal.aborted)
    }
  })
  return { ops, stopped: stopped.promise }
}

/** Reads `count` items of `items` (fewer if it ends first). */
export async function take<T>(items: AsyncIterator<T>, count: number): Promise<T[]> {
  const got: T[] = []
  while (got.length < count) {
    const next = await items.next()
    if (next.done) break
    got.push(next.value)
  }
  return got
}
