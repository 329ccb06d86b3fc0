// Tunnels from Node.js: peer.socks5() and peer.forward() start local listeners whose connections
// leave from the node (over alknet/ssh or the native alknet/tunnel), fetched with real HTTP.
import { describe, expect, it } from 'vitest'
import { createServer, request, type Server } from 'node:http'
import { connect as tcpConnect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alknet } from './helpers'
import { addOps, start } from './support'

const { connect, Keypair } = alknet

/** A loopback HTTP server answering `hello <tag>`, closed when the test is done. */
async function httpServer(tag: string): Promise<{ port: number; server: Server }> {
  const server = createServer((_req, res) => res.end(`hello ${tag}`))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as AddressInfo).port, server }
}

/** GET / through a local forward's port, or over the Unix socket at a path. */
function get(at: number | string): Promise<string> {
  const target = typeof at === 'number' ? { host: '127.0.0.1', port: at } : { socketPath: at }
  return new Promise((resolve, reject) => {
    request({ ...target, path: '/' }, (res) => {
      let body = ''
      res.on('data', (chunk: Buffer) => (body += chunk.toString()))
      res.on('end', () => resolve(body))
    })
      .on('error', reject)
      .end()
  })
}

/** A SOCKS5 CONNECT to `host:port` by name, then GET /; returns the body, or the SOCKS5 reply code on failure. */
function socksGet(proxy: string, host: string, port: number): Promise<string> {
  const [proxyHost, proxyPort] = [proxy.slice(0, proxy.lastIndexOf(':')), Number(proxy.slice(proxy.lastIndexOf(':') + 1))]
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(proxyPort, proxyHost)
    let stage = 0
    let data = Buffer.alloc(0)
    socket.on('error', reject)
    socket.on('connect', () => socket.write(Buffer.from([5, 1, 0])))
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk])
      if (stage === 0 && data.length >= 2) {
        data = data.subarray(2)
        stage = 1
        const name = Buffer.from(host)
        const portBytes = Buffer.from([port >> 8, port & 0xff])
        socket.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, portBytes]))
      }
      if (stage === 1 && data.length >= 10) {
        if (data[1] !== 0) {
          resolve(`socks reply ${data[1]}`)
          socket.destroy()
          return
        }
        data = data.subarray(10)
        stage = 2
        socket.write('GET / HTTP/1.0\r\nHost: x\r\n\r\n')
      }
    })
    socket.on('end', () => {
      const text = data.toString()
      resolve(text.slice(text.indexOf('\r\n\r\n') + 4))
    })
  })
}

const loopback = { rules: [{ hosts: ['127.0.0.0/8', '::1'], action: 'allow' as const }] }

describe('tunnels', () => {
  it.each(['ssh', 'tunnel'] as const)('peer.socks5() over %s reaches a local HTTP server by name, and closes', async (via) => {
    const http = await httpServer(via)
    const key = Keypair.generate()
    const node = await start(addOps(), {
      services: { ssh: true, tunnel: true },
      auth: { peers: [{ id: 'alice', fingerprints: [key.fingerprint] }] },
      forwarding: loopback,
    })
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
    try {
      const socks = await peer.socks5({ listen: '127.0.0.1:0', via })
      expect(await socksGet(socks.address, 'localhost', http.port)).toBe(`hello ${via}`)
      await socks.close()
      await expect(socksGet(socks.address, 'localhost', http.port)).rejects.toThrow(/ECONNREFUSED/)
    } finally {
      await peer.close()
      http.server.close()
    }
  })

  it('peer.forward() carries a local port to a destination the node reaches', async () => {
    const http = await httpServer('forward')
    const key = Keypair.generate()
    const node = await start(addOps(), {
      services: { ssh: true },
      auth: { peers: [{ id: 'alice', fingerprints: [key.fingerprint] }] },
      forwarding: loopback,
    })
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
    try {
      const forward = await peer.forward({ listen: '127.0.0.1:0', host: '127.0.0.1', port: http.port })
      const port = Number(forward.address.split(':')[1])
      expect(await get(port)).toBe('hello forward')
      await forward.close()
    } finally {
      await peer.close()
      http.server.close()
    }
  })

  it('peer.forward({ socket }) reaches a Unix socket the node policy names, and no other', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'alknet-sock-'))
    const allowed = createServer((_req, res) => res.end('hello unix'))
    const other = createServer((_req, res) => res.end('hello other'))
    await new Promise<void>((resolve) => allowed.listen(join(dir, 'app.sock'), resolve))
    await new Promise<void>((resolve) => other.listen(join(dir, 'other.sock'), resolve))
    const key = Keypair.generate()
    const node = await start(addOps(), {
      services: { ssh: true },
      auth: { peers: [{ id: 'alice', fingerprints: [key.fingerprint] }] },
      forwarding: { rules: [{ sockets: [join(dir, 'app.sock')], action: 'allow' }] },
    })
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
    try {
      const forward = await peer.forward({ listen: '127.0.0.1:0', socket: join(dir, 'app.sock') })
      expect(await get(Number(forward.address.split(':')[1]))).toBe('hello unix')
      // The node refuses the channel and the local connection is closed without an answer.
      const refused = await peer.forward({ listen: '127.0.0.1:0', socket: join(dir, 'other.sock') })
      await expect(get(Number(refused.address.split(':')[1]))).rejects.toThrow(/socket hang up|ECONNRESET/)
      await Promise.all([forward.close(), refused.close()])
      await expect(peer.forward({ listen: '127.0.0.1:0', socket: join(dir, 'app.sock'), via: 'tunnel' })).rejects.toThrow(/via: 'ssh'/)
    } finally {
      await peer.close()
      allowed.close()
      other.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('peer.forward({ remote: true }) has the node listen and carries its connections back here', async () => {
    const http = await httpServer('remote')
    const key = Keypair.generate()
    const node = await start(addOps(), {
      services: { ssh: true },
      auth: { peers: [{ id: 'alice', fingerprints: [key.fingerprint] }] },
    })
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
    try {
      // The default policy lets -R bind on the node's loopback, and nowhere else.
      const remote = await peer.forward({ remote: true, listen: '127.0.0.1:0', host: '127.0.0.1', port: http.port })
      expect(remote.address).toMatch(/^127\.0\.0\.1:\d+$/)
      const port = Number(remote.address.split(':')[1])
      expect(port).toBeGreaterThan(0)
      expect(await get(port)).toBe('hello remote')
      // close() resolves once the node has closed its port.
      await remote.close()
      await expect(get(port)).rejects.toThrow(/ECONNREFUSED/)
      await expect(peer.forward({ remote: true, listen: '0.0.0.0:0', host: '127.0.0.1', port: http.port })).rejects.toThrow(/remote forward on 0\.0\.0\.0:0/)
      await expect(peer.forward({ remote: true, via: 'tunnel', listen: '127.0.0.1:0', host: '127.0.0.1', port: http.port })).rejects.toThrow(/via: 'ssh'/)
    } finally {
      await peer.close()
      http.server.close()
    }
  })

  it('peer.forward({ remote: true }) on a socket path has the node listen on a Unix socket where a listen rule allows', async () => {
    const http = await httpServer('remote-socket')
    const dir = mkdtempSync(join(tmpdir(), 'alknet-srem-'))
    const key = Keypair.generate()
    const node = await start(addOps(), {
      services: { ssh: true },
      auth: { peers: [{ id: 'alice', fingerprints: [key.fingerprint] }] },
      forwarding: { rules: [{ direction: 'listen', sockets: [`${dir}/`], action: 'allow' }] },
    })
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
    const path = join(dir, 'in.sock')
    try {
      const remote = await peer.forward({ remote: true, listen: path, host: '127.0.0.1', port: http.port })
      expect(remote.address).toBe(path)
      expect(await get(path)).toBe('hello remote-socket')
      await remote.close()
      expect(existsSync(path)).toBe(false)
      // Outside the rule's directory the node refuses it, and creates nothing.
      const outside = join(tmpdir(), `alknet-srem-${process.pid}.sock`)
      await expect(peer.forward({ remote: true, listen: outside, host: '127.0.0.1', port: http.port })).rejects.toThrow(/remote forward on .*refused/)
      expect(existsSync(outside)).toBe(false)
    } finally {
      await peer.close()
      http.server.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('the default policy refuses loopback, and a reload opens it', async () => {
    const http = await httpServer('reload')
    const key = Keypair.generate()
    const peers = [{ id: 'alice', fingerprints: [key.fingerprint] }]
    const node = await start(addOps(), { services: { ssh: true }, auth: { peers } })
    const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key })
    try {
      const socks = await peer.socks5({ listen: '127.0.0.1:0' })
      expect(await socksGet(socks.address, '127.0.0.1', http.port)).toBe('socks reply 2')
      node.reload({ auth: { peers }, forwarding: loopback })
      expect(await socksGet(socks.address, '127.0.0.1', http.port)).toBe('hello reload')
      await socks.close()
    } finally {
      await peer.close()
      http.server.close()
    }
  })

  it('an invalid forwarding rule is refused naming it', async () => {
    await expect(start(addOps(), { forwarding: { rules: [{ hosts: ['10.0.0.0/33'], action: 'allow' }] } })).rejects.toThrow(/forwarding rule 0/)
  })
})
