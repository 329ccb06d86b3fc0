// Node A: runs an MCP server (the reference server-everything, over stdio) and serves its tools
// on alknet. Only the key given as ALKNET_CLIENT_FINGERPRINT may call them (scope `mcp`).
// Prints `READY <address> <fingerprint>` once it listens; stops on SIGTERM or when stdin closes.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { fromMCP, serve, Keypair } = require('../../dist/index.js')

const client = process.env.ALKNET_CLIENT_FINGERPRINT
if (!client) throw new Error('set ALKNET_CLIENT_FINGERPRINT to the fingerprint of the key allowed to call')

const tools = await fromMCP(
  { command: process.execPath, args: [require.resolve('@modelcontextprotocol/server-everything/dist/index.js'), 'stdio'], stderr: 'ignore' },
  { namespace: 'everything', access: { requiredScopes: ['mcp'] }, onUnsupported: (i) => console.error(`node A: not imported: ${i.message}`) },
)
const node = await serve({
  listen: '127.0.0.1:0',
  key: Keypair.generate(),
  operations: tools,
  auth: { peers: [{ id: 'node-b', fingerprints: [client], scopes: ['mcp'] }] },
})
console.log(`READY ${node.address} ${node.fingerprint}`)

const stop = async () => {
  await node.close()
  await tools.close()
}
process.once('SIGTERM', stop)
process.stdin.on('end', stop).resume()
