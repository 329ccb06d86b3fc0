// npm run example:mcp — node A (MCP server behind alknet) as a child process, node B (MCP client
// reaching it only through alknet, by key) in this process. Needs `npm run build` once.
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { runClient } from './mcp-client.mjs'

const require = createRequire(import.meta.url)
const { Keypair } = require('../../dist/index.js')

const dir = await mkdtemp(join(tmpdir(), 'alknet-mcp-example-'))
const keyPath = join(dir, 'node-b.key')
const keyB = await Keypair.loadOrCreate(keyPath)

const nodeA = spawn(process.execPath, [fileURLToPath(new URL('./mcp-node.mjs', import.meta.url))], {
  env: { ...process.env, ALKNET_CLIENT_FINGERPRINT: keyB.fingerprint },
  stdio: ['pipe', 'pipe', 'inherit'],
})
try {
  const ready = await new Promise((resolve, reject) => {
    nodeA.once('exit', (code) => reject(new Error(`node A exited (${code}) before it was ready`)))
    createInterface({ input: nodeA.stdout }).on('line', (line) => {
      if (line.startsWith('READY ')) resolve(line.split(' '))
    })
  })
  const [, address, fingerprint] = ready
  console.log(`node A serves its MCP tools on ${address} as ${fingerprint}`)
  await runClient({ address, fingerprint, keyPath })
} finally {
  nodeA.stdin.end()
  await new Promise((resolve) => (nodeA.exitCode !== null ? resolve() : nodeA.once('exit', resolve)))
  await rm(dir, { recursive: true, force: true })
}
