#!/usr/bin/env node
// `npx @alkdev/alknet <subcommand>`: the `alknet` command (keygen, serve, call, relay, …), run by
// the native addon, so Node users need no second install. Same flags and exit codes as the binary.
import { cliSignal, runCli } from '../index.js'

// Node owns this process's signal handlers: the command gets SIGHUP (reload), SIGTERM and SIGINT
// (drain; a second one stops at once) from here.
const signals = ['SIGHUP', 'SIGTERM', 'SIGINT'] as const
for (const signal of signals) process.on(signal, () => cliSignal(signal))

runCli(process.argv.slice(2)).then(
  (code) => {
    for (const signal of signals) process.removeAllListeners(signal)
    process.exitCode = code
  },
  (e: unknown) => {
    process.stderr.write(`alknet: ${(e as Error).message}\n`)
    process.exit(2)
  },
)
