// The HTTP side of fromOpenAPI: building a request from an operation's input, mapping the
// answer (status → contract code, body → output), reading a text/event-stream.
import { createParser } from 'eventsource-parser'
import { isObject } from './bridge'
import { CallError } from './errors'

/** A parameter as the bridge forwards it. @internal */
export interface HttpParameter {
  name: string
  in: 'path' | 'query' | 'header'
  style?: string
  explode?: boolean
}

/** How one operation is forwarded. @internal */
export interface HttpRoute {
  method: string
  /** The path template, e.g. `/pets/{petId}`. */
  path: string
  parameters: HttpParameter[]
  /** The request body's media type, when the operation takes one. */
  bodyType?: string
}

/** Credentials for one upstream request: extra headers and query parameters. */
export interface UpstreamCredentials {
  /** Headers to send, e.g. `{ authorization: 'Bearer …' }`. */
  headers?: Record<string, string>
  /** Query parameters to send, e.g. `{ api_key: '…' }`. */
  query?: Record<string, string>
}

/** Declared error codes of every imported operation (besides the contract's own codes). @internal */
export const DECLARED_ERRORS = [
  { code: 'HTTP_NOT_FOUND', description: 'the HTTP API answered 404 or 410: the resource does not exist' },
  { code: 'HTTP_ERROR', description: 'the HTTP API answered another 4xx status; details: { status, body }' },
  { code: 'UPSTREAM_ERROR', description: 'the HTTP API failed (500, 501, other 5xx or an unexpected status); details: { status }' },
]

/**
 * HTTP status → contract code. `undefined` (2xx) is success. The table is documented in
 * docs/bridges.md and tested row by row.
 * @internal
 */
export function statusCode(status: number): { code: string; retryable: boolean } | undefined {
  if (status >= 200 && status < 300) return undefined
  switch (status) {
    case 400:
    case 422:
      return { code: 'INVALID_INPUT', retryable: false }
    case 401:
      return { code: 'UNAUTHENTICATED', retryable: false }
    case 403:
      return { code: 'FORBIDDEN', retryable: false }
    case 404:
    case 410:
      return { code: 'HTTP_NOT_FOUND', retryable: false }
    case 408:
    case 504:
      return { code: 'TIMEOUT', retryable: true }
    case 429:
      return { code: 'OVERLOADED', retryable: true }
    case 502:
    case 503:
      return { code: 'UNAVAILABLE', retryable: true }
  }
  if (status >= 400 && status < 500) return { code: 'HTTP_ERROR', retryable: false }
  return { code: 'UPSTREAM_ERROR', retryable: false }
}

/** Bytes of an upstream error body passed on in `details` (4xx only). */
const DETAIL_CHARS = 4096

/** The CallError for a non-2xx answer; a 4xx body is the API's answer to the caller's own input, so it is passed on. @internal */
export async function statusError(response: Response, where: string): Promise<CallError> {
  const mapped = statusCode(response.status) ?? { code: 'UPSTREAM_ERROR', retryable: false }
  const message = `${where} answered HTTP ${response.status}`
  if (response.status >= 500 || response.status < 400) {
    // 5xx bodies may carry the server's internals (stack traces); only the status crosses.
    await response.body?.cancel().catch(() => {})
    return new CallError(mapped.code, message, { retryable: mapped.retryable, details: { status: response.status } })
  }
  const text = (await response.text().catch(() => '')).slice(0, DETAIL_CHARS)
  let body: unknown = text
  try {
    body = text === '' ? null : JSON.parse(text)
  } catch {
    /* not JSON: passed on as text */
  }
  return new CallError(mapped.code, message, { retryable: mapped.retryable, details: { status: response.status, body } })
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : typeof value === 'object' ? JSON.stringify(value) : String(value)
}

/** Adds a query parameter in its OpenAPI style (form, explode by default; deepObject; delimited). */
function addQuery(query: URLSearchParams, p: HttpParameter, value: unknown): void {
  const style = p.style ?? 'form'
  const explode = p.explode ?? style === 'form'
  if (Array.isArray(value)) {
    if (explode) for (const v of value) query.append(p.name, text(v))
    else query.append(p.name, value.map(text).join(style === 'spaceDelimited' ? ' ' : style === 'pipeDelimited' ? '|' : ','))
  } else if (isObject(value)) {
    const entries = Object.entries(value)
    if (style === 'deepObject') for (const [k, v] of entries) query.append(`${p.name}[${k}]`, text(v))
    else if (explode) for (const [k, v] of entries) query.append(k, text(v))
    else query.append(p.name, entries.flatMap(([k, v]) => [k, text(v)]).join(','))
  } else {
    query.append(p.name, text(value))
  }
}

function simple(value: unknown): string {
  if (Array.isArray(value)) return value.map(text).join(',')
  if (isObject(value)) return Object.entries(value).flatMap(([k, v]) => [k, text(v)]).join(',')
  return text(value)
}

/** The request for `input` (already validated against the operation's input schema). @internal */
export function buildRequest(
  baseUrl: string,
  route: HttpRoute,
  input: Record<string, unknown>,
  staticHeaders: Record<string, string>,
  credentials: UpstreamCredentials | undefined,
): { url: string; init: RequestInit } {
  let path = route.path
  const query = new URLSearchParams()
  const headers = new Headers(staticHeaders)
  for (const p of route.parameters) {
    const value = input[p.name]
    if (value === undefined) continue
    if (p.in === 'path') path = path.split(`{${p.name}}`).join(encodeURIComponent(simple(value)))
    else if (p.in === 'query') addQuery(query, p, value)
    else headers.set(p.name, simple(value))
  }
  for (const [k, v] of Object.entries(credentials?.headers ?? {})) headers.set(k, v)
  for (const [k, v] of Object.entries(credentials?.query ?? {})) query.set(k, v)
  let body: string | undefined
  if (route.bodyType !== undefined && input.body !== undefined) {
    headers.set('content-type', route.bodyType)
    if (route.bodyType === 'application/x-www-form-urlencoded') {
      const form = new URLSearchParams()
      for (const [k, v] of Object.entries(isObject(input.body) ? input.body : {})) form.append(k, text(v))
      body = form.toString()
    } else {
      body = route.bodyType.startsWith('text/') ? text(input.body) : JSON.stringify(input.body)
    }
  }
  const qs = query.toString()
  const url = baseUrl.replace(/\/+$/, '') + path + (qs === '' ? '' : `?${qs}`)
  return { url, init: { method: route.method.toUpperCase(), headers, body } }
}

/** Whether a media type is JSON (`application/json`, `application/problem+json`, …). @internal */
export function isJson(mediaType: string): boolean {
  const type = mediaType.split(';')[0]?.trim().toLowerCase() ?? ''
  return type === 'application/json' || type.endsWith('+json')
}

/** A 2xx answer's body as the operation's output: JSON parsed, text as a string, nothing as `null`. @internal */
export async function responseOutput(response: Response): Promise<unknown> {
  const body = await response.text()
  if (body === '') return null
  const type = response.headers.get('content-type') ?? ''
  return isJson(type) ? JSON.parse(body) : body
}

/** One server-sent event, the item type of an imported `text/event-stream` operation. */
export interface SseEvent {
  /** The `event:` field, if the server sent one. */
  event?: string
  /** The `id:` field, if the server sent one. */
  id?: string
  /** The `data:` field, parsed as JSON when it is JSON, else the text. */
  data: unknown
}

/** The events of a `text/event-stream` answer, until it ends or `signal` aborts. @internal */
export async function* sseEvents(response: Response): AsyncGenerator<SseEvent> {
  const body = response.body
  if (body === null) return
  const reader = body.getReader()
  const decoder = new TextDecoder()
  const queue: SseEvent[] = []
  const parser = createParser({
    onEvent: (e) => {
      let data: unknown = e.data
      try {
        data = JSON.parse(e.data)
      } catch {
        /* plain text data */
      }
      const item: SseEvent = { data }
      if (e.event !== undefined) item.event = e.event
      if (e.id !== undefined) item.id = e.id
      queue.push(item)
    },
  })
  try {
    for (;;) {
      const chunk = await reader.read()
      if (chunk.done) break
      parser.feed(decoder.decode(chunk.value, { stream: true }))
      while (queue.length > 0) yield queue.shift() as SseEvent
    }
    parser.feed(decoder.decode())
    while (queue.length > 0) yield queue.shift() as SseEvent
  } finally {
    await reader.cancel().catch(() => {})
  }
}
