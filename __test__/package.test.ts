// The package as a user gets it: `npm pack` of this repository and of this platform's binary
// package (npm/<platform>, with the binary copied in, as the release workflow does), both
// installed from their tarballs into an empty project outside the repository, then used from an
// ES module, a CommonJS script, strict TypeScript and the `alknet` bin in real child processes.
//
// `npm test` packs the debug build (a release build of the whole engine takes many minutes on a
// small machine); the release workflow packs the release build and checks its size.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { copyFile, cp, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { explain, repoRoot, run } from './processes'

const manifest = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { name: string; version: string; napi: { binaryName: string } }
const platform = 'linux-x64-gnu' // the one target in package.json's napi.targets
const binary = `${manifest.napi.binaryName}.${platform}.node`

// npm exports its settings to the scripts it runs (npm_config_*); the consumer's npm must not inherit them.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')))

let project = '' // the consumer project, a fresh temporary directory
let packedFiles: string[] = []
let packedSize = 0
let platformFiles: string[] = []

interface Packed {
  filename: string
  size: number
  unpackedSize: number
  files: { path: string }[]
}

/** `npm pack` of the package in `dir` into the consumer project. */
async function pack(dir: string): Promise<Packed> {
  const out = await run('npm', ['pack', '--json', '--pack-destination', project], { cwd: dir, env })
  expect(out.code, explain(out)).toBe(0)
  const [packed] = JSON.parse(out.stdout) as [Packed]
  console.log(`npm pack ${packed.filename}: ${(packed.size / 1e6).toFixed(2)} MB packed, ${(packed.unpackedSize / 1e6).toFixed(2)} MB unpacked`)
  return packed
}

beforeAll(async () => {
  project = await realpath(await mkdtemp(path.join(tmpdir(), 'alknet-consumer-')))
  const main = await pack(repoRoot)
  packedFiles = main.files.map((f) => f.path)
  packedSize = main.size
  // The platform package as `napi pre-publish` fills it: its manifest and the binary.
  const platformDir = path.join(project, 'platform-package')
  await cp(path.join(repoRoot, 'npm', platform), platformDir, { recursive: true })
  await copyFile(path.join(repoRoot, binary), path.join(platformDir, binary))
  const native = await pack(platformDir)
  platformFiles = native.files.map((f) => f.path)
  await rm(platformDir, { recursive: true })
  await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'alknet-consumer', version: '0.0.0', private: true }))
  const tarballs = [main.filename, native.filename].map((f) => path.join(project, f))
  const install = await run('npm', ['install', '--no-audit', '--no-fund', ...tarballs], { cwd: project, env })
  expect(install.code, explain(install)).toBe(0)
}, 300_000)

afterAll(async () => {
  if (project) await rm(project, { recursive: true, force: true })
})

/** Writes `source` as `name` in the consumer project and runs it with node; returns its JSON output. */
async function runScript(name: string, source: string): Promise<unknown> {
  await writeFile(path.join(project, name), source)
  const result = await run(process.execPath, [name], { cwd: project, env })
  expect(result.code, explain(result)).toBe(0)
  return JSON.parse(result.stdout)
}

// Both scripts start a node, call it over loopback and close everything; the process must then
// exit by itself (a leaked handle would hang it and time the test out).
const scriptBody = `
const ops = new Registry().query('math/add',
  { input: Type.Object({ a: Type.Number(), b: Type.Number() }), output: Type.Number() },
  ({ a, b }) => a + b)
const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops })
const peer = await connect({ address: node.address, fingerprint: node.fingerprint, key: Keypair.generate() })
const sum = await peer.call('math/add', { a: 40, b: 2 })
await peer.close()
await node.close()
`

describe('the npm package, installed from its tarball', () => {
  it('carries the compiled entry, its types, its sources, the browser client and the bin, no binary; the platform package carries the binary', () => {
    for (const file of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/client.js', 'dist/client.d.ts', 'dist/client.browser.mjs', 'index.js', 'index.d.ts', 'src-ts/index.ts']) {
      expect(packedFiles).toContain(file)
    }
    const topLevel = new Set(packedFiles.map((f) => f.split('/')[0]))
    expect([...topLevel].sort()).toEqual(['README.md', 'dist', 'index.d.ts', 'index.js', 'package.json', 'src-ts'].sort())
    expect(packedSize).toBeLessThan(2_000_000) // JavaScript, types and sources only
    expect(platformFiles.sort()).toEqual([binary, 'README.md', 'package.json'].sort())
  })

  it('works from an ES module: named imports, a served operation called over loopback', async () => {
    const out = await runScript(
      'esm.mjs',
      `import { createRequire } from 'node:module'
import * as namespace from '@alkdev/alknet'
import { serve, connect, Keypair, Registry, Type } from '@alkdev/alknet'
${scriptBody}
const named = Object.keys(namespace).filter((k) => k !== 'default').sort()
const required = Object.getOwnPropertyNames(createRequire(import.meta.url)('@alkdev/alknet')).sort()
console.log(JSON.stringify({ sum, named, required }))
`,
    )
    const { sum, named, required } = out as { sum: number; named: string[]; required: string[] }
    expect(sum).toBe(42)
    // Node finds every export of the CommonJS build (and its __esModule marker) as a named ES export.
    expect(named).toEqual(required)
    expect(named).toEqual(expect.arrayContaining(['CallError', 'Keypair', 'Peer', 'Registry', 'Type', 'connect', 'serve']))
  })

  it('works from CommonJS, loading the binary shipped inside the installed package', async () => {
    const out = await runScript(
      'cjs.cjs',
      `const { serve, connect, Keypair, Registry, Type } = require('@alkdev/alknet')
const { readFileSync } = require('node:fs')
;(async () => {
${scriptBody}
  const loaded = readFileSync('/proc/self/maps', 'utf8').split('\\n').map((l) => l.split(/\\s+/)[5]).filter((p) => p && p.endsWith('.node'))
  console.log(JSON.stringify({ sum, binaries: [...new Set(loaded)] }))
})()
`,
    )
    expect(out).toEqual({ sum: 42, binaries: [path.join(project, `node_modules/@alkdev/alknet-${platform}`, binary)] })
  })

  it('exports the browser client: the CommonJS build in Node.js, the bundle under the browser condition', async () => {
    const source = `const resolved = import.meta.resolve('@alkdev/alknet/client')
const client = await import('@alkdev/alknet/client')
console.log(JSON.stringify({ file: resolved.slice(resolved.indexOf('/dist/') + 1), exports: Object.keys(client).filter((k) => k !== 'default' && k !== '__esModule').sort() }))
`
    await writeFile(path.join(project, 'client.mjs'), source)
    const outputs = []
    for (const conditions of [[], ['--conditions=browser']]) {
      const result = await run(process.execPath, [...conditions, 'client.mjs'], { cwd: project, env })
      expect(result.code, explain(result)).toBe(0)
      outputs.push(JSON.parse(result.stdout) as { file: string; exports: string[] })
    }
    const [node, browser] = outputs
    expect(node!.file).toBe('dist/client.js')
    expect(browser!.file).toBe('dist/client.browser.mjs')
    expect(browser!.exports).toEqual(node!.exports)
    expect(node!.exports).toEqual(expect.arrayContaining(['CallError', 'ConnectError', 'Registry', 'WebSocketPeer', 'connect', 'contract']))
  })

  it('is typed for strict TypeScript through both the import and the require condition', async () => {
    const files: Record<string, string> = {
      // ESM: resolved through the "import" condition.
      'typed.mts': `import { serve, connect, Keypair, Registry, Type, CallError, type Static } from '@alkdev/alknet'

const Add = Type.Object({ a: Type.Number(), b: Type.Number() })
const ops = new Registry().query('math/add', { input: Add, output: Type.Number() }, ({ a, b }) => a + b)
// @ts-expect-error: the schema makes \`a\` a number, which has no toUpperCase
new Registry().query('text/upper', { input: Add, output: Type.String() }, ({ a }) => a.toUpperCase())
// @ts-expect-error: the output schema says number
new Registry().query('math/text', { input: Add, output: Type.Number() }, () => 'three')
// @ts-expect-error: \`b\` is required by the schema
export const partial: Static<typeof Add> = { a: 1 }

export async function add(input: Static<typeof Add>): Promise<number> {
  const node = await serve({ listen: '127.0.0.1:0', key: Keypair.generate(), operations: ops })
  const fingerprint: string = node.fingerprint
  const peer = await connect({ address: node.address, fingerprint, key: Keypair.generate() })
  try {
    return await peer.call<number>('math/add', input)
  } catch (e) {
    if (e instanceof CallError) throw new Error(\`\${e.code} (retryable: \${String(e.retryable)})\`)
    throw e
  } finally {
    await peer.close()
    await node.close()
  }
}
`,
      // CommonJS: resolved through the "require" condition.
      'typed.cts': `import alknet = require('@alkdev/alknet')

const key: alknet.Keypair = alknet.Keypair.generate()
export const fingerprint: string = key.fingerprint
export const ops = new alknet.Registry().query(
  'math/neg',
  { input: alknet.Type.Object({ x: alknet.Type.Integer() }), output: alknet.Type.Integer() },
  // @ts-expect-error: \`x\` is a number by the schema, not a string
  ({ x }: { x: string }) => -Number(x),
)
`,
      // The browser client's export, typed like the native Peer.
      'client.mts': `import { connect, contract, CallError, type TopicMessage } from '@alkdev/alknet/client'

const ops = contract<{ 'math/add': { kind: 'query'; input: { a: number; b: number }; output: number } }>({ 'math/add': 'query' })
export async function add(url: string): Promise<number> {
  const peer = await connect({ url, token: 't' })
  const api = peer.typed(ops)
  // @ts-expect-error: \`b\` is a number by the contract
  void api.math.add({ a: 1, b: 'two' })
  for await (const m of peer.topic<string>('chat/>')) {
    const message: TopicMessage<string> = m
    if (message.data.length > 0) break
  }
  try {
    return await api.math.add({ a: 1, b: 2 })
  } catch (e) {
    if (e instanceof CallError) throw new Error(e.code)
    throw e
  } finally {
    await peer.close()
  }
}
`,
      // The control: without @ts-expect-error the same mistake must be reported, where it is.
      'wrong.mts': `import { Registry, Type } from '@alkdev/alknet'

new Registry().query('text/upper', { input: Type.Object({ a: Type.Number() }), output: Type.String() }, ({ a }) => a.toUpperCase())
`,
    }
    for (const [name, source] of Object.entries(files)) await writeFile(path.join(project, name), source)
    const tsc = await run(
      process.execPath,
      [
        path.join(repoRoot, 'node_modules/typescript/bin/tsc'),
        '--strict', '--noEmit', '--pretty', 'false',
        '--target', 'es2022', '--lib', 'es2022',
        '--module', 'nodenext', '--moduleResolution', 'nodenext',
        // @types/node from the repository (the package's types use AbortSignal).
        '--typeRoots', path.join(repoRoot, 'node_modules/@types'), '--types', 'node',
        ...Object.keys(files),
      ],
      { cwd: project, env },
    )
    const column = files['wrong.mts']!.split('\n')[2]!.indexOf('toUpperCase') + 1
    expect(tsc.stdout.trim().split('\n')).toEqual([
      `wrong.mts(3,${column}): error TS2339: Property 'toUpperCase' does not exist on type 'number'.`,
    ])
    expect(tsc.code, explain(tsc)).toBe(2)
    // Runs tsc over the whole package: slow on a loaded 2-core machine, so no tight limit here.
  }, 120_000)

  it('runs the alknet command through the installed bin', async () => {
    const bin = path.join(project, 'node_modules/.bin/alknet')
    const version = await run(bin, ['--version'], { cwd: project, env })
    expect(version.code, explain(version)).toBe(0)
    expect(version.stdout.trim()).toBe(`alknet ${manifest.version}`)
    const keygen = await run(bin, ['keygen', '-o', 'node.key'], { cwd: project, env })
    expect(keygen.code, explain(keygen)).toBe(0)
    expect(keygen.stdout).toMatch(/^ed25519:[0-9a-f]{64}$/m)
  })

  it('declares every prebuilt target as an optional dependency with an npm/ package', async () => {
    const targets = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64', 'win32-x64-msvc']
    const full = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string; optionalDependencies: Record<string, string> }
    expect(full.optionalDependencies).toEqual(Object.fromEntries(targets.map((t) => [`${manifest.name}-${t}`, full.version])))
    for (const target of targets) {
      const m = JSON.parse(await readFile(path.join(repoRoot, 'npm', target, 'package.json'), 'utf8')) as { name: string; version: string; main: string }
      expect(m).toMatchObject({ name: `${manifest.name}-${target}`, version: full.version, main: `${manifest.napi.binaryName}.${target}.node` })
    }
  })

  it('has an npm/ platform package for the binary the loader looks for', async () => {
    const platformManifest = JSON.parse(await readFile(path.join(repoRoot, 'npm', platform, 'package.json'), 'utf8')) as Record<string, unknown>
    expect(platformManifest).toMatchObject({ name: `${manifest.name}-${platform}`, main: binary, files: [binary], os: ['linux'], cpu: ['x64'], libc: ['glibc'] })
    // The napi-generated loader tries the binary next to it first, then this package.
    const loader = await readFile(path.join(project, 'node_modules/@alkdev/alknet/index.js'), 'utf8')
    expect(loader).toContain(`require('./${binary}')`)
    expect(loader).toContain(`require('${manifest.name}-${platform}')`)
  })
})
