// Two nodes started with serve() share topics through a real nats-server (Debian package
// `nats-server`, installed here as root when missing; under CI=true a missing server fails).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { dial, start } from './support'

const { Registry } = alknet

function natsBinary(): string | undefined {
  const find = () => ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((p) => existsSync(p))
  if (find() === undefined && process.getuid?.() === 0) {
    spawnSync('apt-get', ['install', '-y', '-q', 'nats-server'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  }
  return find()
}

/** Starts nats-server on a free loopback port; resolves with its URL once it accepts clients. */
async function startNats(binary: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(binary, ['-a', '127.0.0.1', '-p', '-1'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let port: string | undefined
  for await (const line of createInterface({ input: child.stderr! })) {
    port ??= /Listening for client connections on [\d.]+:(\d+)/.exec(line)?.[1]
    if (line.includes('Server is ready')) break
  }
  child.stderr!.resume()
  if (port === undefined) throw new Error('nats-server did not say where it listens')
  return { url: `nats://127.0.0.1:${port}`, child }
}

const binary = natsBinary()
if (binary === undefined && process.env.CI === 'true') throw new Error('nats-server is needed (Debian package nats-server) and could not be installed')
if (binary === undefined) console.warn('SKIPPED nats.test.ts: nats-server is not installed (Debian package nats-server)')

describe.skipIf(binary === undefined)('pub/sub across nodes through NATS', () => {
  let nats: { url: string; child: ChildProcess }
  beforeAll(async () => {
    nats = await startNats(binary!)
  })
  afterAll(() => {
    nats.child.kill()
  })

  it('a message published on one node reaches a subscriber on another', async () => {
    const pubsub = { rules: [{ pattern: 'chat/>', anonymous: true }], backplane: { nats: { servers: [nats.url] } } }
    const a = await start(new Registry(), { pubsub })
    const b = await start(new Registry(), { pubsub })
    const alice = await dial(a)
    const bob = await dial(b)

    const messages = bob.topic<string>('chat/>')[Symbol.asyncIterator]()
    const first = messages.next()
    // Bob's subscription exists on node B once a local publish reaches it.
    while ((await b.publish('chat/probe', 'local')) === 0) await new Promise(setImmediate)
    expect((await first).value).toEqual({ topic: 'chat/probe', data: 'local' })
    await b.backplaneReady()

    // `delivered` counts node A's own subscribers: none.
    expect(await alice.publish('chat/general', 'hello from A')).toBe(0)
    expect((await messages.next()).value).toEqual({ topic: 'chat/general', data: 'hello from A' })
    expect(a.backplaneStatus()).toMatchObject({ connected: true, sent: 1, lost: 0 })
    expect(b.backplaneStatus()).toMatchObject({ connected: true, received: 1, rejected: 0 })
    await messages.return?.()
  })

  it('a bad backplane option is refused by name', async () => {
    const bad = (backplane: object) => start(new Registry(), { pubsub: { backplane } as never })
    await expect(bad({ nats: { servers: [] } })).rejects.toThrow(/pubsub\.backplane\.nats\.servers/)
    await expect(bad({ nats: { servers: [nats.url], subjectPrefx: 'x' } })).rejects.toThrow(/subjectPrefix/)
    await expect(bad({ kafka: {} })).rejects.toThrow(/pubsub\.backplane.*kafka/)
  })
})
