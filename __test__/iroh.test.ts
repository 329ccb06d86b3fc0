// iroh from the Node API: a node reachable by its key alone, through a relay on loopback (a real
// iroh-relay server in its own process: crates/alknet-endpoint/examples/relay.rs).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { alknet } from './helpers'
import { explain, repoRoot, run } from './processes'
import { addOps, dial, start } from './support'

const { connect, Keypair, Registry, Type } = alknet

const targetDir = path.resolve(repoRoot, process.env.CARGO_TARGET_DIR ?? 'target')
const relayBin = path.join(targetDir, 'debug', 'examples', 'relay')
let relayProcess: ChildProcess | undefined
let relay: { url: string; ca: string }

beforeAll(async () => {
  const build = await run('cargo', ['build', '-q', '-p', 'alknet-endpoint', '--features', 'relay', '--example', 'relay'], { cwd: repoRoot })
  expect(build.code, explain(build)).toBe(0)
  const child = spawn(relayBin, [], { stdio: ['pipe', 'pipe', 'inherit'] })
  relayProcess = child
  const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string]
  relay = JSON.parse(line) as { url: string; ca: string }
}, 600_000)

afterAll(async () => {
  if (!relayProcess) return
  const exited = once(relayProcess, 'exit')
  relayProcess.stdin?.end()
  await exited
})

const ops = () =>
  addOps()
    .subscription('feed/count', { input: Type.Object({ to: Type.Integer() }), output: Type.Integer() }, async function* ({ to }) {
      for (let n = 1; n <= to; n++) yield n
    })
    .query('who/ami', { input: Type.Object({}), output: Type.Unknown() }, (_i, ctx) => ctx.identity?.id ?? null)

describe('iroh', () => {
  it('a relay-only node is dialed by its ticket: calls, subscriptions and pub/sub work', async () => {
    const node = await start(ops(), {
      iroh: { relay: relay.url, relayCa: relay.ca, direct: false },
      pubsub: { rules: [{ pattern: 'chat/>', publish: null, subscribe: null, anonymous: true }] },
    })
    const ticket = node.irohTicket ?? ''
    expect(ticket).toMatch(new RegExp(`^iroh:${node.fingerprint.slice('ed25519:'.length)}\\?relay=`))
    expect(ticket).not.toContain('addr=')
    const peer = await dial(node, { address: undefined, fingerprint: undefined, iroh: ticket, relayCa: relay.ca })
    expect(peer.fingerprint).toBe(node.fingerprint)
    await expect(peer.call('math/add', { a: 40, b: 2 })).resolves.toBe(42)
    const counted: number[] = []
    for await (const n of peer.subscribe<number>('feed/count', { to: 5 })) counted.push(n)
    expect(counted).toEqual([1, 2, 3, 4, 5])
    const room = peer.topic<string>('chat/*')
    const first = room.next()
    let delivered = 0
    while (delivered === 0) delivered = await peer.publish('chat/lobby', 'over iroh')
    await expect(first).resolves.toEqual({ done: false, value: { topic: 'chat/lobby', data: 'over iroh' } })
    await room.return()
  })

  it('a bare node id plus the relay URL is enough', async () => {
    const node = await start(ops(), { iroh: { relay: relay.url, relayCa: relay.ca } })
    const nodeId = node.fingerprint.slice('ed25519:'.length)
    const peer = await dial(node, { address: undefined, fingerprint: undefined, iroh: nodeId, relay: relay.url, relayCa: relay.ca })
    await expect(peer.call('math/add', { a: 1, b: 2 })).resolves.toBe(3)
  })

  it('one peer list entry authorises the same key over QUIC and over iroh', async () => {
    const alice = Keypair.generate()
    const node = await start(ops(), { iroh: true, auth: { peers: [{ id: 'alice', fingerprints: [alice.fingerprint] }] } })
    const overIroh = await dial(node, { address: undefined, fingerprint: undefined, iroh: node.irohTicket ?? '', key: alice })
    const overQuic = await dial(node, { key: alice })
    await expect(overIroh.call('who/ami', {})).resolves.toBe('alice')
    await expect(overQuic.call('who/ami', {})).resolves.toBe('alice')
  })

  it('a wrong node id fails closed with a clear error', async () => {
    const node = await start(new Registry(), { iroh: true })
    const ticket = node.irohTicket ?? ''
    const impostor = Keypair.generate().fingerprint.slice('ed25519:'.length)
    const wrong = ticket.replace(/^iroh:[0-9a-f]{64}/, `iroh:${impostor}`)
    await expect(connect({ iroh: wrong, key: Keypair.generate() })).rejects.toThrow(new RegExp(impostor.slice(0, 16)))
    await expect(connect({ iroh: 'iroh:nothex', key: Keypair.generate() })).rejects.toThrow(/invalid iroh ticket/)
    await expect(connect({ iroh: ticket, fingerprint: `ed25519:${impostor}`, key: Keypair.generate() })).rejects.toThrow(/pin/)
  })

  it('refuses an invalid relay setting, naming it', async () => {
    const err = await start(new Registry(), { iroh: { relay: 'ftp://nope' } }).catch((e: unknown) => e)
    expect(String(err)).toMatch(/ftp:\/\/nope/)
  })
})
