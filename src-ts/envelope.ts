// The call protocol's envelope (`../shared/design/CALL-PROTOCOL.md`, "Envelope") for carriers
// written in TypeScript: the WebSocket client sends and reads these, one per binary message.
// Pure: no I/O, nothing native.
import type { RequestOptions } from './call'

/** The five envelope types of version 1. */
export type EnvelopeType = 'call.requested' | 'call.responded' | 'call.completed' | 'call.aborted' | 'call.error'

/** One envelope: `type` (unknown types are ignored by receivers), the request `id`, a `payload` object. @internal */
export interface Envelope {
  type: string
  id: string
  payload: Record<string, unknown>
}

/** The longest request id the protocol allows, in UTF-8 bytes. */
const MAX_ID_BYTES = 128

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/** Why bytes received are not an envelope: a protocol violation, the connection ends. @internal */
export class EnvelopeError extends Error {
  /** @param message - what is wrong with the bytes */
  constructor(message: string) {
    super(message)
    this.name = 'EnvelopeError'
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The `call.requested` envelope of a request: the operation gets its leading slash on the wire. @internal */
export function requestEnvelope(id: string, operation: string, input: unknown, options?: RequestOptions): Envelope {
  const payload: Record<string, unknown> = { operationId: operation.startsWith('/') ? operation : `/${operation}`, input: input ?? null }
  if (options?.token !== undefined) payload.auth_token = options.token
  if (options?.timeoutMs !== undefined) payload.timeout_ms = options.timeoutMs
  return { type: 'call.requested', id, payload }
}

/** An envelope of `type` for `id` with an empty or given payload. @internal */
export function envelope(type: EnvelopeType, id: string, payload: Record<string, unknown> = {}): Envelope {
  return { type, id, payload }
}

/** The UTF-8 JSON of an envelope: the content of one binary WebSocket message. @internal */
export function encodeEnvelope(value: Envelope): Uint8Array {
  return encoder.encode(JSON.stringify(value))
}

/**
 * Reads one envelope from UTF-8 JSON. Throws an {@link EnvelopeError} for invalid UTF-8, invalid
 * JSON, or JSON that is not an envelope (missing or mistyped `type`, `id`, `payload`; an `id` of 0
 * or more than 128 bytes). Unknown payload fields are kept; unknown types are the caller's to ignore.
 * @internal
 */
export function decodeEnvelope(bytes: Uint8Array): Envelope {
  let value: unknown
  try {
    value = JSON.parse(decoder.decode(bytes))
  } catch (e) {
    throw new EnvelopeError(`not UTF-8 JSON: ${(e as Error).message}`)
  }
  if (!isObject(value)) throw new EnvelopeError('not a JSON object')
  const { type, id, payload } = value
  if (typeof type !== 'string') throw new EnvelopeError('"type" is missing or not a string')
  if (typeof id !== 'string') throw new EnvelopeError('"id" is missing or not a string')
  const idBytes = encoder.encode(id).length
  if (idBytes === 0 || idBytes > MAX_ID_BYTES) throw new EnvelopeError(`"id" must be 1 to ${MAX_ID_BYTES} bytes, not ${idBytes}`)
  if (!isObject(payload)) throw new EnvelopeError('"payload" is missing or not an object')
  return { type, id, payload }
}
