// `npx @alkdev/alknet <subcommand>`: the package's `alknet` bin runs the Rust command through the
// addon. The same operator quick start as the Rust tests (keygen, a config, serve, call), in real
// child processes of `node dist/cli.js`.
import { afterEach, describe, expect, it } from 'vitest'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { explain, repoRoot, run } from './processes'

const cli = path.join(repoRoot, 'dist', 'cli.js')
const env = { ...process.env, XDG_CONFIG_HOME: '/nonexistent-alknet-test-config' }
const alknet = (dir: string, ...args: string[]) => run(process.execPath, [cli, ...args], { cwd: dir, env })

let dir = ''
let server: ChildProcessWithoutNullStreams | undefined

afterEach(async () => {
  server?.kill('SIGKILL')
  server = undefined
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** Starts `alknet serve` and resolves with its address and fingerprint once it prints `listening on`. */
async function serve(cwd: string): Promise<{ address: string; fingerprint: string; child: ChildProcessWithoutNullStreams }> {
  const child = spawn(process.execPath, [cli, 'serve', '--config', 'alknet.toml'], { cwd, env })
  server = child
  let fingerprint = ''
  for await (const line of createInterface({ input: child.stdout })) {
    if (line.startsWith('fingerprint ')) fingerprint = line.slice('fingerprint '.length)
    if (line.startsWith('listening on ')) return { address: line.split(' ')[2]!, fingerprint, child }
  }
  throw new Error('alknet serve ended before listening')
}

describe('npx @alkdev/alknet', () => {
  it('runs keygen, serve and call from the package bin, with the exit codes of the binary', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'alknet-cli-'))
    const keygen = await alknet(dir, 'keygen', '-o', 'node.key')
    expect(keygen.code, explain(keygen)).toBe(0)
    expect((await stat(path.join(dir, 'node.key'))).mode & 0o777).toBe(0o600)
    expect((await alknet(dir, 'keygen', '-o', 'node.key')).code).toBe(2)

    await writeFile(path.join(dir, 'alknet.toml'), 'listen = "127.0.0.1:0"\nkey_file = "node.key"\n')
    const node = await serve(dir)
    expect(node.fingerprint).toBe(keygen.stdout.trim())
    const call = await alknet(dir, 'call', node.address, 'services/list', '--fingerprint', node.fingerprint)
    expect(call.code, explain(call)).toBe(0)
    const names = (JSON.parse(call.stdout) as { operations: { name: string }[] }).operations.map((op) => op.name)
    expect(names).toContain('services/list')
    const missing = await alknet(dir, 'call', node.address, 'no/such', '--fingerprint', node.fingerprint)
    expect(missing.code, explain(missing)).toBe(1)
    expect(missing.stderr).toContain('NOT_FOUND')

    node.child.kill('SIGTERM')
    const [code] = (await once(node.child, 'exit')) as [number | null]
    expect(code).toBe(0)
  })

  it('prints usage and exits 2 on a bad command line', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'alknet-cli-'))
    const out = await alknet(dir, 'no-such-command')
    expect(out.code).toBe(2)
    expect(out.stderr).toContain('Usage')
  })
})
