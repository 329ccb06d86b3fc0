// `npm run example:mcp` runs as documented: an MCP client reaches an MCP server on another node
// only through alknet, by key.
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { explain, repoRoot, run } from './processes'

it('examples/mcp-over-alknet runs end to end', async () => {
  const out = await run(process.execPath, [join(repoRoot, 'examples/mcp-over-alknet/run.mjs')], { cwd: repoRoot })
  expect(out.code, explain(out)).toBe(0)
  expect(out.stdout, explain(out)).toMatch(/node A serves its MCP tools on 127\.0\.0\.1:\d+ as ed25519:[0-9a-f]{64}/)
  expect(out.stdout).toContain('everything__echo → Echo: hello over alknet')
  expect(out.stdout).toContain('everything__get_sum → The sum of 19 and 23 is 42.')
}, 60_000)
