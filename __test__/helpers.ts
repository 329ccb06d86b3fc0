import { createRequire } from 'node:module'

// The compiled package, loaded by Node itself (CommonJS + the native addon), as users load it.
const require = createRequire(import.meta.url)
export const alknet: typeof import('../dist/index.js') = require('../dist/index.js')

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it holds or `ms` pass. */
export async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time')
    await sleep(10)
  }
}
