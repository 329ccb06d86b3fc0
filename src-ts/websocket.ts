// The WebSocket the client uses in Node.js: the global one (Node ≥ 22) or else the `ws` package,
// loaded only then. The browser bundle resolves this module to `./websocket.browser`
// (scripts/build-client.mjs), so a browser never sees `ws`.
import { ConnectError } from './errors'
import { type WebSocketLike, globalWebSocket } from './websocket.browser'

export type { WebSocketLike } from './websocket.browser'

/**
 * A WebSocket to `url` offering `protocols`, not yet open. With `ca` (PEM) the `ws` package
 * carries it, trusting those certificates; otherwise the global WebSocket if there is one.
 * @internal
 */
export async function createWebSocket(url: string, protocols: string[], ca?: string): Promise<WebSocketLike> {
  const own = ca === undefined ? globalWebSocket() : undefined
  if (own !== undefined) return new own(url, protocols)
  const ws = await import('ws').catch(() => {
    throw new ConnectError('INVALID_OPTION', 'this Node.js has no global WebSocket and the `ws` package is not installed: npm install ws')
  })
  return new ws.WebSocket(url, protocols, { ca }) as unknown as WebSocketLike
}
