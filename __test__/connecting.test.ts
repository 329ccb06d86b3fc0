// Connecting like a production client: carriers raced (a path that drops UDP still connects),
// typed errors from real failures, and a peer that reconnects and resubscribes when its node is
// killed and restarted (a real process, the same key and port).
import { afterEach, describe, expect, it } from 'vitest'
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdtempSync } from 'node:fs'
import { createSocket, type Socket } from 'node:dgram'
import { createServer, connect as tcpConnect, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alknet } from './helpers'
import { addOps, dial, gatedOps, start } from './support'

const { connect, serve, Keypair, CallError, ConnectError } = alknet
type ConnectErr = InstanceType<typeof ConnectError>

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function connectError(promise: Promise<unknown>): Promise<ConnectErr> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!(error instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(error)}`)
  return error
}

/** A UDP socket on `port` that swallows every datagram: QUIC gets no answer and no ICMP. */
async function udpBlackHole(port: number): Promise<Socket> {
  const socket = createSocket('udp4')
  socket.bind(port, '127.0.0.1')
  await once(socket, 'listening')
  cleanups.push(() => new Promise<void>((resolve) => socket.close(() => resolve())))
  return socket
}

async function listening(server: Server): Promise<number> {
  const sockets = new Set<import('node:net').Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  cleanups.push(() => {
    // close() waits for open connections: end them first.
    for (const socket of sockets) socket.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** A loopback port nothing listens on (it was bound, then released). */
async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** A TCP port forwarded to `target`, counting the connections it carried. */
async function tcpOnlyPath(target: string): Promise<{ port: number; carried: () => number }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))]
  let carried = 0
  const server = createServer((inbound) => {
    carried++
    const outbound = tcpConnect(port, host)
    for (const s of [inbound, outbound]) s.on('error', () => {})
    inbound.on('close', () => outbound.destroy())
    outbound.on('close', () => inbound.destroy())
    inbound.pipe(outbound).pipe(inbound)
  })
  const proxyPort = await listening(server)
  await udpBlackHole(proxyPort)
  return { port: proxyPort, carried: () => carried }
}

describe('carriers', () => {
  it('connects over TCP+TLS through a path that drops UDP, without being told', async () => {
    const node = await start(addOps())
    const path = await tcpOnlyPath(node.address)
    const peer = await dial({ address: `127.0.0.1:${path.port}`, fingerprint: node.fingerprint })
    await expect(peer.call('math/add', { a: 2, b: 3 })).resolves.toBe(5)
    expect(path.carried()).toBeGreaterThan(0)
  })

  it('uses QUIC when both carriers work', async () => {
    const node = await start(addOps())
    const peer = await dial(node)
    await expect(peer.call('math/add', { a: 1, b: 1 })).resolves.toBe(2)
  })
})

describe('connect errors carry stable codes', () => {
  it('UNREACHABLE: nothing listens at the address', async () => {
    const port = await freePort()
    const err = await connectError(connect({ address: `127.0.0.1:${port}`, fingerprint: Keypair.generate().fingerprint, key: Keypair.generate() }))
    expect(err.code).toBe('UNREACHABLE')
  })

  it('CONNECT_TIMEOUT: packets vanish and the TCP side never answers', async () => {
    const silent = createServer(() => {})
    const port = await listening(silent)
    await udpBlackHole(port)
    const err = await connectError(
      connect({ address: `127.0.0.1:${port}`, fingerprint: Keypair.generate().fingerprint, key: Keypair.generate(), connectTimeoutMs: 300 }),
    )
    expect(err.code).toBe('CONNECT_TIMEOUT')
  })

  it('PIN_MISMATCH names the pinned and the presented fingerprint', async () => {
    const node = await start(addOps())
    const pinned = Keypair.generate().fingerprint
    const err = await connectError(connect({ address: node.address, fingerprint: pinned, key: Keypair.generate() }))
    expect(err.code).toBe('PIN_MISMATCH')
    expect(err.details).toMatchObject({ expected: pinned, presented: node.fingerprint })
  })

  it('TLS_FAILED: a certificate pinned against a raw-key node', async () => {
    const node = await start(addOps())
    const err = await connectError(
      connect({ address: node.address, fingerprint: `SHA256:${'ab'.repeat(32)}`, key: Keypair.generate(), transport: 'quic' }),
    )
    expect(err.code).toBe('TLS_FAILED')
  })

  it('REFUSED: a node that is shutting down refuses new connections', async () => {
    const { ops, started, release } = gatedOps()
    const node = await start(ops, { drainTimeoutMs: 60_000 })
    const call = (await dial(node)).call('work/gated', {})
    await started
    const closing = node.close()
    const err = await connectError(connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate() }))
    expect(err.code).toBe('REFUSED')
    release()
    await expect(call).resolves.toBe('finished')
    await closing
  })

  it('INVALID_OPTION: a misspelt option, with the name it probably meant', async () => {
    const options = { adress: '127.0.0.1:1', fingerprint: Keypair.generate().fingerprint, key: Keypair.generate() }
    const err = await connectError(connect(options as unknown as Parameters<typeof connect>[0]))
    expect(err.code).toBe('INVALID_OPTION')
    expect(err.message).toMatch(/did you mean "address"/)
  })

  it('ADDRESS_IN_USE: a second node on a taken port', async () => {
    const node = await start(addOps())
    const err = await connectError(serve({ listen: node.address, key: Keypair.generate(), operations: addOps() }))
    expect(err.code).toBe('ADDRESS_IN_USE')
  })

  it('KEY_FILE: a key file others can read', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'alknet-key-')), 'node.key')
    await Keypair.loadOrCreate(path)
    chmodSync(path, 0o644)
    expect((await connectError(Keypair.loadOrCreate(path))).code).toBe('KEY_FILE')
  })
})

/** A node in a child process with the key in `keyPath`, listening on `listen`. */
async function childNode(keyPath: string, listen: string): Promise<{ child: ChildProcess; address: string; fingerprint: string }> {
  const child = fork(new URL('./fixtures/child-node.mjs', import.meta.url), [keyPath, listen], { stdio: 'inherit' })
  cleanups.push(() => {
    child.kill('SIGKILL')
  })
  const [ready] = (await once(child, 'message')) as [{ address: string; fingerprint: string }]
  return { child, ...ready }
}

async function publishFrom(child: ChildProcess, topic: string, data: unknown, atLeast: number): Promise<void> {
  child.send({ publish: { topic, data }, atLeast })
  await once(child, 'message')
}

async function kill(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

async function until(status: AsyncIterator<{ type: string }>, type: string): Promise<void> {
  for (;;) {
    const next = await status.next()
    if (next.done) throw new Error(`status ended before ${type}`)
    if (next.value.type === type) return
  }
}

describe('reconnect and resubscribe', () => {
  it('a topic iterator survives its node being killed and restarted on the same port and key', async () => {
    const keyPath = join(mkdtempSync(join(tmpdir(), 'alknet-restart-')), 'node.key')
    const first = await childNode(keyPath, '127.0.0.1:0')
    const peer = await connect({
      address: first.address,
      fingerprint: first.fingerprint,
      key: Keypair.generate(),
      transport: 'tcp',
      reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    })
    cleanups.push(() => peer.close())
    const status = peer.status()
    let gaps = 0
    const news = peer.topic<string>('news/>', { onResubscribe: () => gaps++ })
    await publishFrom(first.child, 'news/a', 'before', 1)
    expect((await news.next()).value).toEqual({ topic: 'news/a', data: 'before' })

    await kill(first.child)
    await until(status, 'disconnected')
    const second = await childNode(keyPath, first.address)
    expect(second.fingerprint).toBe(first.fingerprint)
    await until(status, 'connected')
    await publishFrom(second.child, 'news/b', 'after', 1)
    expect((await news.next()).value).toEqual({ topic: 'news/b', data: 'after' })
    expect(gaps).toBe(1)
    await news.return()
  })

  it('a call in flight when the node dies fails UNAVAILABLE, retryable', async () => {
    const keyPath = join(mkdtempSync(join(tmpdir(), 'alknet-restart-')), 'node.key')
    const node = await childNode(keyPath, '127.0.0.1:0')
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate(), transport: 'tcp', reconnect: true })
    cleanups.push(() => peer.close())
    const status = peer.status()
    // The outcome is taken at once, so the rejection is handled when it comes.
    const outcome = peer.call('test/hang', {}).then(
      () => undefined,
      (e: unknown) => e,
    )
    await kill(node.child)
    const err = await outcome
    expect(err).toBeInstanceOf(CallError)
    expect(err).toMatchObject({ code: 'UNAVAILABLE', retryable: true })
    await until(status, 'reconnecting')
  })

  // TCP sees a RST; QUIC learns it at its next packet (a keep-alive within 10 s), which the
  // restarted node, holding the same key, answers with a stateless reset the peer accepts.
  it('under load, a restart fails what was in flight with a typed error and nothing else; calls then go on', { timeout: 120_000 }, async () => {
    const keyPath = join(mkdtempSync(join(tmpdir(), 'alknet-restart-')), 'node.key')
    const first = await childNode(keyPath, '127.0.0.1:0')
    const peers = []
    for (const transport of ['quic', 'tcp'] as const) {
      const peer = await connect({ address: first.address, fingerprint: first.fingerprint, key: Keypair.generate(), transport, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } })
      cleanups.push(() => peer.close())
      peers.push(peer)
    }
    // 64 workers per peer keep calls in flight: each outcome is the echo or a typed UNAVAILABLE.
    let stop = false
    let answered = 0
    const failures: unknown[] = []
    const workers = peers.flatMap((peer) =>
      Array.from({ length: 64 }, async (_, w) => {
        for (let n = w; !stop; n += 64) {
          try {
            expect(await peer.call('test/echo', { n })).toEqual({ n })
            answered++
          } catch (e) {
            failures.push(e)
            // Pacing while the peer reconnects, so the failures stay countable.
            await new Promise((r) => setTimeout(r, 5))
          }
        }
      }),
    )
    while (answered < 500) await new Promise((r) => setImmediate(r))
    await kill(first.child)
    await childNode(keyPath, first.address)
    // Calls go on after the restart, on both peers.
    const after = answered
    while (answered < after + 500) await new Promise((r) => setTimeout(r, 50))
    for (const peer of peers) await expect(peer.call('test/echo', { n: 7 }, { retry: true })).resolves.toEqual({ n: 7 })
    stop = true
    await Promise.all(workers)
    expect(failures.length).toBeGreaterThan(0)
    for (const e of failures) {
      expect(e).toBeInstanceOf(CallError)
      expect(e).toMatchObject({ code: 'UNAVAILABLE', retryable: true })
    }
  })

  it('status ends with closed when the peer is closed', async () => {
    const node = await start(addOps())
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate(), reconnect: true })
    const status = peer.status()
    await peer.close()
    await until(status, 'closed')
    expect((await status.next()).done).toBe(true)
  })
})
