// The node: keys, serving, TLS modes, options, reload, and a process that exits after close().
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alknet } from './helpers'
import { addOps, deferred, dial, rejection, start } from './support'

const { serve, Keypair, Registry, Type } = alknet

describe('@alkdev/alknet', () => {
  it('serves a TypeBox-typed query that a peer calls', async () => {
    const node = await start(addOps())
    expect(node.fingerprint).toMatch(/^ed25519:[0-9a-f]{64}$/)
    const peer = await dial(node)
    await expect(peer.call<number>('math/add', { a: 1, b: 2 })).resolves.toBe(3)
  })

  it('stops a subscription when the consumer breaks out, running the generator finally', async () => {
    const finished = deferred<boolean>()
    const ops = new Registry().subscription(
      'clock/ticks',
      { input: Type.Object({}), output: Type.Integer() },
      async function* (_input, ctx) {
        try {
          for (let n = 0; ; n++) {
            yield n
            // Wait for the subscriber to ask again (or to leave): never busy, never ends by itself.
            await new Promise<void>((resolve) => setImmediate(resolve))
          }
        } finally {
          finished.resolve(ctx.signal.aborted)
        }
      },
    )
    const node = await start(ops)
    const peer = await dial(node)
    const seen: number[] = []
    for await (const n of peer.subscribe<number>('clock/ticks', {})) {
      seen.push(n)
      if (seen.length === 3) break
    }
    expect(seen).toEqual([0, 1, 2])
    expect(await finished.promise).toBe(true)
    await expect(peer.call('services/list', {})).resolves.toBeTruthy()
  })

  it('Keypair.loadOrCreate writes a 0600 PEM once and loads the same key after', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'alknet-key-')), 'node.key')
    const created = await Keypair.loadOrCreate(path)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(readFileSync(path, 'utf8')).toContain('BEGIN PRIVATE KEY')
    expect((await Keypair.loadOrCreate(path)).fingerprint).toBe(created.fingerprint)
    expect(Keypair.generate().fingerprint).not.toBe(created.fingerprint)
  })

  it('Keypair.loadOrCreate refuses a key file others can read, saying what to do', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'alknet-key-')), 'node.key')
    await Keypair.loadOrCreate(path)
    chmodSync(path, 0o644)
    await expect(Keypair.loadOrCreate(path)).rejects.toThrow(/chmod 600/)
  })

  it('serves with a self-signed certificate whose SHA256 fingerprint callers pin', async () => {
    const node = await start(addOps(), { tls: 'self-signed' })
    expect(node.fingerprint).toMatch(/^SHA256:/)
    await expect((await dial(node)).call('math/add', { a: 1, b: 1 })).resolves.toBe(2)
  })

  it('rejects invalid options with the option named', async () => {
    const key = Keypair.generate()
    const operations = addOps()
    await expect(serve({ listen: 'nowhere', key, operations })).rejects.toThrow(/listen "nowhere"/)
    await expect(serve({ listen: '127.0.0.1:0', key, operations, limits: { maxConcurrentRequests: 0 } })).rejects.toThrow(/maxConcurrentRequests/)
    await expect(serve({ listen: '127.0.0.1:0', key, operations, tls: { cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem' } })).rejects.toThrow(/cert\.pem/)
    await expect(serve({ listen: '127.0.0.1:0', key, operations, auth: { peers: [{ id: 'x', fingerprints: ['bogus'] }] } })).rejects.toThrow(/bogus/)
  })

  it('a second node cannot take a port in use, and says so', async () => {
    const node = await start(addOps())
    await expect(serve({ listen: node.address, key: Keypair.generate(), operations: addOps() })).rejects.toThrow(/in use|bind/i)
  })

  it('applies a reload of the peer list to new connections', async () => {
    const alice = Keypair.generate()
    const ops = new Registry().mutation(
      'todo/create',
      { input: Type.Object({ title: Type.String() }), output: Type.Object({ by: Type.String() }), access: { requiredScopes: ['todo:write'] } },
      (_input, ctx) => ({ by: ctx.identity?.id ?? 'nobody' }),
    )
    const node = await start(ops, { auth: { peers: [{ id: 'alice', fingerprints: [alice.fingerprint], scopes: ['todo:write'] }] } })
    const before = await dial(node, { key: alice })
    await expect(before.call('todo/create', { title: 'x' })).resolves.toEqual({ by: 'alice' })

    expect(() => node.reload({ auth: { peers: [{ id: 'a', fingerprints: ['nonsense'] }] } })).toThrow(/nonsense|fingerprint/i)
    node.reload({ auth: { peers: [{ id: 'alice', fingerprints: [alice.fingerprint], scopes: ['todo:write'], enabled: false }] } })

    const after = await dial(node, { key: alice })
    expect((await rejection(after.call('todo/create', { title: 'x' }))).code).toBe('UNAUTHENTICATED')
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
