// The WebSocket the client uses in a browser: the browser's own, nothing else. The browser bundle
// (scripts/build-client.mjs) resolves `./websocket` to this module; Node.js builds on it.
import { ConnectError } from './errors'

/** The part of the WHATWG WebSocket the client uses: browsers', Node's own, or the `ws` package's. @internal */
export interface WebSocketLike {
  binaryType: string
  readonly protocol: string
  send(data: Uint8Array): void
  close(code?: number, reason?: string): void
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number; reason: string }) => void) | null
  onerror: ((event: { message?: string }) => void) | null
}

type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike

/** The global `WebSocket` constructor, if this runtime has one. @internal */
export function globalWebSocket(): WebSocketConstructor | undefined {
  const { WebSocket } = globalThis as { WebSocket?: WebSocketConstructor }
  return typeof WebSocket === 'function' ? WebSocket : undefined
}

/** A WebSocket to `url` offering `protocols`, not yet open. @internal */
export async function createWebSocket(url: string, protocols: string[], ca?: string): Promise<WebSocketLike> {
  if (ca !== undefined) throw new ConnectError('INVALID_OPTION', '`ca` is for Node.js; a browser trusts the certificates of its own store')
  const own = globalWebSocket()
  if (own === undefined) throw new ConnectError('INVALID_OPTION', 'this runtime has no WebSocket; in Node.js import @alkdev/alknet/client (the package export), not the browser bundle')
  return new own(url, protocols)
}
