// The browser client's bundle (scripts/build-client.mjs → dist/client.browser.mjs): one ES module
// that imports nothing: no native addon, no `ws`, no Node.js builtin.
import { describe, expect, it } from 'vitest'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { explain, repoRoot, run } from './processes'

interface Metafile {
  inputs: Record<string, unknown>
  outputs: Record<string, { imports: { path: string; kind: string }[] }>
}

describe('the browser client bundle', () => {
  it('is one ES module built from plain TypeScript that imports nothing native, no ws, no node: builtin', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'alknet-bundle-'))
    try {
      const metaPath = path.join(dir, 'meta.json')
      const built = await run(process.execPath, ['scripts/build-client.mjs', '--metafile', metaPath], { cwd: repoRoot })
      expect(built.code, explain(built)).toBe(0)
      const meta = JSON.parse(await readFile(metaPath, 'utf8')) as Metafile
      const inputs = Object.keys(meta.inputs)
      expect(inputs.length).toBeGreaterThan(0)
      for (const input of inputs) {
        expect(input, 'every input is a TypeScript source of the package').toMatch(/^src-ts\/[\w.-]+\.ts$/)
      }
      expect(inputs).toContain('src-ts/websocket.browser.ts')
      expect(inputs).not.toContain('src-ts/websocket.ts')
      expect(meta.outputs['dist/client.browser.mjs'].imports).toEqual([])

      const code = await readFile(path.join(repoRoot, 'dist/client.browser.mjs'), 'utf8')
      expect(code).not.toMatch(/\brequire\s*\(|\bimport\s*\(|\bfrom\s*["']|\.node["']|["']node:|["']ws["']/)
      expect(code).toMatch(/export\s*\{/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
