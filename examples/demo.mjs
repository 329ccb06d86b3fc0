// npm run demo: one node serves operations in its own process; a second node (this process)
// connects to it with the first node's key pinned, and calls, subscribes, publishes, cancels.
import { fork } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import alknet from '../dist/index.js'

const { serve, connect, Keypair, Registry, Type, CallError } = alknet
const dim = (s) => `\x1b[2m${s}\x1b[0m`
const say = (who, what) => console.log(`${who === 'server' ? '\x1b[36m[server]\x1b[0m' : '\x1b[33m[client]\x1b[0m'} ${what}`)
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })

const operations = () =>
  new Registry()
    .query('math/add', { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number(), description: 'adds two numbers' }, ({ a, b }) => a + b)
    .subscription(
      'clock/ticks',
      { input: Type.Object({ everyMs: Type.Integer({ minimum: 10 }) }), output: Type.String(), description: 'the time, every everyMs' },
      async function* ({ everyMs }, ctx) {
        try {
          while (!ctx.signal.aborted) {
            yield new Date().toISOString().slice(11, 23)
            await sleep(everyMs, ctx.signal)
          }
        } finally {
          say('server', `clock/ticks stopped: ${ctx.signal.aborted ? 'the caller cancelled' : 'done'}`)
        }
      },
    )
    .mutation(
      'todo/create',
      { input: Type.Object({ title: Type.String() }), output: Type.Object({ id: Type.Integer(), by: Type.String() }), access: { requiredScopes: ['todo:write'] } },
      ({ title }, ctx) => {
        say('server', `todo/create by ${ctx.identity?.id}: ${JSON.stringify(title)}`)
        return { id: 1, by: ctx.identity?.id ?? 'nobody' }
      },
    )

async function server() {
  const { clientFingerprint, keyPath, listen } = await new Promise((resolve) => process.once('message', resolve))
  const node = await serve({
    listen,
    key: await Keypair.loadOrCreate(keyPath),
    drainTimeoutMs: 200,
    operations: operations(),
    auth: { peers: [{ id: 'demo-client', fingerprints: [clientFingerprint], scopes: ['todo:write', 'chat'] }] },
    pubsub: { rules: [{ pattern: 'chat/>', publish: ['chat'], subscribe: ['chat'] }] },
  })
  say('server', `listening on ${node.address} (QUIC + TCP+TLS), key ${node.fingerprint.slice(0, 24)}…`)
  say('server', `peer list: demo-client = ${clientFingerprint.slice(0, 24)}… with scopes todo:write, chat`)
  process.send({ address: node.address, fingerprint: node.fingerprint })
  for (;;) {
    const message = await new Promise((resolve) => process.once('message', resolve))
    if (message === 'close') break
    // Publish until a subscriber has it (a resubscribing peer may not be registered yet).
    let delivered = 0
    while (delivered === 0) delivered = await node.publish(message.publish.topic, message.publish.data)
    process.send({ delivered })
  }
  await node.close()
  say('server', 'closed')
}

/** Starts the serving node in its own process; resolves with it once it listens. */
async function startServer(setup) {
  const child = fork(fileURLToPath(import.meta.url), ['server'], { stdio: 'inherit' })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.send(setup)
  const ready = await new Promise((resolve) => child.once('message', resolve))
  return { child, exited, ...ready }
}

async function client() {
  const key = Keypair.generate()
  const keyPath = join(mkdtempSync(join(tmpdir(), 'alknet-demo-')), 'server.key')
  const server1 = await startServer({ clientFingerprint: key.fingerprint, keyPath, listen: '127.0.0.1:0' })
  const { address, fingerprint } = server1

  const peer = await connect({ address, fingerprint, key, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } })
  say('client', `connected to ${address}, pinned ${fingerprint.slice(0, 24)}…`)

  say('client', `math/add {a: 20, b: 22} → ${await peer.call('math/add', { a: 20, b: 22 })}`)
  const api = peer.typed(operations())
  say('client', `typed: api.math.add({a: 1.5, b: 2}) → ${await api.math.add({ a: 1.5, b: 2 })}`)
  const todo = await api.todo.create({ title: 'ship the demo' })
  say('client', `api.todo.create → ${JSON.stringify(todo)}`)

  try {
    await peer.call('math/add', { a: 'one', b: 2 })
  } catch (e) {
    if (e instanceof CallError) say('client', `math/add {a: "one"} → CallError ${e.code}: ${JSON.stringify(e.details)}`)
  }

  const found = await peer.discover()
  say('client', `discover → ${found.map((op) => `${op.name} (${op.type})`).join(', ')}`)

  say('client', 'subscribing to clock/ticks every 100 ms; cancelling after 3 ticks')
  const controller = new AbortController()
  let ticks = 0
  try {
    for await (const t of peer.subscribe('clock/ticks', { everyMs: 100 }, { signal: controller.signal })) {
      say('client', `  tick ${++ticks}: ${t}`)
      if (ticks === 3) controller.abort()
    }
  } catch (e) {
    say('client', `subscription ended: ${e.code} ${dim('(the AbortSignal cancelled it on the server)')}`)
  }

  const room = peer.topic('chat/*')
  const first = room.next()
  let delivered = 0
  while (delivered === 0) delivered = await peer.publish('chat/lobby', { text: 'hello from the client' })
  const { value } = await first
  say('client', `pub/sub: published to chat/lobby, reached ${delivered} subscriber; received on chat/* ← ${value.topic} ${JSON.stringify(value.data)}`)
  await room.return()

  say('client', 'restarting the server (same key, same port) under an open topic subscription…')
  let second
  const status = peer.status()
  const news = peer.topic('chat/>', { onResubscribe: () => say('client', `  resubscribed ${dim('(messages published while disconnected are not replayed)')}`) })
  server1.child.send('close')
  await server1.exited
  for await (const s of status) {
    if (s.type === 'reconnecting') say('client', `  ${s.type} (attempt ${s.attempt}, in ${s.delayMs} ms)`)
    else say('client', `  ${s.type}`)
    if (s.type === 'disconnected' && !second) second = startServer({ clientFingerprint: key.fingerprint, keyPath, listen: address })
    if (s.type === 'connected') break
  }
  const restarted = await second
  restarted.child.send({ publish: { topic: 'chat/news', data: { text: 'after the restart' } } })
  const { value: after } = await news.next()
  say('client', `the same subscription, after the restart ← ${after.topic} ${JSON.stringify(after.data)}`)
  await news.return()
  await status.return()

  await peer.close()
  say('client', 'closed')
  restarted.child.send('close')
  await restarted.exited
}

await (process.argv[2] === 'server' ? server() : client())
