#!/usr/bin/env node
// The Node package's benchmark (`npm run bench` runs it after the Rust benches):
// @alkdev/alknet JS→JS next to @grpc/grpc-js and a `ws` JSON-RPC server doing the same work.
// `alknet-ws` is the WebSocket client (`@alkdev/alknet/client`, on `ws` in Node 20) against the
// node's WebSocket carrier over TLS: the browser client's path, next to the bare `ws` server.
//
//   node --expose-gc bench/node-bench.mjs            # full run (3 interleaved rounds, medians)
//   ALKNET_BENCH_QUICK=1 node bench/node-bench.mjs   # a short smoke run
//   ALKNET_BENCH_ONLY=alknet-quic,grpc-tls ...       # only these columns (ids in SYSTEMS below)
//   ALKNET_BENCH_ROUNDS=1 ...                         # fewer rounds
//   ALKNET_BENCH_PUBSUB_ONLY=1 ...                    # only the pub/sub rows (and their CPU per message)
//   ALKNET_BENCH_MESSAGES=300000 ...                  # pub/sub messages per row
//   ALKNET_BENCH_PUBSUB_ROWS=node,node-many ...       # only these pub/sub rows (peer, node, node-many)
//   ALKNET_BENCH_PUBLISHERS=16 ...                    # concurrent publish calls of the peer row (default: WINDOW)
//   ALKNET_BENCH_UNARY=1 ...                          # only the unary rows (latency, calls/s, CPU per call)
//   ALKNET_BENCH_SERVER_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' ...   # node flags of the servers
//
// Every server runs in its own child process (this file with `serve <kind>`); the clients run in
// this process, one system at a time, on loopback. The work, the same for every system:
// - `echo/ping`: `{ n }` → `{ n }` (alknet also validates both against a JSON Schema);
// - `echo/items`: `{ count }` → `count` items `{ n: i }` from a server-side async generator,
//   consumed by the client with `for await`;
// - pub/sub: a subscriber on `bench/>` and a publisher on a second connection publishing
//   `{ n }` to `bench/t` (at most WINDOW messages published but not yet received). "node
//   publishes" has the server publish bursts of BURST messages, one publish call each (as
//   nats.js does); "node publishes, batched" (alknet only) hands each burst to one
//   `node.publishMany` call.
// JSON is (de)serialised on both sides for every system; grpc-js uses a generic service with
// JSON serialize/deserialize (no protobuf).
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import tls from 'node:tls'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const here = fileURLToPath(import.meta.url)
const root = path.resolve(path.dirname(here), '..')

// alknet speaks TLS 1.3 only; the TLS variants of the others are held to the same.
tls.DEFAULT_MIN_VERSION = 'TLSv1.3'

const QUICK = process.env.ALKNET_BENCH_QUICK === '1'
const PUBSUB_ONLY = process.env.ALKNET_BENCH_PUBSUB_ONLY === '1'
const S = QUICK
  ? { rounds: 1, warmup: 500, latencyCalls: 1_000, callsPerLevel: 2_000, items: 10_000, messages: 5_000, rssCalls: 10_000 }
  : { rounds: 3, warmup: 3_000, latencyCalls: 5_000, callsPerLevel: 20_000, items: 100_000, messages: 50_000, rssCalls: 100_000 }
if (process.env.ALKNET_BENCH_ROUNDS) S.rounds = Number(process.env.ALKNET_BENCH_ROUNDS)
if (process.env.ALKNET_BENCH_MESSAGES) S.messages = Number(process.env.ALKNET_BENCH_MESSAGES)
const UNARY_ONLY = process.env.ALKNET_BENCH_UNARY === '1'
const PUBSUB_ROWS = (process.env.ALKNET_BENCH_PUBSUB_ROWS ?? 'peer,node,node-many').split(',')
const LEVELS = [1, 16, 256]
const WINDOW = 512 // pub/sub: published but not yet received
// pub/sub: concurrent publish calls of the peer row. nats.js publishes without an answer, so its
// publisher is held back by WINDOW alone; alknet's publish answers with the count delivered, so
// as many calls as WINDOW allows may be waiting for their answers, and both are bound by the same
// window. (Before, 16 calls: alknet had 16 messages in flight against nats.js's 512.)
const PUBLISHERS = Number(process.env.ALKNET_BENCH_PUBLISHERS ?? WINDOW)
const BURST = 128 // pub/sub from the node: messages per burst
// A pub/sub row that has not finished by then fails with what it reached, instead of leaving the
// whole run waiting (the slowest system finishes a full row in well under 10 s here).
const ROW_DEADLINE_MS = Number(process.env.ALKNET_BENCH_ROW_DEADLINE_MS ?? 120_000)
const KEEP_ALIVE_MS = 5_000 // QUIC connections close after 30 s idle

// ---------------------------------------------------------------------------------------------
// Shared by the servers: the items generator and a small topic broker for grpc and ws.

async function* numbers(count) {
  for (let i = 0; i < count; i++) yield { n: i }
}

/** `*` matches one segment, `>` the rest (as in alknet). */
function matches(pattern, topic) {
  const p = pattern.split('/')
  const t = topic.split('/')
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return t.length > i
    if (i >= t.length || (p[i] !== '*' && p[i] !== t[i])) return false
  }
  return p.length === t.length
}

class Broker {
  subs = new Set() // { pattern, send(message) }
  publish(topic, data) {
    let delivered = 0
    for (const s of this.subs) {
      if (matches(s.pattern, topic)) {
        s.send({ topic, data })
        delivered++
      }
    }
    return delivered
  }
}

function burst(broker, { start, count }) {
  let delivered = 0
  for (let i = 0; i < count; i++) delivered += broker.publish('bench/t', { n: start + i })
  return delivered
}

function stats(gc) {
  if (gc) globalThis.gc?.()
  const cpu = process.cpuUsage()
  return { rss: process.memoryUsage().rss, user: cpu.user, system: cpu.system, gc: typeof globalThis.gc === 'function' }
}

// ---------------------------------------------------------------------------------------------
// Servers (child processes). Each prints `READY <json>` and exits when its stdin closes.

/** The alknet node; with `certDir` also its WebSocket carrier, over TLS with that certificate. */
async function serveAlknet(certDir) {
  const { serve, Keypair, Registry, Type } = require(path.join(root, 'dist/index.js'))
  const N = Type.Object({ n: Type.Integer({ minimum: 0 }) })
  const BURST = Type.Object({ start: Type.Integer({ minimum: 0 }), count: Type.Integer({ minimum: 0 }) })
  let node
  const ops = new Registry()
    .query('echo/ping', { input: N, output: N }, (input) => input)
    .query('bench/burst', { input: BURST, output: Type.Integer() }, async ({ start, count }) => {
      const delivered = []
      for (let i = 0; i < count; i++) delivered.push(node.publish('bench/t', { n: start + i }))
      return (await Promise.all(delivered)).reduce((a, b) => a + b, 0)
    })
    .query('bench/burst_many', { input: BURST, output: Type.Integer() }, async ({ start, count }) => {
      const messages = Array.from({ length: count }, (_, i) => ({ topic: 'bench/t', data: { n: start + i } }))
      return (await node.publishMany(messages)).reduce((a, b) => a + b, 0)
    })
    .subscription('echo/items', { input: Type.Object({ count: Type.Integer({ minimum: 0 }) }), output: N }, ({ count }) => numbers(count))
    .query(
      'bench/stats',
      { input: Type.Object({ gc: Type.Boolean() }), output: Type.Object({ rss: Type.Number(), user: Type.Number(), system: Type.Number(), gc: Type.Boolean() }) },
      ({ gc }) => stats(gc),
    )
  node = await serve({
    listen: '127.0.0.1:0',
    key: Keypair.generate(),
    operations: ops,
    pubsub: { rules: [{ pattern: 'bench/>', publish: null, subscribe: null, anonymous: true }] },
    drainTimeoutMs: 500,
    ...(certDir && { tls: { cert: path.join(certDir, 'cert.pem'), key: path.join(certDir, 'key.pem') }, http: { websocket: true } }),
  })
  const info = { address: node.address, fingerprint: node.fingerprint, url: `wss://${node.address}/alknet/call` }
  return { info, close: () => node.close() }
}

const jsonCodec = {
  serialize: (value) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes) => JSON.parse(bytes.toString()),
}

function grpcService() {
  const method = (name, responseStream) => ({
    path: `/bench.Echo/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: jsonCodec.serialize,
    requestDeserialize: jsonCodec.deserialize,
    responseSerialize: jsonCodec.serialize,
    responseDeserialize: jsonCodec.deserialize,
  })
  return {
    ping: method('Ping', false),
    items: method('Items', true),
    publish: method('Publish', false),
    subscribe: method('Subscribe', true),
    stats: method('Stats', false),
    burst: method('Burst', false),
  }
}

async function serveGrpc(certs) {
  const grpc = require('@grpc/grpc-js')
  const broker = new Broker()
  const server = new grpc.Server()
  server.addService(grpcService(), {
    ping: (call, callback) => callback(null, call.request),
    items: async (call) => {
      for await (const item of numbers(call.request.count)) {
        if (call.cancelled) return
        if (!call.write(item)) await once(call, 'drain')
      }
      call.end()
    },
    publish: (call, callback) => callback(null, broker.publish(call.request.topic, call.request.data)),
    subscribe: (call) => {
      const sub = { pattern: call.request.topic, send: (m) => call.write(m) }
      broker.subs.add(sub)
      call.on('cancelled', () => broker.subs.delete(sub))
    },
    stats: (call, callback) => callback(null, stats(call.request.gc)),
    burst: (call, callback) => callback(null, burst(broker, call.request)),
  })
  const credentials = certs
    ? grpc.ServerCredentials.createSsl(null, [{ private_key: certs.key, cert_chain: certs.cert }], false)
    : grpc.ServerCredentials.createInsecure()
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (e, p) => (e ? reject(e) : resolve(p))),
  )
  return { info: { address: `127.0.0.1:${port}` }, close: () => new Promise((r) => server.tryShutdown(() => r())) }
}

async function serveWs(certs) {
  const { WebSocketServer } = require('ws')
  const broker = new Broker()
  const httpServer = certs ? https.createServer({ key: certs.key, cert: certs.cert }) : http.createServer()
  const wss = new WebSocketServer({ server: httpServer, perMessageDeflate: false })
  wss.on('connection', (ws) => {
    const mine = new Set()
    ws.on('close', () => mine.forEach((s) => broker.subs.delete(s)))
    ws.on('message', async (data) => {
      const { id, method, params } = JSON.parse(data)
      switch (method) {
        case 'echo/ping':
          ws.send(JSON.stringify({ id, result: params }))
          break
        case 'echo/items': {
          let i = 0
          for await (const item of numbers(params.count)) {
            const frame = JSON.stringify({ id, item })
            // Back-pressure: every 256th send waits until the socket took the data.
            if (++i % 256 === 0) await new Promise((r) => ws.send(frame, r))
            else ws.send(frame)
            if (ws.readyState !== ws.OPEN) return
          }
          ws.send(JSON.stringify({ id, done: true }))
          break
        }
        case 'pubsub/publish':
          ws.send(JSON.stringify({ id, result: broker.publish(params.topic, params.data) }))
          break
        case 'pubsub/subscribe': {
          const sub = { id, pattern: params.topic, send: (item) => ws.send(JSON.stringify({ id, item })) }
          broker.subs.add(sub)
          mine.add(sub)
          break
        }
        case 'cancel':
          for (const s of mine) {
            if (s.id === params.id) {
              broker.subs.delete(s)
              mine.delete(s)
            }
          }
          break
        case 'bench/burst':
          ws.send(JSON.stringify({ id, result: burst(broker, params) }))
          break
        case 'bench/stats':
          ws.send(JSON.stringify({ id, result: stats(params.gc) }))
          break
        default:
          ws.send(JSON.stringify({ id, error: `no method ${method}` }))
      }
    })
  })
  httpServer.listen(0, '127.0.0.1')
  await once(httpServer, 'listening')
  const { port } = httpServer.address()
  return {
    info: { address: `127.0.0.1:${port}` },
    close: () => {
      for (const c of wss.clients) c.terminate()
      return new Promise((r) => wss.close(() => httpServer.close(() => r())))
    },
  }
}

/** A nats.js responder connected to the bench's nats-server (URL and CA in the environment). */
async function serveNats() {
  const { connect, JSONCodec } = require('nats')
  const jc = JSONCodec()
  const nc = await connect(natsOptions())
  const reply = (subject, answer) =>
    nc.subscribe(subject, {
      callback: (err, m) => {
        if (!err) m.respond(jc.encode(answer(jc.decode(m.data))))
      },
    })
  reply('echo.ping', (input) => input)
  reply('bench.stats', ({ gc }) => stats(gc))
  reply('bench.burst', ({ start, count }) => {
    for (let i = 0; i < count; i++) nc.publish('bench.t', jc.encode({ n: start + i }))
    return count
  })
  nc.subscribe('echo.items', {
    callback: async (err, m) => {
      if (err) return
      const { count, inbox } = jc.decode(m.data)
      let i = 0
      for await (const item of numbers(count)) {
        nc.publish(inbox, jc.encode({ item }))
        // Back-pressure as the ws server has it: every 256th item waits for the server.
        if (++i % 256 === 0) await nc.flush()
      }
      nc.publish(inbox, jc.encode({ done: true }))
    },
  })
  await nc.flush()
  return { info: {}, close: () => nc.drain() }
}

/** How the bench's nats.js clients reach its nats-server. */
function natsOptions() {
  const ca = process.env.ALKNET_BENCH_NATS_CA
  return { servers: process.env.ALKNET_BENCH_NATS_URL, ...(ca && { tls: { caFile: ca } }) }
}

async function serverMain(kind, certDir) {
  const certs = certDir ? { key: readFileSync(path.join(certDir, 'key.pem')), cert: readFileSync(path.join(certDir, 'cert.pem')) } : undefined
  const server =
    kind === 'alknet' ? await serveAlknet(certDir) : kind === 'grpc' ? await serveGrpc(certs) : kind === 'ws' ? await serveWs(certs) : kind === 'nats' ? await serveNats() : null
  if (!server) throw new Error(`unknown server kind ${kind}`)
  process.stdout.write(`READY ${JSON.stringify(server.info)}\n`)
  process.stdin.resume()
  process.stdin.on('end', async () => {
    const timer = setTimeout(() => process.exit(0), 2_000)
    await server.close().catch(() => {})
    clearTimeout(timer)
    process.exit(0) // also writes --cpu-prof profiles
  })
}

// ---------------------------------------------------------------------------------------------
// Clients. Each system: ping(n) → { n }, items(count) → async iterable, topic(pattern) → async
// iterable of { topic, data }, publish(topic, data) → delivered, stats(gc), close().

/** An async iterator fed by push/end/fail (for ws streams). */
function feed() {
  const queue = []
  let waiting
  let done = false
  let failure
  const settle = () => {
    if (!waiting) return
    if (queue.length) {
      const w = waiting
      waiting = undefined
      w.resolve({ value: queue.shift(), done: false })
    } else if (failure) {
      const w = waiting
      waiting = undefined
      w.reject(failure)
    } else if (done) {
      const w = waiting
      waiting = undefined
      w.resolve({ value: undefined, done: true })
    }
  }
  const it = {
    push: (v) => {
      queue.push(v)
      settle()
    },
    end: () => {
      done = true
      settle()
    },
    fail: (e) => {
      failure = e
      settle()
    },
    onReturn: () => {},
    next: () => new Promise((resolve, reject) => ((waiting = { resolve, reject }), settle())),
    return: async () => {
      done = true
      it.onReturn()
      return { value: undefined, done: true }
    },
    [Symbol.asyncIterator]: () => it,
  }
  return it
}

async function alknetClient(info, transport) {
  const { connect, Keypair } = require(path.join(root, 'dist/index.js'))
  const dial = () => connect({ address: info.address, fingerprint: info.fingerprint, key: Keypair.generate(), transport })
  return alknetSystem(await dial(), await dial())
}

/** The WebSocket client (`@alkdev/alknet/client`) over wss://, trusting the bench certificate. */
async function alknetWsClient(info, certs) {
  const { connect } = require(path.join(root, 'dist/client.js'))
  const dial = () => connect({ url: info.url, ca: certs.cert.toString() })
  return alknetSystem(await dial(), await dial())
}

/** The bench's calls on alknet peers (the native `Peer` or the WebSocket client: the same surface). */
function alknetSystem(peer, publisher) {
  return {
    ping: (n) => peer.call('echo/ping', { n }),
    items: (count) => peer.subscribe('echo/items', { count }),
    topic: (pattern) => peer.topic(pattern),
    publish: (topic, data) => publisher.publish(topic, data),
    stats: (gc) => peer.call('bench/stats', { gc }),
    burst: (start, count) => publisher.call('bench/burst', { start, count }),
    burstMany: (start, count) => publisher.call('bench/burst_many', { start, count }),
    close: async () => {
      await peer.close()
      await publisher.close()
    },
  }
}

async function grpcClient(info, certs) {
  const grpc = require('@grpc/grpc-js')
  const Client = grpc.makeGenericClientConstructor(grpcService(), 'Echo')
  const credentials = () => (certs ? grpc.credentials.createSsl(certs.cert) : grpc.credentials.createInsecure())
  // Two connections (like the other systems): calls and subscriber, publisher.
  const options = { 'grpc.use_local_subchannel_pool': 1 }
  if (certs) options['grpc.ssl_target_name_override'] = 'localhost' // the cert's name (no SNI for an IP)
  const client = new Client(info.address, credentials(), options)
  const publisher = new Client(info.address, credentials(), options)
  const unary = (c, method, request) =>
    new Promise((resolve, reject) => c[method](request, (e, out) => (e ? reject(e) : resolve(out))))
  await unary(client, 'ping', { n: 0 })
  await unary(publisher, 'ping', { n: 0 })
  return {
    ping: (n) => unary(client, 'ping', { n }),
    items: (count) => client.items({ count }),
    topic: (pattern) => {
      const call = client.subscribe({ topic: pattern })
      call.on('error', () => {}) // CANCELLED after the consumer stops
      const iterator = call[Symbol.asyncIterator]()
      return {
        next: () => iterator.next(),
        return: async () => {
          call.cancel()
          return { value: undefined, done: true }
        },
        [Symbol.asyncIterator]() {
          return this
        },
      }
    },
    publish: (topic, data) => unary(publisher, 'publish', { topic, data }),
    stats: (gc) => unary(client, 'stats', { gc }),
    burst: (start, count) => unary(publisher, 'burst', { start, count }),
    close: async () => {
      client.close()
      publisher.close()
    },
  }
}

async function wsClient(info, certs) {
  const { WebSocket } = require('ws')
  const open = async () => {
    const url = `${certs ? 'wss' : 'ws'}://${info.address}`
    const ws = new WebSocket(url, { perMessageDeflate: false, ca: certs?.cert, servername: certs ? 'localhost' : undefined })
    await once(ws, 'open')
    let nextId = 1
    const pending = new Map()
    ws.on('message', (data) => {
      const m = JSON.parse(data)
      const p = pending.get(m.id)
      if (!p) return
      if (m.item !== undefined) p.item(m.item)
      else {
        pending.delete(m.id)
        if (m.error) p.reject(new Error(m.error))
        else if (m.done) p.end()
        else p.resolve(m.result)
      }
    })
    const request = (method, params) =>
      new Promise((resolve, reject) => {
        const id = nextId++
        pending.set(id, { resolve, reject })
        ws.send(JSON.stringify({ id, method, params }))
      })
    const stream = (method, params) => {
      const id = nextId++
      const it = feed()
      pending.set(id, { item: it.push, end: it.end, reject: it.fail })
      it.onReturn = () => {
        pending.delete(id)
        ws.send(JSON.stringify({ method: 'cancel', params: { id } }))
      }
      ws.send(JSON.stringify({ id, method, params }))
      return it
    }
    return { ws, request, stream }
  }
  const conn = await open()
  const publisher = await open()
  return {
    ping: (n) => conn.request('echo/ping', { n }),
    items: (count) => conn.stream('echo/items', { count }),
    topic: (pattern) => conn.stream('pubsub/subscribe', { topic: pattern }),
    publish: (topic, data) => publisher.request('pubsub/publish', { topic, data }),
    stats: (gc) => conn.request('bench/stats', { gc }),
    burst: (start, count) => publisher.request('bench/burst', { start, count }),
    close: async () => {
      conn.ws.close()
      publisher.ws.close()
    },
  }
}

/** nats.js: calls as request/reply, items to an inbox, topics `a/b` as subjects `a.b`. */
async function natsClient() {
  const { connect, JSONCodec, createInbox } = require('nats')
  const jc = JSONCodec()
  const conn = await connect(natsOptions())
  const publisher = await connect(natsOptions())
  const request = async (subject, input) => jc.decode((await conn.request(subject, jc.encode(input), { timeout: 30_000 })).data)
  let subscribed = Promise.resolve()
  const iterate = (sub, map) => {
    const it = sub[Symbol.asyncIterator]()
    return {
      next: async () => {
        const r = await it.next()
        return r.done ? r : map(r.value)
      },
      return: async () => {
        sub.unsubscribe()
        return { value: undefined, done: true }
      },
      [Symbol.asyncIterator]() {
        return this
      },
    }
  }
  return {
    ping: (n) => request('echo.ping', { n }),
    items: (count) => {
      const inbox = createInbox()
      const sub = conn.subscribe(inbox)
      let done = false
      const items = iterate(sub, (m) => {
        const v = jc.decode(m.data)
        if (v.done) {
          done = true
          sub.unsubscribe()
          return { value: undefined, done: true }
        }
        return { value: v.item, done: false }
      })
      conn.flush().then(() => conn.publish('echo.items', jc.encode({ count, inbox })))
      return {
        ...items,
        next: () => (done ? Promise.resolve({ value: undefined, done: true }) : items.next()),
        [Symbol.asyncIterator]() {
          return this
        },
      }
    },
    topic: (pattern) => {
      const sub = conn.subscribe(pattern.replaceAll('/', '.'))
      subscribed = conn.flush()
      return iterate(sub, (m) => ({ value: { topic: m.subject.replaceAll('.', '/'), data: jc.decode(m.data) }, done: false }))
    },
    publish: async (topic, data) => {
      await subscribed
      publisher.publish(topic.replaceAll('/', '.'), jc.encode(data))
      return 1
    },
    countsDelivery: false,
    stats: (gc) => request('bench.stats', { gc }),
    burst: (start, count) => request('bench.burst', { start, count }),
    close: async () => {
      await conn.drain()
      await publisher.drain()
    },
  }
}

/** A `nats-server` on a free loopback port; with `certs`, TLS only (the bench's certificate). */
async function startNatsServer(certs) {
  const args = ['-a', '127.0.0.1', '-p', '-1']
  if (certs) args.push('--tls', '--tlscert', path.join(certs.dir, 'cert.pem'), '--tlskey', path.join(certs.dir, 'key.pem'))
  const child = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  const lines = readline.createInterface({ input: child.stderr })
  const port = await new Promise((resolve, reject) => {
    child.once('error', (e) => reject(new Error(`nats-server could not start (${e.message}); install it: apt-get install nats-server`)))
    child.once('exit', (code) => reject(new Error(`nats-server exited (${code}) before it listened`)))
    lines.on('line', (line) => {
      const m = /Listening for client connections on [^:]+:(\d+)/.exec(line)
      if (m) resolve(Number(m[1]))
    })
  })
  return {
    url: `${certs ? 'tls' : 'nats'}://127.0.0.1:${port}`,
    stop: async () => {
      child.kill()
      await once(child, 'exit')
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

async function checkedPing(sys, n) {
  const out = await sys.ping(n)
  if (out?.n !== n) throw new Error(`echo/ping(${n}) answered ${JSON.stringify(out)}`)
}

async function latency(sys, calls) {
  const samples = new Float64Array(calls)
  for (let n = 0; n < calls; n++) {
    const t = process.hrtime.bigint()
    await checkedPing(sys, n)
    samples[n] = Number(process.hrtime.bigint() - t) / 1e3
  }
  samples.sort()
  const at = (q) => samples[Math.round((samples.length - 1) * q)]
  return { p50: at(0.5), p99: at(0.99) }
}

async function throughput(sys, concurrency, total) {
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const n = next++
        if (n >= total) return
        await checkedPing(sys, n)
      }
    }),
  )
  return total / ((performance.now() - started) / 1e3)
}

async function streaming(sys, count) {
  const started = performance.now()
  let got = 0
  for await (const item of sys.items(count)) {
    if (item.n !== got) throw new Error(`item ${got} was ${JSON.stringify(item)}`)
    got++
  }
  if (got !== count) throw new Error(`asked for ${count} items, got ${got}`)
  return count / ((performance.now() - started) / 1e3)
}

/** Whether the pub/sub row `from` runs: chosen (ALKNET_BENCH_PUBSUB_ROWS), and `sys` has it. */
function runs(sys, from) {
  return PUBSUB_ROWS.includes(from) && (from !== 'node-many' || sys.burstMany !== undefined)
}

/**
 * Pub/sub messages/s received by a `bench/>` subscriber. `peer`: a second connection publishes
 * each message (PUBLISHERS concurrent publish calls); `node`: the server publishes bursts of
 * BURST messages on request (`node-many`: each burst in one `publishMany`). Either way at most
 * WINDOW messages are published but not received. NaN for a row not run.
 */
async function pubsub(sys, total, from = 'peer') {
  if (!runs(sys, from)) return NaN
  const messages = sys.topic('bench/>')
  // The subscription is in place once a probe reaches it.
  const probeUntil = Date.now() + 10_000
  while ((await sys.publish('bench/probe', { probe: true })) < 1) {
    if (Date.now() > probeUntil) throw new Error('the subscription never took effect')
    await new Promise((r) => setTimeout(r, 10))
  }
  let received = 0
  let published = 0
  let waiters = []
  const started = performance.now()
  const consumer = (async () => {
    for await (const m of messages) {
      if (m.data.probe) continue
      received++
      if (waiters.length && published - received <= WINDOW - BURST) {
        const w = waiters
        waiters = []
        w.forEach((r) => r())
      }
      if (received === total) break
    }
    // Publishers still waiting for room learn that the row is over: otherwise a peer publisher
    // that queued while the last messages were in flight waits for a receive that never comes.
    waiters.forEach((r) => r())
    waiters = []
  })()
  const space = (k) =>
    received < total && published - received + k > WINDOW ? new Promise((r) => waiters.push(r)).then(() => space(k)) : undefined
  // A subscription that ends early (OVERLOADED when the subscriber's queue overflowed) fails the
  // row at once instead of leaving the publishers waiting for room that never comes.
  const ended = consumer.then(() => {
    if (received < total) throw new Error(`the subscription ended after ${received} of ${total} messages`)
    return new Promise(() => {})
  })
  ended.catch(() => {}) // seen through the race below, or through `await consumer`
  const publishing = (async () => {
    if (from !== 'peer') {
      const burst = from === 'node' ? sys.burst : sys.burstMany
      while (published < total) {
        await space(BURST)
        const count = Math.min(BURST, total - published)
        const start = published
        published += count
        const delivered = await burst(start, count)
        if (delivered !== count) throw new Error(`burst at ${start} reached ${delivered} of ${count} messages' subscribers`)
      }
    } else {
      await Promise.all(
        Array.from({ length: PUBLISHERS }, async () => {
          for (;;) {
            await space(1)
            const n = published++
            if (n >= total) return
            if ((await sys.publish('bench/t', { n })) !== 1) throw new Error(`publish ${n} reached no subscriber`)
          }
        }),
      )
    }
  })()
  let timer
  const stalled = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const reached = `${Math.min(published, total)} published, ${received} received`
      reject(new Error(`the ${from} row did not finish in ${ROW_DEADLINE_MS / 1e3} s (${reached} of ${total})`))
    }, ROW_DEADLINE_MS)
  })
  try {
    await Promise.race([publishing, ended, stalled])
    await Promise.race([consumer, stalled])
  } finally {
    clearTimeout(timer)
  }
  const rate = total / ((performance.now() - started) / 1e3)
  // Leaving the loop ended the subscription, but the server hears of it a moment later: the next
  // row starts once a probe reaches no one, or its first burst would count this subscription too.
  // (nats.js's publish answers no count.)
  if (sys.countsDelivery !== false) {
    const goneUntil = Date.now() + 10_000
    while ((await sys.publish('bench/probe', { probe: true })) > 0) {
      if (Date.now() > goneUntil) throw new Error('the subscription never ended')
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  return rate
}

/** CPU µs per call (client, server) at concurrency 256. */
async function cpuPerCall(sys, calls) {
  const s0 = await sys.stats(false)
  const c0 = process.cpuUsage()
  await throughput(sys, 256, calls)
  const c1 = process.cpuUsage(c0)
  const s1 = await sys.stats(false)
  return { client: (c1.user + c1.system) / calls, server: (s1.user + s1.system - s0.user - s0.system) / calls }
}

/** Pub/sub messages/s (`from` the peer or the node) and CPU µs per message in each process. */
async function pubsubCpu(sys, total, from) {
  if (!runs(sys, from)) return { rate: NaN, client: NaN, server: NaN }
  const s0 = await sys.stats(false)
  const c0 = process.cpuUsage()
  const rate = await pubsub(sys, total, from)
  const c1 = process.cpuUsage(c0)
  const s1 = await sys.stats(false)
  return { rate, client: (c1.user + c1.system) / total, server: (s1.user + s1.system - s0.user - s0.system) / total }
}

async function round(sys) {
  if (PUBSUB_ONLY) {
    const peer = await pubsubCpu(sys, S.messages, 'peer')
    const node = await pubsubCpu(sys, S.messages, 'node')
    const many = await pubsubCpu(sys, S.messages, 'node-many')
    return {
      messages: peer.rate,
      nodeMessages: node.rate,
      peerCpuClient: peer.client,
      peerCpuServer: peer.server,
      nodeCpuClient: node.client,
      nodeCpuServer: node.server,
      nodeManyMessages: many.rate,
      nodeManyCpuClient: many.client,
      nodeManyCpuServer: many.server,
    }
  }
  const { p50, p99 } = await latency(sys, S.latencyCalls)
  const rates = []
  for (const c of LEVELS) rates.push(await throughput(sys, c, S.callsPerLevel))
  if (UNARY_ONLY) {
    const cpu = await cpuPerCall(sys, S.callsPerLevel)
    return { p50, p99, rates, items: NaN, messages: NaN, nodeMessages: NaN, nodeManyMessages: NaN, cpuClient: cpu.client, cpuServer: cpu.server }
  }
  const items = await streaming(sys, S.items)
  const messages = await pubsub(sys, S.messages, 'peer')
  const nodeMessages = await pubsub(sys, S.messages, 'node')
  const nodeManyMessages = await pubsub(sys, S.messages, 'node-many')
  const cpu = await cpuPerCall(sys, S.callsPerLevel)
  return { p50, p99, rates, items, messages, nodeMessages, nodeManyMessages, cpuClient: cpu.client, cpuServer: cpu.server }
}

// ---------------------------------------------------------------------------------------------
// Orchestration.

const SYSTEMS = [
  { id: 'alknet-quic', head: 'alknet QUIC', server: 'alknet', client: (i) => alknetClient(i, 'quic') },
  { id: 'alknet-tcp', head: 'alknet TCP+TLS', server: 'alknet', client: (i) => alknetClient(i, 'tcp') },
  { id: 'alknet-ws', head: 'alknet WebSocket', server: 'alknet', tls: true, client: (i, c) => alknetWsClient(i, c) },
  { id: 'grpc', head: 'grpc-js h2c', server: 'grpc', client: (i) => grpcClient(i) },
  { id: 'grpc-tls', head: 'grpc-js TLS', server: 'grpc', tls: true, client: (i, c) => grpcClient(i, c) },
  { id: 'ws', head: 'ws', server: 'ws', client: (i) => wsClient(i) },
  { id: 'wss', head: 'ws TLS', server: 'ws', tls: true, client: (i, c) => wsClient(i, c) },
  { id: 'nats', head: 'nats.js', server: 'nats', nats: true, client: () => natsClient() },
  { id: 'nats-tls', head: 'nats.js TLS', server: 'nats', nats: true, tls: true, client: () => natsClient() },
]

function makeCerts() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'alknet-bench-'))
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')],
    { stdio: 'ignore' },
  )
  return { dir, key: readFileSync(path.join(dir, 'key.pem')), cert: readFileSync(path.join(dir, 'cert.pem')) }
}

async function startServer(kind, certDir) {
  const extra = (process.env.ALKNET_BENCH_SERVER_ARGS ?? '').split(' ').filter(Boolean)
  const args = ['--expose-gc', ...extra, here, 'serve', kind]
  if (certDir) args.push(certDir)
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'], cwd: root })
  const lines = readline.createInterface({ input: child.stdout })
  const info = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the ${kind} server exited (${code}) before it was ready`)))
    lines.on('line', (line) => {
      if (line.startsWith('READY ')) resolve(JSON.parse(line.slice(6)))
    })
  })
  return {
    info,
    stop: async () => {
      child.stdin.end()
      await once(child, 'exit')
    },
  }
}

function versions() {
  const pkg = (name) => JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')).version
  let commit = 'unknown'
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim()
  } catch {}
  const own = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version
  return [
    `node ${process.version} (V8 ${process.versions.v8}, OpenSSL ${process.versions.openssl}), ${os.cpus().length} × ${os.cpus()[0]?.model.trim()}, ${os.platform()} ${os.release()}`,
    `@alkdev/alknet ${own} (git ${commit}; napi binding + dist/): QUIC and TCP+TLS, TLS 1.3, Ed25519 raw keys, JSON Schema on input and output`,
    `alknet WebSocket: the WebSocket client (dist/client.js on ws ${pkg('ws')}) → the node's carrier at /alknet/call, TLS 1.3 (the P-256 cert below), schemas and auth as over QUIC`,
    `@grpc/grpc-js ${pkg('@grpc/grpc-js')}: generic service, JSON serialize/deserialize; h2c = plaintext HTTP/2, TLS = TLS 1.3 (P-256 self-signed cert made by openssl now)`,
    `nats.js ${pkg('nats')} + ${natsVersion()}: request/reply, inbox items, subjects bench.>; plaintext and TLS 1.3 (same cert)`,
    `ws ${pkg('ws')}: JSON-RPC-style {id, method, params} → {id, result} / {id, item}…{id, done}; plaintext and TLS 1.3 (same cert); no permessage-deflate`,
  ]
}

function natsVersion() {
  try {
    return execFileSync('nats-server', ['--version'], { encoding: 'utf8' }).trim()
  } catch {
    return 'nats-server (not installed)'
  }
}

const fmt = {
  us: (v) => (Number.isNaN(v) ? '–' : `${v.toFixed(1)} µs`),
  rate: (v) => (Number.isNaN(v) ? '–' : v >= 1e6 ? `${(v / 1e6).toFixed(2)} M/s` : `${(v / 1e3).toFixed(1)} k/s`),
}

function table(columns, results) {
  const rows = [
    ['latency p50 (sequential)', (f) => f.p50, fmt.us, true],
    ['latency p99 (sequential)', (f) => f.p99, fmt.us, true],
    ...LEVELS.map((c, i) => [`calls/s, concurrency ${c}`, (f) => f.rates[i], fmt.rate, false]),
    ...(UNARY_ONLY
      ? []
      : [
          ['subscription items/s', (f) => f.items, fmt.rate, false],
          ['pub/sub msgs/s, peer publishes', (f) => f.messages, fmt.rate, false],
          ['pub/sub msgs/s, node publishes', (f) => f.nodeMessages, fmt.rate, false],
          ['pub/sub msgs/s, node publishes, batched', (f) => f.nodeManyMessages, fmt.rate, false],
        ]),
    ['CPU µs/call client (c=256)', (f) => f.cpuClient, fmt.us, true],
    ['CPU µs/call server (c=256)', (f) => f.cpuServer, fmt.us, true],
  ]
  const pubsubRows = [
    rows[6],
    ['  CPU µs/msg subscriber + publisher', (f) => f.peerCpuClient, fmt.us, true],
    ['  CPU µs/msg server', (f) => f.peerCpuServer, fmt.us, true],
    rows[7],
    ['  CPU µs/msg subscriber', (f) => f.nodeCpuClient, fmt.us, true],
    ['  CPU µs/msg server (publishes)', (f) => f.nodeCpuServer, fmt.us, true],
    rows[8],
    ['  CPU µs/msg subscriber', (f) => f.nodeManyCpuClient, fmt.us, true],
    ['  CPU µs/msg server (publishMany)', (f) => f.nodeManyCpuServer, fmt.us, true],
  ]
  if (PUBSUB_ONLY) rows.splice(0, rows.length, ...pubsubRows)
  // A row not run, or one a system has no counterpart for (the others' batched node publishes): `–`.
  const cell = (r, f) => (typeof f === 'string' ? f : r[2](r[1](f)))
  // Ratios, the like-for-like comparisons (>1 = alknet ahead): alknet QUIC against the TLS peers,
  // the WebSocket client against the bare ws server over TLS.
  const at = (id) => columns.findIndex((c) => c.id === id)
  const ratioCols = [['alknet-quic', 'grpc-tls'], ['alknet-quic', 'wss'], ['alknet-ws', 'wss'], ['alknet-quic', 'nats-tls']]
    .map(([x, y]) => [at(x), at(y)])
    .filter(([x, y]) => x >= 0 && y >= 0 && typeof results[x] !== 'string' && typeof results[y] !== 'string')
  const ratio = (r, [i, j]) => {
    const x = r[1](results[i])
    const y = r[1](results[j])
    return Number.isNaN(x) || Number.isNaN(y) ? '–' : `${(r[3] ? y / x : x / y).toFixed(2)}×`
  }
  const head = ['', ...columns.map((c) => c.head), ...ratioCols.map(([i, j]) => `${columns[i].head} vs ${columns[j].head}`)]
  const body = rows.map((r) => [r[0], ...results.map((f) => cell(r, f)), ...ratioCols.map((p) => ratio(r, p))])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const line = (cells) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`
  const out = [line(head), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...body.map(line)]
  return out.join('\n')
}

function median(values) {
  const v = [...values].sort((x, y) => x - y)
  return v[Math.floor(v.length / 2)]
}

function combine(rounds) {
  const of = (get) => median(rounds.map(get))
  if (PUBSUB_ONLY) return Object.fromEntries(Object.keys(rounds[0]).map((k) => [k, of((f) => f[k])]))
  return {
    p50: of((f) => f.p50),
    p99: of((f) => f.p99),
    rates: LEVELS.map((_, i) => of((f) => f.rates[i])),
    items: of((f) => f.items),
    messages: of((f) => f.messages),
    nodeMessages: of((f) => f.nodeMessages),
    nodeManyMessages: of((f) => f.nodeManyMessages),
    cpuClient: of((f) => f.cpuClient),
    cpuServer: of((f) => f.cpuServer),
  }
}

const mb = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`

async function rssCheck(sys, calls, transport) {
  if (typeof globalThis.gc !== 'function') console.log('(client: run node with --expose-gc for a gc before each RSS reading)')
  globalThis.gc?.()
  const c0 = process.memoryUsage().rss
  const s0 = await sys.stats(true)
  const started = performance.now()
  await throughput(sys, 16, calls)
  const seconds = (performance.now() - started) / 1e3
  globalThis.gc?.()
  const c1 = process.memoryUsage().rss
  const s1 = await sys.stats(true)
  console.log(
    `RSS around ${calls} alknet calls (${transport}, concurrency 16, ${((calls / seconds) / 1e3).toFixed(1)} k/s), after a gc: ` +
      `client ${mb(c0)} → ${mb(c1)} (${c1 >= c0 ? '+' : ''}${mb(c1 - c0)}), server ${mb(s0.rss)} → ${mb(s1.rss)} (${s1.rss >= s0.rss ? '+' : ''}${mb(s1.rss - s0.rss)})` +
      (s0.gc ? '' : ' [server without gc]'),
  )
}

async function main() {
  const only = process.env.ALKNET_BENCH_ONLY?.split(',').filter(Boolean)
  const columns = only ? SYSTEMS.filter((s) => only.includes(s.id)) : SYSTEMS
  console.log('== Node package benchmark: @alkdev/alknet JS→JS vs @grpc/grpc-js vs ws (loopback; servers in child processes)')
  for (const v of versions()) console.log(`   ${v}`)
  console.log(
    `   ${S.rounds} interleaved round(s), medians; ${S.latencyCalls} sequential calls, ${S.callsPerLevel} calls per concurrency level, ` +
      `${S.items} stream items, ${S.messages} pub/sub messages (window ${WINDOW}; ${PUBLISHERS} concurrent publishes, or node bursts of ${BURST})`,
  )
  const certs = columns.some((c) => c.tls) ? makeCerts() : undefined
  const running = []
  try {
    for (const c of columns) {
      let nats
      if (c.nats) {
        nats = await startNatsServer(c.tls ? certs : undefined)
        process.env.ALKNET_BENCH_NATS_URL = nats.url
        if (c.tls) process.env.ALKNET_BENCH_NATS_CA = path.join(certs.dir, 'cert.pem')
        else delete process.env.ALKNET_BENCH_NATS_CA
      }
      let server = await startServer(c.server, c.tls && !c.nats ? certs.dir : undefined)
      if (nats) {
        const app = server
        server = { info: app.info, stop: async () => (await app.stop(), await nats.stop()) }
      }
      running.push({ column: c, server, sys: await c.client(server.info, c.tls ? certs : undefined) })
    }
    // Keep every connection busy enough not to hit an idle timeout while the others run.
    let current
    const keepAlive = setInterval(() => {
      for (const r of running) if (r !== current) r.sys.ping(0).catch(() => {})
    }, KEEP_ALIVE_MS)
    for (const r of running) {
      current = r
      if (!PUBSUB_ONLY) {
        for (let n = 0; n < S.warmup; n++) await checkedPing(r.sys, n)
        await throughput(r.sys, 16, S.warmup)
        if (UNARY_ONLY) continue
        await streaming(r.sys, Math.min(S.items, 10_000))
      }
      await pubsub(r.sys, Math.min(S.messages, 5_000), 'peer')
      await pubsub(r.sys, Math.min(S.messages, 5_000), 'node')
      await pubsub(r.sys, Math.min(S.messages, 5_000), 'node-many')
    }
    const rounds = running.map(() => [])
    for (let i = 0; i < S.rounds; i++) {
      for (const [k, r] of running.entries()) {
        current = r
        process.stdout.write(`   round ${i + 1}/${S.rounds}: ${r.column.head} …`)
        try {
          const f = await round(r.sys)
          rounds[k].push(f)
          const batched = ` / ${fmt.rate(f.nodeManyMessages)}`
          if (PUBSUB_ONLY) process.stdout.write(` pub/sub ${fmt.rate(f.messages)} / ${fmt.rate(f.nodeMessages)}${batched}\n`)
          else {
            const more = UNARY_ONLY ? `CPU/call ${fmt.us(f.cpuClient)} client, ${fmt.us(f.cpuServer)} server` : `items ${fmt.rate(f.items)}, pub/sub ${fmt.rate(f.messages)} / ${fmt.rate(f.nodeMessages)}${batched}`
            process.stdout.write(` p50 ${fmt.us(f.p50)}, c256 ${fmt.rate(f.rates[2])}, ${more}\n`)
          }
        } catch (e) {
          rounds[k].push(`failed: ${e?.message ?? e}`)
          process.stdout.write(` failed: ${e?.message ?? e}\n`)
        }
      }
    }
    const results = rounds.map((rs) => rs.find((f) => typeof f === 'string') ?? combine(rs))
    console.log()
    console.log(table(columns, results))
    console.log()
    const alk = running.find((r) => r.column.id === 'alknet-quic') ?? running.find((r) => r.column.id === 'alknet-tcp')
    if (alk && !PUBSUB_ONLY) {
      current = alk
      await rssCheck(alk.sys, S.rssCalls, alk.column.id === 'alknet-quic' ? 'QUIC' : 'TCP+TLS')
    }
    clearInterval(keepAlive)
  } finally {
    for (const r of running) {
      await r.sys.close().catch(() => {})
      await r.server.stop().catch(() => {})
    }
    if (certs) rmSync(certs.dir, { recursive: true, force: true })
  }
}

if (process.argv[2] === 'serve') {
  serverMain(process.argv[3], process.argv[4]).catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e)
      process.exit(1)
    },
  )
}
