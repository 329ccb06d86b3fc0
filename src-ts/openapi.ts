// fromOpenAPI: an HTTP API described by OpenAPI 3.0/3.1 as a Registry whose handlers forward to it.
// The conversion rules (names, kinds, input shape, status table) are documented in docs/bridges.md.
import { Type } from '@sinclair/typebox'
import { type ImportedOperation, type NameFilter, Names, type Report, describeOperations, type Unsupported, type UnsupportedReporter, isObject, reporter, segment, selected } from './bridge'
import { CallError } from './errors'
import {
  DECLARED_ERRORS,
  type HttpParameter,
  type HttpRoute,
  type SseEvent,
  type UpstreamCredentials,
  buildRequest,
  isJson,
  responseOutput,
  sseEvents,
  statusError,
} from './openapi-http'
import { type LoadedDocument, type OpenApiSource, loadDocument } from './openapi-load'
import { type JsonSchema, SchemaConverter, componentNames } from './openapi-schema'
import { type Access, type HandlerContext, type Identity, type OperationMap, type OperationType, Registry } from './registry'

export type { OpenApiSource } from './openapi-load'
export type { SseEvent, UpstreamCredentials } from './openapi-http'

/** An operation of the document, as the name rule and filters see it. */
export interface OpenApiOperationRef {
  /** `get`, `post`, … (lowercase). */
  method: string
  /** The path template, e.g. `/pets/{petId}`. */
  path: string
  /** The document's `operationId`, if it has one. */
  operationId?: string
  /** The operation's tags. */
  tags: string[]
  /** Query, mutation or subscription, by the method → type rule. */
  kind: OperationType
}

/** Who an upstream request is made for: passed to the `credentials` callback. */
export interface UpstreamCall {
  /** The alknet operation, e.g. `pets/list_pets`. */
  operation: string
  /** The caller's identity on the alknet node, or `null` for an anonymous caller. */
  identity: Identity | null
}

/** Options of {@link fromOpenAPI}. */
export interface FromOpenApiOptions {
  /** Where requests go; default: the document's first `servers` URL (relative ones resolve against a URL source). */
  baseUrl?: string
  /** The first name segment of every operation; default: each operation's first tag, else `api`. */
  namespace?: string
  /** A naming rule of your own, replacing the default (`namespace/operation_id`); must return a valid name. */
  name?: (operation: OpenApiOperationRef) => string
  /** Only these operations (alknet names or operationIds; `prefix/*` and regular expressions allowed). */
  include?: NameFilter
  /** Not these operations (same forms as `include`). */
  exclude?: NameFilter
  /** Headers sent with every request (e.g. a service-wide API key). */
  headers?: Record<string, string>
  /**
   * Credentials per call: maps the alknet caller to upstream headers or query parameters (e.g. a
   * bearer token looked up by `identity.id`). Return `undefined` to send none. A throw fails the
   * call (`CallError`s pass through, anything else is `INTERNAL`).
   */
  credentials?: (call: UpstreamCall) => UpstreamCredentials | undefined | Promise<UpstreamCredentials | undefined>
  /** The `fetch` to use (default: the global one), e.g. with a proxy dispatcher or for tracing. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>
  /** Per upstream request: past it the call fails with `TIMEOUT`. The alknet deadline (`ctx.signal`) always applies. */
  timeoutMs?: number
  /** Access rule of every imported operation (default: none, anyone the node admits may call). */
  access?: Access
  /** Validate the document against the OpenAPI schema first (default true). */
  validate?: boolean
  /** Throw instead of reporting when a feature is unsupported (default false). */
  strict?: boolean
  /** Where unsupported features are reported (default: one line each on `console.warn`). */
  onUnsupported?: UnsupportedReporter
}

/**
 * The registry {@link fromOpenAPI} makes: a {@link Registry} whose handlers forward to the HTTP
 * API, with the features it could not carry over.
 */
export class OpenApiRegistry<Ops extends OperationMap = OperationMap> extends Registry<Ops> {
  /** What the import could not carry over, and why (also reported through `onUnsupported`). */
  readonly unsupported: readonly Unsupported[]
  /** Where requests go. */
  readonly baseUrl: string

  /** @internal */
  constructor(baseUrl: string, unsupported: Unsupported[]) {
    super()
    this.baseUrl = baseUrl
    this.unsupported = unsupported
  }

  /** The operations imported, with their schemas: what a node serving this registry offers. */
  describe(): ImportedOperation[] {
    return describeOperations(this.operations)
  }
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

/** Headers OpenAPI says to ignore as parameters (they are set by content negotiation and security). */
const IGNORED_HEADERS = new Set(['accept', 'content-type', 'authorization'])

/** Request media types the bridge can send, in order of preference. */
function pickBodyType(types: string[]): string | undefined {
  return types.find(isJson) ?? types.find((t) => t === 'application/x-www-form-urlencoded') ?? types.find((t) => t.startsWith('text/'))
}

const SSE_ITEM: JsonSchema = {
  type: 'object',
  properties: { event: { type: 'string' }, id: { type: 'string' }, data: {} },
  required: ['data'],
}

function baseUrlOf(loaded: LoadedDocument, given: string | undefined): string {
  if (given !== undefined) return given
  const server = Array.isArray(loaded.document.servers) ? loaded.document.servers[0] : undefined
  let url = isObject(server) && typeof server.url === 'string' ? server.url : ''
  if (isObject(server) && isObject(server.variables)) {
    for (const [name, v] of Object.entries(server.variables)) {
      if (isObject(v) && v.default !== undefined) url = url.split(`{${name}}`).join(String(v.default))
    }
  }
  if (/^https?:\/\//i.test(url)) return url
  if (loaded.url !== undefined) return new URL(url === '' ? '/' : url, loaded.url).href
  throw new Error(
    `fromOpenAPI: the document's servers[0].url is ${url === '' ? 'missing' : `relative (${JSON.stringify(url)})`} ` +
      'and the document was not loaded from a URL; pass the `baseUrl` option',
  )
}

/** One operation of the document, converted: or the reason it cannot be. */
interface Converted {
  route: HttpRoute
  input: JsonSchema
  output: JsonSchema
  description?: string
}

class OperationConverter {
  constructor(
    private readonly openapi30: boolean,
    private readonly components: ReadonlyMap<object, string>,
    private readonly report: Report,
  ) {}

  convert(where: string, op: Record<string, unknown>, pathParams: unknown[], method: string, path: string, sse: boolean): Converted | undefined {
    const schemas = new SchemaConverter(this.openapi30, this.components)
    const properties: Record<string, JsonSchema> = {}
    const required: string[] = []
    const parameters: HttpParameter[] = []
    const byKey = new Map<string, Record<string, unknown>>()
    for (const p of [...pathParams, ...(Array.isArray(op.parameters) ? op.parameters : [])]) {
      if (isObject(p) && typeof p.name === 'string') byKey.set(`${String(p.in)}:${p.name}`, p)
    }
    for (const p of byKey.values()) {
      const name = p.name as string
      const location = String(p.in)
      if (location === 'header' && IGNORED_HEADERS.has(name.toLowerCase())) continue
      if (location !== 'path' && location !== 'query' && location !== 'header') {
        if (p.required === true) return this.skip(where, `${location} parameter ${name}`, `${location} parameters are not supported`)
        this.report(where, `${location} parameter ${name}`, 'part left out', `${location} parameters are not supported`)
        continue
      }
      if (!isObject(p.schema)) {
        if (p.required === true) return this.skip(where, `parameter ${name} with \`content\``, 'only parameters with a `schema` are supported')
        this.report(where, `parameter ${name} with \`content\``, 'part left out', 'only parameters with a `schema` are supported')
        continue
      }
      if (properties[name] !== undefined) {
        return this.skip(where, `parameters named ${name} in two places`, 'the merged input object cannot hold both')
      }
      const schema = schemas.convert(p.schema, 'request')
      if (typeof p.description === 'string' && schema.description === undefined) schema.description = p.description
      properties[name] = schema
      if (p.required === true || location === 'path') required.push(name)
      const param: HttpParameter = { name, in: location }
      if (typeof p.style === 'string') param.style = p.style
      if (typeof p.explode === 'boolean') param.explode = p.explode
      parameters.push(param)
    }
    const route: HttpRoute = { method, path, parameters }
    if (isObject(op.requestBody) && isObject(op.requestBody.content)) {
      const content = op.requestBody.content
      const bodyRequired = op.requestBody.required === true
      const bodyType = pickBodyType(Object.keys(content))
      if (bodyType === undefined) {
        const types = Object.keys(content).join(', ')
        const why = 'only JSON, application/x-www-form-urlencoded and text/* request bodies are supported (alknet carries JSON)'
        if (bodyRequired) return this.skip(where, `${types} request body`, why)
        this.report(where, `${types} request body`, 'part left out', why)
      } else {
        if (properties.body !== undefined) return this.skip(where, 'a parameter named body beside a request body', 'the input holds the body under `body`')
        const media = content[bodyType]
        properties.body = isObject(media) && isObject(media.schema) ? schemas.convert(media.schema, 'request') : {}
        if (bodyRequired) required.push('body')
        route.bodyType = bodyType
      }
    }
    let input: JsonSchema = { type: 'object', properties, additionalProperties: false }
    if (required.length > 0) input.required = required
    input = schemas.withDefs(input, 'request')

    let output: JsonSchema = SSE_ITEM
    if (!sse) {
      const out = this.outputSchema(where, op, schemas)
      if (out === undefined) return undefined
      output = schemas.withDefs(out, 'response')
    }
    const description = [op.summary, op.description].filter((s): s is string => typeof s === 'string' && s !== '').join('\n\n')
    return description === '' ? { route, input, output } : { route, input, output, description }
  }

  /** The 2xx responses' schemas, united; `undefined` (reported) if one is binary. */
  private outputSchema(where: string, op: Record<string, unknown>, schemas: SchemaConverter): JsonSchema | undefined {
    const responses = isObject(op.responses) ? op.responses : {}
    const outs: JsonSchema[] = []
    for (const [status, response] of Object.entries(responses)) {
      if (!/^2(\d\d|XX)$/i.test(status) || !isObject(response)) continue
      const content = isObject(response.content) ? response.content : {}
      const types = Object.keys(content)
      if (types.length === 0 || status === '204') {
        outs.push({ type: 'null' })
        continue
      }
      const json = types.find(isJson)
      if (json !== undefined) {
        const media = content[json]
        outs.push(isObject(media) && isObject(media.schema) ? schemas.convert(media.schema, 'response') : {})
      } else if (types.some((t) => t.startsWith('text/'))) {
        outs.push({ type: 'string' })
      } else {
        return this.skip(where, `${types.join(', ')} response`, 'binary responses are not supported (alknet carries JSON)')
      }
    }
    if (outs.length === 0) return {}
    const unique = [...new Map(outs.map((s) => [JSON.stringify(s), s])).values()]
    return unique.length === 1 ? (unique[0] as JsonSchema) : { anyOf: unique }
  }

  private skip(where: string, feature: string, why: string): undefined {
    this.report(where, feature, 'operation skipped', why)
    return undefined
  }
}

/** The kind an operation becomes: `text/event-stream` 2xx → subscription, GET/HEAD → query, else mutation. @internal */
export function kindOf(method: string, sse: boolean): OperationType {
  if (sse) return 'subscription'
  return method === 'get' || method === 'head' ? 'query' : 'mutation'
}

function hasEventStream(op: Record<string, unknown>): boolean {
  const responses = isObject(op.responses) ? op.responses : {}
  return Object.entries(responses).some(
    ([status, r]) => /^2/.test(status) && isObject(r) && isObject(r.content) && Object.keys(r.content).some((t) => t.startsWith('text/event-stream')),
  )
}

/** The default name rule: `namespace/operation_id`. @internal */
export function defaultName(ref: OpenApiOperationRef, namespace: string | undefined): string {
  const ns = namespace ?? (segment(ref.tags[0] ?? '') || 'api')
  const op = segment(ref.operationId ?? '') || segment(`${ref.method} ${ref.path.replace(/[{}]/g, '')}`)
  return `${ns}/${op}`
}

/**
 * Imports an HTTP API described by OpenAPI 3.0 or 3.1 as a {@link Registry}: one operation per
 * API operation, whose handler sends the HTTP request and answers with the response. Serve it on a
 * node and any peer reaches the API by the node's key.
 *
 * The document is parsed, validated and dereferenced by `@apidevtools/swagger-parser`; Swagger 2.0
 * is refused (convert it first). Naming, input shape, schema conversion and the HTTP status →
 * error code table are in docs/bridges.md. Pass `Ops` (from `npx alknet-openapi-types`) to type it.
 *
 * @example
 * ```ts
 * const petstore = await fromOpenAPI<PetstoreOps>('https://petstore3.swagger.io/api/v3/openapi.json', {
 *   namespace: 'petstore',
 *   credentials: ({ identity }) => ({ headers: { api_key: keyFor(identity) } }),
 * })
 * const node = await serve({ listen: '0.0.0.0:4433', key, operations: petstore })
 * ```
 */
export async function fromOpenAPI<Ops extends OperationMap = OperationMap>(
  source: OpenApiSource,
  options: FromOpenApiOptions = {},
): Promise<OpenApiRegistry<Ops>> {
  const loaded = await loadDocument(source, options.validate ?? true)
  const baseUrl = baseUrlOf(loaded, options.baseUrl)
  const unsupported: Unsupported[] = []
  const report = reporter('fromOpenAPI', options, unsupported)
  const registry = new OpenApiRegistry<Ops>(baseUrl, unsupported)
  const converter = new OperationConverter(loaded.version === '3.0', componentNames(loaded.document), report)
  const names = new Names('fromOpenAPI')
  const paths = isObject(loaded.document.paths) ? loaded.document.paths : {}
  if (isObject(loaded.document.webhooks) && Object.keys(loaded.document.webhooks).length > 0) {
    report('webhooks', 'webhooks', 'part left out', 'webhooks are requests the API makes, not operations it serves')
  }
  const components = isObject(loaded.document.components) ? loaded.document.components : {}
  const schemes = isObject(components.securitySchemes) ? Object.keys(components.securitySchemes) : []
  if (schemes.length > 0 && options.credentials === undefined && options.headers === undefined) {
    report('security', `security schemes (${schemes.join(', ')})`, 'part left out', 'credentials are not applied automatically; pass the `headers` or `credentials` option')
  }
  for (const [path, item] of Object.entries(paths)) {
    if (!isObject(item)) continue
    const pathParams = Array.isArray(item.parameters) ? item.parameters : []
    for (const method of METHODS) {
      const op = item[method]
      if (!isObject(op)) continue
      const sse = hasEventStream(op)
      const ref: OpenApiOperationRef = {
        method,
        path,
        tags: Array.isArray(op.tags) ? op.tags.filter((t): t is string => typeof t === 'string') : [],
        kind: kindOf(method, sse),
      }
      if (typeof op.operationId === 'string') ref.operationId = op.operationId
      const where = `${method.toUpperCase()} ${path}${ref.operationId ? ` (${ref.operationId})` : ''}`
      const name = options.name ? options.name(ref) : defaultName(ref, options.namespace)
      if (!selected([name, ref.operationId], options.include, options.exclude)) continue
      names.claim(name, where)
      if (isObject(op.callbacks) && Object.keys(op.callbacks).length > 0) {
        report(where, 'callbacks', 'part left out', 'callbacks are requests the API makes, not operations it serves')
      }
      if (Array.isArray(op.servers) || Array.isArray(item.servers)) {
        report(where, 'path or operation servers', 'part left out', `requests go to the base URL ${baseUrl}`)
      }
      const converted = converter.convert(where, op, pathParams, method, path, sse)
      if (converted === undefined) continue
      register(registry, name, ref.kind, converted, baseUrl, where, options)
    }
  }
  return registry
}

function register(registry: Registry, name: string, kind: OperationType, c: Converted, baseUrl: string, where: string, options: FromOpenApiOptions): void {
  const doFetch = options.fetch ?? ((url: string, init: RequestInit) => fetch(url, init))
  const send = async (input: unknown, ctx: HandlerContext): Promise<Response> => {
    const credentials = options.credentials ? await options.credentials({ operation: name, identity: ctx.identity }) : undefined
    const { url, init } = buildRequest(baseUrl, c.route, isObject(input) ? input : {}, options.headers ?? {}, credentials)
    const timeout = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs)
    init.signal = timeout === undefined ? ctx.signal : AbortSignal.any([ctx.signal, timeout])
    let response: Response
    try {
      response = await doFetch(url, init)
    } catch (e) {
      throw networkError(e, ctx.signal, timeout, where)
    }
    if (response.status < 200 || response.status >= 300) throw await statusError(response, where)
    return response
  }
  const def = {
    input: Type.Unsafe<unknown>(c.input),
    output: Type.Unsafe<unknown>(c.output),
    errors: DECLARED_ERRORS,
    access: options.access,
    description: c.description,
  }
  if (kind === 'subscription') {
    registry.subscription(name, def, async function* (input, ctx): AsyncGenerator<SseEvent> {
      const response = await send(input, ctx)
      try {
        yield* sseEvents(response)
      } catch (e) {
        throw networkError(e, ctx.signal, undefined, where)
      }
    })
  } else {
    const handler = async (input: unknown, ctx: HandlerContext): Promise<unknown> => {
      const response = await send(input, ctx)
      try {
        return await responseOutput(response)
      } catch (e) {
        throw networkError(e, ctx.signal, undefined, where)
      }
    }
    if (kind === 'query') registry.query(name, def, handler)
    else registry.mutation(name, def, handler)
  }
}

/** A failed fetch: cancelled by the caller, timed out, or the API unreachable (retryable). */
function networkError(e: unknown, signal: AbortSignal, timeout: AbortSignal | undefined, where: string): CallError {
  if (e instanceof CallError) return e
  if (signal.aborted) return new CallError('CANCELLED', `the request to ${where} was cancelled`)
  if (timeout?.aborted) return new CallError('TIMEOUT', `${where} did not answer in time`)
  if (e instanceof SyntaxError) return new CallError('UPSTREAM_ERROR', `${where} answered JSON that does not parse`)
  return new CallError('UNAVAILABLE', `${where} cannot be reached`, { retryable: true })
}
