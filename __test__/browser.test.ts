// The browser client in a real browser: Debian's Chromium, driven by playwright-core, loads a page
// the node serves itself (its decoy directory) with the client bundle, and talks to the node over
// wss:// (a self-signed certificate that Chromium is told to trust by its key hash): a call, a
// subscription cancelled by `break`, pub/sub with a native Node.js peer, and a bad token.
//
// Needs /usr/bin/chromium (scripts/test-node.sh installs it as root: apt-get install -y chromium);
// without it the suite is skipped, saying so, except under CI=true, where that is a failure.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { type BrowserContext, type Page, chromium } from 'playwright-core'
import { selfSignedCertificate } from './certificate'
import { alknet } from './helpers'
import { explain, repoRoot, run } from './processes'
import { dial, foreverOps } from './support'

const CHROMIUM = '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium) {
  const why = `${CHROMIUM} is not installed (apt-get install -y chromium; scripts/test-node.sh does it as root)`
  if (process.env.CI === 'true') throw new Error(`${why}: under CI=true the browser tests may not be skipped`)
  console.warn(`skipping the browser tests: ${why}`)
}

const { Keypair, Type, serve } = alknet
type ClientModule = typeof import('../src-ts/client')
const sha = (token: string) => `sha256:${createHash('sha256').update(token).digest('hex')}`

describe.skipIf(!haveChromium)('the browser client in Chromium (/usr/bin/chromium)', () => {
  let certificate: ReturnType<typeof selfSignedCertificate> | undefined
  let site = ''
  let profile = ''
  let context: BrowserContext | undefined
  let page: Page
  let node: Awaited<ReturnType<typeof serve>>
  let url: string

  const { ops: forever, stopped } = foreverOps()
  const ops = forever.query('who/ami', { input: Type.Object({}), output: Type.String(), access: { requiredScopes: ['me'] } }, (_i, ctx) => ctx.identity?.id ?? 'nobody')

  beforeAll(async () => {
    certificate = selfSignedCertificate()
    site = mkdtempSync(path.join(tmpdir(), 'alknet-site-'))
    profile = mkdtempSync(path.join(tmpdir(), 'alknet-chromium-'))
    const built = await run(process.execPath, ['scripts/build-client.mjs'], { cwd: repoRoot })
    expect(built.code, explain(built)).toBe(0)
    copyFileSync(path.join(repoRoot, 'dist/client.browser.mjs'), path.join(site, 'client.js'))
    writeFileSync(
      path.join(site, 'index.html'),
      '<!doctype html><title>alknet</title><script type="module">import * as alknet from "./client.js"; globalThis.alknet = alknet</script>',
    )
    // Not support.ts's start(): that node is closed after each test, this one serves the whole suite.
    node = await serve({
      listen: '127.0.0.1:0',
      key: Keypair.generate(),
      operations: ops,
      onHandlerError: () => {},
      tls: { cert: certificate.cert, key: certificate.key },
      http: { websocket: true, decoy: { dir: site } },
      auth: { peers: [{ id: 'carol', tokenHash: sha('tok-carol'), scopes: ['me'] }] },
      pubsub: { rules: [{ pattern: 'chat/>', publish: null, subscribe: null, anonymous: true }] },
    })
    url = `wss://${node.address}/alknet/call`
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...FLAGS, `--ignore-certificate-errors-spki-list=${certificate.spki}`],
    })
    page = await context.newPage()
    page.on('pageerror', (e) => console.error('page error:', e))
    await page.goto(`https://${node.address}/index.html`)
    await page.waitForFunction(() => 'alknet' in globalThis)
  }, 60_000)

  afterAll(async () => {
    await context?.close()
    await node?.close()
    if (site) rmSync(site, { recursive: true, force: true })
    if (profile) rmSync(profile, { recursive: true, force: true })
    certificate?.remove()
  })

  it('loads the page from the node over https and calls an operation over wss', async () => {
    const answers = await page.evaluate(async (url) => {
      const { connect, contract } = (globalThis as unknown as { alknet: ClientModule }).alknet
      const peer = await connect({ url })
      const sum = await peer.call('math/add', { a: 1, b: 2 })
      const typed = await peer.typed(contract<{ 'math/add': { kind: 'query'; input: { a: number; b: number }; output: number } }>({ 'math/add': 'query' })).math.add({ a: 40, b: 2 })
      await peer.close()
      return { sum, typed, origin: location.origin }
    }, url)
    expect(answers).toEqual({ sum: 3, typed: 42, origin: `https://${node.address}` })
  })

  it('a subscription that the page breaks out of is cancelled on the node', async () => {
    const seen = await page.evaluate(async (url) => {
      const { connect } = (globalThis as unknown as { alknet: ClientModule }).alknet
      const peer = await connect({ url })
      const seen: number[] = []
      for await (const n of peer.subscribe<number>('feed/forever', {})) {
        seen.push(n)
        if (seen.length === 3) break
      }
      const after = await peer.call('math/add', { a: 2, b: 2 })
      await peer.close()
      return { seen, after }
    }, url)
    expect(seen).toEqual({ seen: [0, 1, 2], after: 4 })
    expect(await stopped).toBe(true)
  })

  it('pub/sub between the page and a native Node.js peer, both ways', async () => {
    const native = await dial(node)
    // The page subscribes and waits for the first message that is not a warm-up.
    const received = page.evaluate(async (url) => {
      const { connect } = (globalThis as unknown as { alknet: ClientModule }).alknet
      const peer = await connect({ url })
      // Not overlapping `chat/*` below: that count must not include this subscription while its
      // connection's close is still on the way.
      for await (const m of peer.topic<{ text: string; warmUp?: boolean }>('chat/room/>')) {
        if (m.data.warmUp) continue
        await peer.close()
        return m
      }
      return undefined
    }, url)
    // The page's subscription is in place once a publication reaches it.
    while ((await native.publish('chat/room/warm', { text: 'warm-up', warmUp: true })) < 1);
    await native.publish('chat/room/thread', { text: 'from Node.js' })
    expect(await received).toEqual({ topic: 'chat/room/thread', data: { text: 'from Node.js' } })

    const fromPage = native.topic<{ text: string; warmUp?: boolean }>('chat/*')
    const delivered = await page.evaluate(async (url) => {
      const { connect } = (globalThis as unknown as { alknet: ClientModule }).alknet
      const peer = await connect({ url })
      while ((await peer.publish('chat/lobby', { text: 'warm-up', warmUp: true })) < 1);
      const delivered = await peer.publish('chat/lobby', { text: 'from the browser' })
      await peer.close()
      return delivered
    }, url)
    expect(delivered).toBe(1)
    for await (const m of fromPage) {
      if (m.data.warmUp) continue
      expect(m).toEqual({ topic: 'chat/lobby', data: { text: 'from the browser' } })
      break
    }
  })

  it('a bad token connects but gets UNAUTHENTICATED; a good one identifies the caller', async () => {
    const outcome = await page.evaluate(async (url) => {
      const { connect, CallError } = (globalThis as unknown as { alknet: ClientModule }).alknet
      const bad = await connect({ url, token: 'tok-mallory' })
      const refused = await bad.call('who/ami', {}).then(
        () => undefined,
        (e: unknown) => ({ code: e instanceof CallError ? e.code : String(e), retryable: e instanceof CallError && e.retryable }),
      )
      await bad.close()
      const good = await connect({ url, token: 'tok-carol' })
      const me = await good.call('who/ami', {})
      await good.close()
      return { refused, me }
    }, url)
    expect(outcome).toEqual({ refused: { code: 'UNAUTHENTICATED', retryable: false }, me: 'carol' })
  })
})
