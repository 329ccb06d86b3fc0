import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** The repository root. */
export const repoRoot = fileURLToPath(new URL('..', import.meta.url))

/** How a child process ended, with everything it printed. */
export interface Finished {
  /** The exit code, or `null` if a signal ended it. */
  code: number | null
  stdout: string
  stderr: string
}

/** Options of {@link run}. */
export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
}

/** Runs `command` to its end and collects its output; resolves on any exit code (assert on `code`). */
export function run(command: string, args: string[], options: RunOptions = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** A one-line account of a finished process, for assertion messages. */
export const explain = (f: Finished): string => `exit ${f.code}\n--- stdout\n${f.stdout}\n--- stderr\n${f.stderr}`
