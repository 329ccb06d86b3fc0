// Reading an OpenAPI document: parsed, validated and dereferenced by @apidevtools/swagger-parser
// (never by hand). Swagger 2.0 is refused with what to do instead.
import SwaggerParser from '@apidevtools/swagger-parser'
import { isObject } from './bridge'

/** An OpenAPI document: a parsed object, a file path, or an `http(s)://` URL. */
export type OpenApiSource = string | URL | Record<string, unknown>

/** A loaded document. @internal */
export interface LoadedDocument {
  document: Record<string, unknown>
  /** `3.0` or `3.1`. */
  version: '3.0' | '3.1'
  /** Where it came from, when it is a URL (relative `servers` resolve against it). */
  url?: string
}

/** Loads, validates (unless `validate` is false) and dereferences `source`; circular `$ref`s become object cycles. @internal */
export async function loadDocument(source: OpenApiSource, validate: boolean): Promise<LoadedDocument> {
  const location = source instanceof URL ? source.href : typeof source === 'string' ? source : undefined
  // swagger-parser dereferences in place: never touch the caller's object.
  const input = location ?? structuredClone(source)
  // json-schema-ref-parser refuses loopback and private addresses by default (against SSRF from
  // untrusted documents); the document here is the one the user chose, often an API on localhost.
  const resolve = { resolve: { http: { safeUrlResolver: false } } } as SwaggerParser.Options
  let parsed: unknown
  try {
    parsed = await SwaggerParser.parse(input as string, resolve)
  } catch (e) {
    throw new Error(`fromOpenAPI: cannot read the OpenAPI document${location ? ` ${location}` : ''}: ${(e as Error).message}`)
  }
  if (!isObject(parsed)) throw new Error('fromOpenAPI: the OpenAPI document is not an object')
  if (typeof parsed.swagger === 'string') {
    throw new Error(
      `fromOpenAPI: Swagger ${parsed.swagger} documents are not supported; convert it to OpenAPI 3 first ` +
        '(e.g. `npx swagger2openapi swagger.json -o openapi.json`) and import that',
    )
  }
  const version = typeof parsed.openapi === 'string' ? parsed.openapi : ''
  if (!/^3\.[01]\./.test(version)) {
    throw new Error(`fromOpenAPI: the document has openapi ${JSON.stringify(version || null)}; only OpenAPI 3.0.x and 3.1.x are supported`)
  }
  const options: SwaggerParser.Options = { ...resolve, dereference: { circular: true } }
  let document: unknown
  try {
    // A URL or file is read again here, so that its relative $refs resolve against it.
    document = validate
      ? await SwaggerParser.validate(location ?? (parsed as never), options)
      : await SwaggerParser.dereference(location ?? (parsed as never), options)
  } catch (e) {
    throw new Error(`fromOpenAPI: the OpenAPI document is invalid: ${(e as Error).message}`)
  }
  if (!isObject(document)) throw new Error('fromOpenAPI: the OpenAPI document is not an object')
  const url = location !== undefined && /^https?:\/\//i.test(location) ? location : undefined
  return { document, version: version.startsWith('3.0') ? '3.0' : '3.1', url }
}
