// Node and Rust nodes talk only through the wire contract: the Rust side is a separate process
// (crates/alknet-node/examples/interop.rs) sharing nothing with the binding but the protocol.
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { alknet } from './helpers'
import { explain, repoRoot, run } from './processes'

const { serve, connect, Keypair, Registry, Type, CallError } = alknet

const targetDir = path.resolve(repoRoot, process.env.CARGO_TARGET_DIR ?? 'target')
const interop = path.join(targetDir, 'debug', 'examples', 'interop')

// scripts/test-node.sh builds it first; building again here is a no-op then, and keeps a direct
// `npx vitest run` from testing a binary older than the Rust sources.
beforeAll(async () => {
  const build = await run('cargo', ['build', '-q', '-p', 'alknet-node', '--example', 'interop'], { cwd: repoRoot })
  expect(build.code, explain(build)).toBe(0)
}, 600_000)

type Closable = { close(): Promise<void> }
const open: Closable[] = []
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close()
})

/** Starts `interop serve`; closing it closes the child's stdin and expects a clean exit. */
async function rustNode(): Promise<{ address: string; fingerprint: string }> {
  const child = spawn(interop, ['serve'], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = once(child, 'exit')
  const lines = createInterface({ input: child.stdout })
  const [first] = (await Promise.race([once(lines, 'line'), exited.then(([code]) => Promise.reject(new Error(`interop serve exited with ${String(code)} before listening`)))])) as [string]
  const node = JSON.parse(first) as { address: string; fingerprint: string }
  open.push({
    close: async () => {
      child.stdin.end()
      const [code] = (await exited) as [number | null]
      expect(code).toBe(0)
    },
  })
  return node
}

/** Runs `interop call|subscribe` against `node`; returns the exit code and the JSON lines printed. */
async function rustClient(mode: 'call' | 'subscribe', node: { address: string; fingerprint: string }, operation: string, input: unknown) {
  const result = await run(interop, [mode, node.address, node.fingerprint, operation, JSON.stringify(input)])
  const lines = result.stdout.split('\n').filter((l) => l !== '')
  return { code: result.code, output: lines.map((l) => JSON.parse(l) as unknown), explained: explain(result) }
}

async function jsNode(ops: InstanceType<typeof Registry>) {
  const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops, drainTimeoutMs: 1000, onHandlerError: () => {} })
  open.push(node)
  return node
}

describe('interop through the wire contract', () => {
  it('a JS peer calls a Rust operation and consumes a Rust subscription, over QUIC and TCP', async () => {
    const node = await rustNode()
    for (const transport of ['quic', 'tcp'] as const) {
      const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate(), transport })
      open.push(peer)
      await expect(peer.call('math/mul', { a: 6, b: 7 })).resolves.toBe(42)
      await expect(peer.call('rust/echo', { nested: [1, 'two', null], ok: true })).resolves.toEqual({ nested: [1, 'two', null], ok: true })
      const counted: number[] = []
      for await (const n of peer.subscribe<number>('rust/count', { n: 5 })) counted.push(n)
      expect(counted).toEqual([0, 1, 2, 3, 4])
    }
  })

  it("a JS peer gets a Rust operation's declared error code and the Rust schema's INVALID_INPUT", async () => {
    const node = await rustNode()
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate() })
    open.push(peer)
    const refused = (await peer.call('rust/refuse', { why: 'test' }).catch((e: unknown) => e)) as InstanceType<typeof CallError>
    expect(refused).toBeInstanceOf(CallError)
    expect(refused).toMatchObject({ code: 'RUST_REFUSED', retryable: false, details: { input: { why: 'test' } } })
    const invalid = (await peer.call('math/mul', { a: 'six', b: 7 }).catch((e: unknown) => e)) as InstanceType<typeof CallError>
    expect(invalid.code).toBe('INVALID_INPUT')
  })

  it('a Rust peer calls a JS handler and subscribes to a JS subscription', async () => {
    const node = await jsNode(
      new Registry()
        .query('js/greet', { input: Type.Object({ name: Type.String() }), output: Type.String() }, ({ name }) => `hello ${name}, from JS`)
        .subscription('js/letters', { input: Type.Object({ word: Type.String() }), output: Type.String() }, async function* ({ word }) {
          yield* word
        }),
    )
    const greeted = await rustClient('call', node, 'js/greet', { name: 'rust' })
    expect(greeted.code, greeted.explained).toBe(0)
    expect(greeted.output).toEqual(['hello rust, from JS'])
    const letters = await rustClient('subscribe', node, 'js/letters', { word: 'abc' })
    expect(letters.code, letters.explained).toBe(0)
    expect(letters.output).toEqual(['a', 'b', 'c'])
  })

  it("a Rust peer gets a JS handler's declared CallError code with its details", async () => {
    const node = await jsNode(
      new Registry().mutation(
        'todo/delete',
        { input: Type.Object({ id: Type.Integer() }), output: Type.Null(), errors: [{ code: 'ITEM_NOT_OWNED' }] },
        ({ id }) => {
          throw new CallError('ITEM_NOT_OWNED', `todo ${id} belongs to bob`, { details: { owner: 'bob' } })
        },
      ),
    )
    const result = await rustClient('call', node, 'todo/delete', { id: 7 })
    expect(result.code, result.explained).toBe(1)
    expect(result.output).toEqual([{ code: 'ITEM_NOT_OWNED', message: 'todo 7 belongs to bob', retryable: false, details: { owner: 'bob' } }])
  })
})
