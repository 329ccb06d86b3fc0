import { createRequire } from 'node:module'

// The compiled package, loaded by Node itself (CommonJS + the native addon), as users load it.
const require = createRequire(import.meta.url)
export const alknet: typeof import('../dist/index.js') = require('../dist/index.js')

// The browser client's package export (`@alkdev/alknet/client`), compiled, as Node users load it.
export const client: typeof import('../dist/client.js') = require('../dist/client.js')
