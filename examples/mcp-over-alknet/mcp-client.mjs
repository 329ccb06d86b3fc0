// Node B: dials node A by address and pinned fingerprint, turns what it may call there into an
// MCP server (toMCP) and drives it with the official MCP SDK client. The MCP client never talks
// to the MCP server directly: every tool call crosses alknet.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { connect, toMCP, Keypair } = require('../../dist/index.js')
const { Client } = require('@modelcontextprotocol/sdk/client/index.js')
const { InMemoryTransport } = require('@modelcontextprotocol/sdk/inMemory.js')

/** Lists node A's tools and calls two of them through alknet; returns what it printed. */
export async function runClient({ address, fingerprint, keyPath }) {
  const key = await Keypair.loadOrCreate(keyPath)
  const peer = await connect({ address, fingerprint, key })
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair()
  const server = toMCP(peer, { name: 'node-a-via-alknet', include: ['everything/*'] })
  await server.connect(serverSide)
  const client = new Client({ name: 'example', version: '1' })
  await client.connect(clientSide)
  const lines = []
  const say = (line) => {
    lines.push(line)
    console.log(line)
  }
  try {
    const { tools } = await client.listTools()
    say(`node B sees ${tools.length} tools of node A, e.g. ${tools.slice(0, 4).map((t) => t.name).join(', ')}`)
    const echo = await client.callTool({ name: 'everything__echo', arguments: { message: 'hello over alknet' } })
    say(`everything__echo → ${echo.structuredContent.result[0].text}`)
    const sum = await client.callTool({ name: 'everything__get_sum', arguments: { a: 19, b: 23 } })
    say(`everything__get_sum → ${sum.structuredContent.result[0].text}`)
  } finally {
    await client.close()
    await peer.close()
  }
  return lines
}
