// The HTTP side of a node started from Node.js: the decoy is on by default, `http: false` turns it
// off, and the gateway's OpenAPI document validates with a real OpenAPI validator and calls an
// operation through the path it describes. (The Rust suite of alknet-http tests the rest with
// curl, openssl and a WebSocket client.)
import { describe, expect, it } from 'vitest'
import { request } from 'node:https'
import { connect as tlsConnect } from 'node:tls'
import SwaggerParser from '@apidevtools/swagger-parser'
import { alknet } from './helpers'
import { addOps, start } from './support'

const { Type } = alknet

/** The part of an OpenAPI document the test reads. */
interface OpenApiDocument {
  paths: Record<string, { post?: { operationId?: string; requestBody?: { content: Record<string, { schema?: unknown }> } } }>
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/** A TLS handshake offering `alpn`: resolves with the negotiated protocol, rejects with the TLS error. */
function handshake(address: string, alpn: string[]): Promise<string | false> {
  const port = Number(address.slice(address.lastIndexOf(':') + 1))
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: alpn, rejectUnauthorized: false }, () => {
      resolve(socket.alpnProtocol ?? false)
      socket.destroy()
    })
    socket.on('error', reject)
  })
}

/** One HTTPS request to the node (Node's client offers no ALPN: the node answers HTTP/1.1) (its certificate is self-signed: the test trusts it blindly). */
function fetchNode(address: string, path: string, init: { method?: string; body?: string; token?: string } = {}): Promise<Answer> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))]
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path,
        method: init.method ?? 'GET',
        rejectUnauthorized: false,
        headers: {
          ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(init.token !== undefined ? { authorization: `Bearer ${init.token}` } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(init.body)
  })
}

describe('HTTP on the node port', () => {
  it('serves the decoy by default, naming nothing', async () => {
    const node = await start(addOps(), { tls: 'self-signed' })
    const page = await fetchNode(node.address, '/')
    expect(page.status).toBe(200)
    expect(page.body).toContain('<h1>Welcome</h1>')
    const missing = await fetchNode(node.address, '/call/math/add', { method: 'POST', body: '{"a":1,"b":2}' })
    expect(missing.status).toBe(405)
    for (const answer of [page, missing]) {
      expect(JSON.stringify(answer).toLowerCase()).not.toContain('alknet')
      expect(answer.headers.server).toBeUndefined()
    }
  })

  it('http: false turns HTTP off: a web client is refused in the TLS handshake', async () => {
    const node = await start(addOps(), { tls: 'self-signed', http: false })
    await expect(handshake(node.address, ['http/1.1'])).rejects.toThrow(/no application protocol|alert number 120/i)
    const on = await start(addOps(), { tls: 'self-signed' })
    expect(await handshake(on.address, ['h2', 'http/1.1'])).toBe('h2')
  })

  it('the OpenAPI document validates and its path calls the operation', async () => {
    const token = 'bob-token'
    const { createHash } = await import('node:crypto')
    const tokenHash = `sha256:${createHash('sha256').update(token).digest('hex')}`
    const ops = addOps().query(
      'notes/private',
      { input: Type.Object({}), output: Type.String(), access: { requiredScopes: ['notes:read'] } },
      (_input, ctx) => `for ${ctx.identity?.id ?? 'nobody'}`,
    )
    const node = await start(ops, {
      tls: 'self-signed',
      http: { gateway: true, openapi: true },
      auth: { peers: [{ id: 'bob', tokenHash, scopes: ['notes:read'] }] },
    })
    const anonymous = JSON.parse((await fetchNode(node.address, '/openapi.json')).body) as OpenApiDocument
    const bobs = JSON.parse((await fetchNode(node.address, '/openapi.json', { token })).body) as OpenApiDocument
    // swagger-parser dereferences in place: validate copies.
    await SwaggerParser.validate(structuredClone(anonymous) as never)
    await SwaggerParser.validate(structuredClone(bobs) as never)
    expect(Object.keys(anonymous.paths)).toContain('/call/math/add')
    expect(Object.keys(anonymous.paths)).not.toContain('/call/notes/private')
    expect(Object.keys(bobs.paths)).toContain('/call/notes/private')

    // Call through what the document says: its path, method and body schema.
    const [path, item] = Object.entries(anonymous.paths).find(([, p]) => p?.post?.operationId === 'math_add') ?? []
    expect(path).toBe('/call/math/add')
    expect(item?.post?.requestBody?.content['application/json'].schema).toMatchObject({ required: ['a', 'b'] })
    const answer = await fetchNode(node.address, path ?? '', { method: 'POST', body: JSON.stringify({ a: 20, b: 22 }) })
    expect([answer.status, JSON.parse(answer.body)]).toEqual([200, 42])

    const refused = await fetchNode(node.address, '/call/notes/private', { method: 'POST', body: '{}' })
    expect([refused.status, (JSON.parse(refused.body) as { error: { code: string } }).error.code]).toEqual([401, 'UNAUTHENTICATED'])
    const granted = await fetchNode(node.address, '/call/notes/private', { method: 'POST', body: '{}', token })
    expect([granted.status, JSON.parse(granted.body)]).toEqual([200, 'for bob'])
  })
})
