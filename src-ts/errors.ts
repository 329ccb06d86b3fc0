/**
 * The error codes the call protocol defines, each with whether a retry may succeed. The Rust
 * side's list is the source; `__test__/wire.test.ts` checks this copy against it.
 */
export const PROTOCOL_ERRORS = {
  NOT_FOUND: false,
  UNAUTHENTICATED: false,
  FORBIDDEN: false,
  INVALID_INPUT: false,
  INVALID_OPERATION_TYPE: false,
  TIMEOUT: true,
  CANCELLED: false,
  OVERLOADED: true,
  UNAVAILABLE: true,
  INTERNAL: false,
} as const

/** The error codes the call protocol defines; handlers may declare their own codes too. */
export type ProtocolErrorCode = keyof typeof PROTOCOL_ERRORS

/** A protocol code or a code an operation declared (`string & {}` keeps editor completion). */
export type ErrorCode = ProtocolErrorCode | (string & {})

function retryableCode(code: string): boolean {
  return Object.hasOwn(PROTOCOL_ERRORS, code) && PROTOCOL_ERRORS[code as ProtocolErrorCode]
}

/**
 * A failed call, as a value with a code: switch on `code`, never on `message`.
 *
 * Handlers throw it to fail with a declared code; callers receive it from `call`/`subscribe`.
 *
 * @example
 * ```ts
 * try { await peer.call('todo/create', {}) }
 * catch (e) { if (e instanceof CallError && e.code === 'FORBIDDEN') { … } }
 * ```
 */
export class CallError extends Error {
  /** `NOT_FOUND`, `INVALID_INPUT`, … or a code the operation declared. */
  readonly code: ErrorCode
  /** Whether the same request may succeed if sent again later. */
  readonly retryable: boolean
  /** Structured details, e.g. `{ errors: [{ path, message }] }` for `INVALID_INPUT`. */
  readonly details: unknown

  /**
   * @param code - the error code
   * @param message - a human explanation that says what to do
   * @param options - `retryable` (default: from the code) and `details`
   */
  constructor(code: ErrorCode, message: string, options: { retryable?: boolean; details?: unknown } = {}) {
    super(message)
    this.name = 'CallError'
    this.code = code
    this.retryable = options.retryable ?? retryableCode(code)
    this.details = options.details
  }

  /** The wire shape, `{ code, message, retryable, details? }`. */
  toJSON(): { code: string; message: string; retryable: boolean; details?: unknown } {
    const json: { code: string; message: string; retryable: boolean; details?: unknown } = {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
    }
    if (this.details !== undefined) json.details = this.details
    return json
  }
}

/**
 * Why connecting or starting failed, apart from call errors:
 *
 * | code | meaning |
 * |---|---|
 * | `PIN_MISMATCH` | the node presented another key than the one pinned (`details.expected`, `details.presented`) |
 * | `UNREACHABLE` | nothing answers at the address (connection refused, ICMP unreachable) |
 * | `CONNECT_TIMEOUT` | no carrier completed within `connectTimeoutMs` |
 * | `TLS_FAILED` | the handshake failed otherwise (no common protocol, certificate files) |
 * | `REFUSED` | the node refused the connection (it is shutting down) |
 * | `INVALID_OPTION` | an option is unknown or invalid (the message names it) |
 * | `ADDRESS_IN_USE` | `serve()`: the port is taken |
 * | `KEY_FILE` | a key file is unreadable, malformed or readable by others |
 * | `UNAVAILABLE` | `serve()` with iroh: the relay could not be reached |
 */
export type ConnectErrorCode =
  | 'PIN_MISMATCH'
  | 'UNREACHABLE'
  | 'CONNECT_TIMEOUT'
  | 'TLS_FAILED'
  | 'REFUSED'
  | 'INVALID_OPTION'
  | 'ADDRESS_IN_USE'
  | 'KEY_FILE'
  | 'UNAVAILABLE'

/**
 * A failure to connect, start a node or load a key, with a stable `code` to switch on.
 *
 * @example
 * ```ts
 * try { await connect({ address, fingerprint, key }) }
 * catch (e) { if (e instanceof ConnectError && e.code === 'PIN_MISMATCH') console.error(e.details) }
 * ```
 */
export class ConnectError extends Error {
  /** What failed; see {@link ConnectErrorCode}. */
  readonly code: ConnectErrorCode
  /** Structured details, e.g. `{ expected, presented }` for `PIN_MISMATCH`. */
  readonly details: unknown

  /**
   * @param code - the error code
   * @param message - a human explanation that says what to do
   * @param details - structured details
   */
  constructor(code: ConnectErrorCode, message: string, details?: unknown) {
    super(message)
    this.name = 'ConnectError'
    this.code = code
    this.details = details
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

/** A call error from its wire shape (a `call.error` payload); `undefined` if `value` is not one. @internal */
export function callErrorFrom(value: unknown): CallError | undefined {
  if (!isRecord(value) || typeof value.code !== 'string') return undefined
  return new CallError(value.code, typeof value.message === 'string' ? value.message : value.code, {
    retryable: typeof value.retryable === 'boolean' ? value.retryable : undefined,
    details: value.details,
  })
}

/** Parses a JSON-encoded call error; `undefined` if `json` is not one. @internal */
export function parseCallError(json: string): CallError | undefined {
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    return undefined
  }
  return callErrorFrom(value)
}

/** A JSON-encoded connect error of the native layer; `undefined` if `json` is not one. */
function parseConnectError(json: string): ConnectError | undefined {
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    return undefined
  }
  if (!isRecord(value) || value.kind !== 'connect' || typeof value.code !== 'string') return undefined
  const details = value.details === null ? undefined : value.details
  return new ConnectError(value.code as ConnectErrorCode, String(value.message), details)
}

/** Turns a rejection of the native binding into a `CallError` or `ConnectError` when it carries one. @internal */
export function fromNative(error: unknown): unknown {
  if (error instanceof ConnectError) return error
  if (error instanceof Error) return parseConnectError(error.message) ?? parseCallError(error.message) ?? error
  return error
}
