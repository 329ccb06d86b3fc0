// The call protocol's envelope as the TypeScript carriers (the WebSocket client) write and read
// it, against CALL-PROTOCOL.md: its example bytes, and what counts as a protocol violation.
import { describe, expect, it } from 'vitest'
import { EnvelopeError, decodeEnvelope, encodeEnvelope, requestEnvelope } from '../src-ts/envelope'

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const bytes = (s: string) => new TextEncoder().encode(s)

describe('envelope', () => {
  it('encodes a call of math/add exactly as the protocol example (94 bytes, leading slash on the wire)', () => {
    const encoded = encodeEnvelope(requestEnvelope('1', 'math/add', { a: 1, b: 2 }))
    expect(text(encoded)).toBe('{"type":"call.requested","id":"1","payload":{"operationId":"/math/add","input":{"a":1,"b":2}}}')
    expect(encoded.length).toBe(0x5e)
  })

  it('carries a per-request token and deadline in snake_case, and a missing input as null', () => {
    expect(requestEnvelope('7', 'who/ami', undefined, { token: 't', timeoutMs: 250 }).payload).toEqual({
      operationId: '/who/ami',
      input: null,
      auth_token: 't',
      timeout_ms: 250,
    })
  })

  it('reads the protocol example answer, keeping unknown payload fields', () => {
    expect(decodeEnvelope(bytes('{"type":"call.responded","id":"1","payload":{"output":3,"later":true}}'))).toEqual({
      type: 'call.responded',
      id: '1',
      payload: { output: 3, later: true },
    })
  })

  it('reads an envelope of an unknown type (the receiver ignores it; later versions may add types)', () => {
    expect(decodeEnvelope(bytes('{"type":"call.progress","id":"1","payload":{}}')).type).toBe('call.progress')
  })

  it.each([
    ['invalid JSON', '{"type":'],
    ['JSON that is not an object', '[1,2]'],
    ['a missing type', '{"id":"1","payload":{}}'],
    ['a type that is not a string', '{"type":1,"id":"1","payload":{}}'],
    ['an id that is not a string', '{"type":"call.responded","id":1,"payload":{}}'],
    ['an empty id', '{"type":"call.responded","id":"","payload":{}}'],
    ['an id over 128 bytes', `{"type":"call.responded","id":"${'é'.repeat(65)}","payload":{}}`],
    ['a missing payload', '{"type":"call.completed","id":"1"}'],
    ['a payload that is an array', '{"type":"call.completed","id":"1","payload":[]}'],
    ['a null payload', '{"type":"call.completed","id":"1","payload":null}'],
  ])('refuses %s as a protocol violation', (_what, json) => {
    expect(() => decodeEnvelope(bytes(json))).toThrow(EnvelopeError)
  })

  it('refuses bytes that are not UTF-8', () => {
    expect(() => decodeEnvelope(new Uint8Array([0x7b, 0xff, 0x7d]))).toThrow(/UTF-8/)
  })

  it('accepts an id of exactly 128 bytes', () => {
    expect(decodeEnvelope(bytes(`{"type":"call.completed","id":"${'x'.repeat(128)}","payload":{}}`)).id).toHaveLength(128)
  })
})
