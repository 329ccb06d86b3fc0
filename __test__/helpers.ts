import { createRequire } from 'node:module'

// The compiled package, loaded by Node itself (CommonJS + the native addon), as users load it.
const require = createRequire(import.meta.url)
export const alknet: typeof import('../dist/index.js') = require('../dist/index.js')
