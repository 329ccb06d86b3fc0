// Builds the browser client, `dist/client.browser.mjs`: one minified ESM file from
// `src-ts/client.ts`, with `./websocket` resolved to `./websocket.browser` (the browser's own
// WebSocket, never the `ws` package). Prints its size, minified and gzipped.
//
//   node scripts/build-client.mjs [--metafile <path>]   # esbuild's metafile (inputs, imports) there
import { build } from 'esbuild'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const root = fileURLToPath(new URL('..', import.meta.url))
const outfile = `${root}dist/client.browser.mjs`

/** `./websocket` → `./websocket.browser`, for every importer. */
const browserWebSocket = {
  name: 'browser-websocket',
  setup(b) {
    b.onResolve({ filter: /^\.\/websocket$/ }, (args) => ({ path: `${args.resolveDir}/websocket.browser.ts` }))
  },
}

const result = await build({
  entryPoints: [`${root}src-ts/client.ts`],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  plugins: [browserWebSocket],
  logLevel: 'warning',
  metafile: true,
})
const metafileAt = process.argv.indexOf('--metafile')
if (metafileAt > 0) writeFileSync(process.argv[metafileAt + 1], JSON.stringify(result.metafile))

const code = readFileSync(outfile)
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`
console.log(`dist/client.browser.mjs: ${kib(code.length)} minified, ${kib(gzipSync(code).length)} gzipped`)
