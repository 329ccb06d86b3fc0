// fromOpenAPI against a real HTTP API (fastify generating its own OpenAPI 3.0 document), served
// on an alknet node and called from another peer; and the mapping tables, one row each.
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { alknet } from './helpers'
import { todoApi } from './openapi-server'
import { dial, rejection, start } from './support'

const { fromOpenAPI, Keypair, CallError } = alknet
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/openapi/${name}`, import.meta.url))
/** An imported operation by name. */
const described = (r: { describe(): { name: string; input: unknown; output: unknown }[] }, name: string) => r.describe().find((o) => o.name === name)!
type Api = Awaited<ReturnType<typeof todoApi>>
type Issue = Parameters<NonNullable<Parameters<typeof fromOpenAPI>[1]>['onUnsupported'] & {}>[0]

let api: Api
beforeEach(async () => {
  api = await todoApi()
})
afterEach(async () => {
  await api.app.close()
})

describe('fromOpenAPI against a fastify server', () => {
  it('imports the generated document, forwards path, query, header and body, answers 2xx output', async () => {
    const ops = await fromOpenAPI(api.specUrl, { onUnsupported: () => {} })
    expect(ops.baseUrl).toBe(`${api.url}/`)
    expect(ops.kindOf('todos/list_todos')).toBe('query')
    expect(ops.kindOf('todos/create_todo')).toBe('mutation')
    expect(ops.kindOf('events/stream_events')).toBe('subscription')
    const node = await start(ops)
    const peer = await dial(node)

    const created = await peer.call<{ id: number; requestId: string; note: null }>('todos/create_todo', {
      body: { title: 'write tests' },
      'x-request-id': 'r-1',
    })
    expect(created).toEqual({ id: 1, title: 'write tests', done: false, note: null, requestId: 'r-1' })
    await peer.call('todos/create_todo', { body: { title: 'ship', done: true } })
    expect(await peer.call('todos/get_todo', { id: 1 })).toMatchObject({ title: 'write tests', note: null })
    expect(await peer.call('todos/list_todos', { done: true })).toEqual([{ id: 2, title: 'ship', done: true, note: null }])
    expect(await peer.call('todos/list_todos', { limit: 1 })).toHaveLength(1)
    expect(await peer.call('todos/delete_todo', { id: 1 })).toBeNull()
    const gone = await rejection(peer.call('todos/get_todo', { id: 1 }))
    expect(gone.code).toBe('HTTP_NOT_FOUND')
    expect(gone.details).toEqual({ status: 404, body: { message: 'no such todo' } })

    // The node validates the merged input object before any request goes out.
    const bad = await rejection(peer.call('todos/create_todo', { body: {} }))
    expect(bad.code).toBe('INVALID_INPUT')
    expect((await rejection(peer.call('todos/get_todo', { id: 1, extra: true }))).code).toBe('INVALID_INPUT')
  })

  it('streams text/event-stream as a subscription of { event, id, data }', async () => {
    const node = await start(await fromOpenAPI(api.specUrl, { onUnsupported: () => {} }))
    const peer = await dial(node)
    const items: unknown[] = []
    for await (const item of peer.subscribe('events/stream_events', { count: 2 })) items.push(item)
    expect(items).toEqual([
      { event: 'tick', id: '1', data: { n: 1 } },
      { event: 'tick', id: '2', data: { n: 2 } },
      { data: 'plain text' },
    ])
  })

  it('maps per-call credentials from the caller identity, and static headers', async () => {
    const key = Keypair.generate()
    const ops = await fromOpenAPI(api.specUrl, {
      include: ['auth/*'],
      credentials: ({ identity, operation }) => (identity ? { headers: { authorization: `Bearer token-of-${identity.id}-for-${operation}` } } : undefined),
      onUnsupported: () => {},
    })
    expect(ops.describe().map((o) => o.name)).toEqual(['auth/whoami'])
    const node = await start(ops, { auth: { peers: [{ id: 'alice', fingerprints: [key.fingerprint] }] } })
    expect(await (await dial(node, { key })).call('auth/whoami', {})).toEqual({ authorization: 'Bearer token-of-alice-for-auth/whoami' })
    expect(await (await dial(node)).call('auth/whoami', {})).toEqual({ authorization: '' })

    const fixed = await start(await fromOpenAPI(api.specUrl, { include: ['whoami'], headers: { authorization: 'Basic c3ZjOnB3' }, onUnsupported: () => {} }))
    expect(await (await dial(fixed)).call('auth/whoami', {})).toEqual({ authorization: 'Basic c3ZjOnB3' })
  })

  it('cancels the upstream request when the caller aborts', async () => {
    const node = await start(await fromOpenAPI(api.specUrl, { include: ['status/slow'], onUnsupported: () => {} }))
    const peer = await dial(node)
    const controller = new AbortController()
    const call = peer.call('status/slow', {}, { signal: controller.signal })
    await api.slowArrived
    controller.abort()
    expect((await rejection(call)).code).toBe('CANCELLED')
    await api.upstreamClosed // the HTTP request was aborted, not left running
  })

  it('a caller deadline ends the upstream request with TIMEOUT', async () => {
    const node = await start(await fromOpenAPI(api.specUrl, { include: ['status/slow'], onUnsupported: () => {} }))
    const peer = await dial(node)
    expect((await rejection(peer.call('status/slow', {}, { timeoutMs: 50 }))).code).toBe('TIMEOUT')
    await api.upstreamClosed
  })

  it('the fetch option replaces the global fetch', async () => {
    const seen: string[] = []
    const ops = await fromOpenAPI(api.specUrl, {
      include: ['auth/whoami'],
      fetch: (url, init) => {
        seen.push(`${init.method} ${new URL(url).pathname}`)
        return fetch(url, init)
      },
      onUnsupported: () => {},
    })
    await (await dial(await start(ops))).call('auth/whoami', {})
    expect(seen).toEqual(['GET /whoami'])
  })
})

describe('HTTP status → contract code (docs/bridges.md, one row each)', () => {
  const table: [number, string, boolean][] = [
    [400, 'INVALID_INPUT', false],
    [422, 'INVALID_INPUT', false],
    [401, 'UNAUTHENTICATED', false],
    [403, 'FORBIDDEN', false],
    [404, 'HTTP_NOT_FOUND', false],
    [410, 'HTTP_NOT_FOUND', false],
    [408, 'TIMEOUT', true],
    [504, 'TIMEOUT', true],
    [429, 'OVERLOADED', true],
    [502, 'UNAVAILABLE', true],
    [503, 'UNAVAILABLE', true],
    [409, 'HTTP_ERROR', false],
    [418, 'HTTP_ERROR', false],
    [500, 'UPSTREAM_ERROR', false],
    [501, 'UPSTREAM_ERROR', false],
  ]
  it.each(table)('HTTP %i → %s (retryable %s)', async (status, code, retryable) => {
    const peer = await dial(await start(await fromOpenAPI(api.specUrl, { include: ['status/*'], onUnsupported: () => {} })))
    const error = await rejection(peer.call('status/answer_status', { code: status }))
    expect([error.code, error.retryable]).toEqual([code, retryable])
    // A 4xx body is the API's answer to the caller's input and passes; a 5xx body may hold internals and does not.
    expect(error.details).toEqual(status < 500 ? { status, body: { message: `status ${status}`, secret: 'internal detail' } } : { status })
  })

  it('HTTP 200 → the output', async () => {
    const peer = await dial(await start(await fromOpenAPI(api.specUrl, { include: ['status/*'], onUnsupported: () => {} })))
    expect(await peer.call('status/answer_status', { code: 200 })).toEqual({ ok: true })
  })

  it('an unreachable API → UNAVAILABLE (retryable)', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as { port: number }).port
        s.close(() => resolve(port))
      })
    })
    const ops = await fromOpenAPI(api.specUrl, { include: ['auth/whoami'], baseUrl: `http://127.0.0.1:${closed}`, onUnsupported: () => {} })
    const error = await rejection((await dial(await start(ops))).call('auth/whoami', {}))
    expect([error.code, error.retryable]).toEqual(['UNAVAILABLE', true])
  })
})

/** A minimal OpenAPI 3.0 document with these paths. */
const doc30 = (paths: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  openapi: '3.0.3',
  info: { title: 't', version: '1' },
  servers: [{ url: 'http://127.0.0.1:9/v1' }],
  paths,
  ...extra,
})
const ok = { '200': { description: 'ok', content: { 'application/json': { schema: { type: 'object' } } } } }

describe('method → type and the name rule (docs/bridges.md)', () => {
  it('GET/HEAD → query, other methods → mutation, text/event-stream → subscription', async () => {
    const sse = { '200': { description: 'events', content: { 'text/event-stream': { schema: { type: 'string' } } } } }
    const methods = Object.fromEntries(['get', 'head', 'post', 'put', 'patch', 'delete', 'options', 'trace'].map((m) => [m, { operationId: `${m}Thing`, responses: ok }]))
    const ops = await fromOpenAPI(doc30({ '/thing': methods, '/stream': { post: { operationId: 'postStream', responses: sse } } }), { namespace: 'x' })
    expect(Object.fromEntries(ops.describe().map((o) => o.name).map((n) => [n, ops.kindOf(n)]))).toEqual({
      'x/get_thing': 'query',
      'x/head_thing': 'query',
      'x/post_thing': 'mutation',
      'x/put_thing': 'mutation',
      'x/patch_thing': 'mutation',
      'x/delete_thing': 'mutation',
      'x/options_thing': 'mutation',
      'x/trace_thing': 'mutation',
      'x/post_stream': 'subscription',
    })
  })

  it('names: first tag / operationId in snake_case; without operationId: method and path; namespace overrides the tag', async () => {
    const paths = {
      '/pets': { get: { operationId: 'listPets', tags: ['Pet Store', 'other'], responses: ok } },
      '/pets/{petId}': { get: { tags: ['pets'], parameters: [{ name: 'petId', in: 'path', required: true, schema: { type: 'integer' } }], responses: ok } },
      '/HTTPStatus': { get: { operationId: 'getHTTPStatus', responses: ok } },
    }
    expect((await fromOpenAPI(doc30(paths))).describe().map((o) => o.name)).toEqual(['pet_store/list_pets', 'pets/get_pets_pet_id', 'api/get_http_status'])
    expect((await fromOpenAPI(doc30(paths), { namespace: 'petstore' })).describe().map((o) => o.name)).toEqual([
      'petstore/list_pets',
      'petstore/get_pets_pet_id',
      'petstore/get_http_status',
    ])
    const custom = await fromOpenAPI(doc30(paths), { name: (op) => `v1/${op.method}_${op.operationId ?? 'anon'}`.toLowerCase() })
    expect(custom.describe().map((o) => o.name)).toEqual(['v1/get_listpets', 'v1/get_anon', 'v1/get_gethttpstatus'])
  })

  it('collisions and invalid names are refused, naming both sides', async () => {
    const paths = { '/a': { get: { operationId: 'listPets', responses: ok } }, '/b': { get: { operationId: 'list_pets', responses: ok } } }
    await expect(fromOpenAPI(doc30(paths))).rejects.toThrow(/GET \/b \(list_pets\) and GET \/a \(listPets\) both map to the operation name "api\/list_pets"/)
    await expect(fromOpenAPI(doc30(paths), { name: () => 'Bad Name' })).rejects.toThrow(/not lowercase `namespace\/op`/)
    // Excluding one side resolves it.
    expect((await fromOpenAPI(doc30(paths), { exclude: ['list_pets'] })).describe().map((o) => o.name)).toEqual(['api/list_pets'])
  })
})

describe('schema conversion and the input shape', () => {
  it('merges path, query and header parameters and the body; OpenAPI 3.0 keywords become JSON Schema 2020-12', async () => {
    const item = {
      type: 'object',
      required: ['id'],
      properties: {
        id: { type: 'integer', readOnly: true },
        secret: { type: 'string', writeOnly: true },
        note: { type: 'string', nullable: true },
        owner: { nullable: true, allOf: [{ type: 'object', properties: { name: { type: 'string' } } }] },
        score: { type: 'number', minimum: 0, exclusiveMinimum: true, maximum: 10, exclusiveMaximum: false },
      },
    }
    const ops = await fromOpenAPI(
      doc30({
        '/items/{id}': {
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'integer' } }],
          put: {
            operationId: 'putItem',
            parameters: [
              { name: 'dryRun', in: 'query', schema: { type: 'boolean' }, description: 'only check' },
              { name: 'X-Trace', in: 'header', schema: { type: 'string' } },
              { name: 'Accept', in: 'header', schema: { type: 'string' } },
              { name: 'session', in: 'cookie', schema: { type: 'string' } },
            ],
            requestBody: { required: true, content: { 'application/json': { schema: item } } },
            responses: { '200': { description: 'ok', content: { 'application/json': { schema: item } } }, '204': { description: 'unchanged' } },
          },
        },
      }),
      { onUnsupported: () => {} },
    )
    const spec = described(ops, 'api/put_item')
    const body = {
      type: 'object',
      required: ['id'],
      properties: {
        secret: { type: 'string' },
        note: { type: ['string', 'null'] },
        owner: { anyOf: [{ allOf: [{ type: 'object', properties: { name: { type: 'string' } } }] }, { type: 'null' }] },
        score: { type: 'number', exclusiveMinimum: 0, maximum: 10 },
      },
    }
    // readOnly `id` is not sent; the converter also drops it from `required`.
    delete (body as { required?: string[] }).required
    expect(spec.input).toEqual({
      type: 'object',
      properties: {
        id: { type: 'integer' },
        dryRun: { type: 'boolean', description: 'only check' },
        'X-Trace': { type: 'string' },
        body,
      },
      required: ['id', 'body'],
      additionalProperties: false,
    })
    expect(spec.output).toEqual({
      anyOf: [
        {
          type: 'object',
          required: ['id'],
          properties: {
            id: { type: 'integer' },
            note: { type: ['string', 'null'] },
            owner: body.properties.owner,
            score: body.properties.score,
          },
        },
        { type: 'null' },
      ],
    })
  })

  it('reports what it cannot carry over instead of dropping it silently; strict refuses', async () => {
    const issues: Issue[] = []
    const d = doc30({
      '/upload': { post: { operationId: 'upload', requestBody: { required: true, content: { 'multipart/form-data': { schema: { type: 'object' } } } }, responses: ok } },
      '/image': { get: { operationId: 'image', responses: { '200': { description: 'png', content: { 'image/png': {} } } } } },
      '/c': { get: { operationId: 'withCookie', parameters: [{ name: 's', in: 'cookie', schema: { type: 'string' } }], responses: ok } },
      '/hook': {
        servers: [{ url: 'http://elsewhere.invalid' }],
        post: { operationId: 'subscribe', callbacks: { onEvent: { '{$request.body#/url}': { post: { responses: ok } } } }, responses: ok },
      },
    })
    const ops = await fromOpenAPI(d, { onUnsupported: (i) => issues.push(i) })
    expect(ops.describe().map((o) => o.name)).toEqual(['api/with_cookie', 'api/subscribe'])
    expect(issues.map((i) => [i.where, i.feature, i.action])).toEqual([
      ['POST /upload (upload)', 'multipart/form-data request body', 'operation skipped'],
      ['GET /image (image)', 'image/png response', 'operation skipped'],
      ['GET /c (withCookie)', 'cookie parameter s', 'part left out'],
      ['POST /hook (subscribe)', 'callbacks', 'part left out'],
      ['POST /hook (subscribe)', 'path or operation servers', 'part left out'],
    ])
    expect(ops.unsupported).toEqual(issues)
    await expect(fromOpenAPI(d, { strict: true })).rejects.toThrow(/multipart\/form-data request body.*\(strict\)/)
  })

  it('circular $refs become $defs that the node compiles and validates', async () => {
    const ops = await fromOpenAPI(fixture('schema-circular-3.0.json'), { baseUrl: 'http://127.0.0.1:9', onUnsupported: () => {} })
    const input = described(ops, 'api/post_not_quite_circular').input as { $defs: Record<string, unknown> }
    expect(Object.keys(input.$defs)).toEqual(['ZoneRules'])
    expect(JSON.stringify(input)).toContain('"$ref":"#/$defs/ZoneRules"')
    const peer = await dial(await start(ops))
    // Deep into the recursion, a wrong type is still caught by the node's validator.
    const deep = { rules: { transitions: [{ offsetBefore: { id: 'a', rules: { transitions: [{ offsetAfter: { id: 7 } }] } } }] } }
    expect((await rejection(peer.call('api/post_not_quite_circular', { body: deep }))).code).toBe('INVALID_INPUT')
  })
})

describe('public specs and bad specs', () => {
  it('Petstore (OpenAPI 3.0): every operation named, typed and compiled by a node', async () => {
    const issues: Issue[] = []
    const ops = await fromOpenAPI(fixture('petstore-3.0.json'), { onUnsupported: (i) => issues.push(i) })
    expect(ops.baseUrl).toBe('http://petstore.swagger.io/v2')
    expect(Object.fromEntries(ops.describe().map((o) => o.name).map((n) => [n, ops.kindOf(n)]))).toEqual({
      'pet/update_pet': 'mutation',
      'pet/add_pet': 'mutation',
      'pet/find_pets_by_status': 'query',
      'pet/find_pets_by_tags': 'query',
      'pet/get_pet_by_id': 'query',
      'pet/update_pet_with_form': 'mutation',
      'pet/delete_pet': 'mutation',
      'pet/upload_file': 'mutation',
      'store/get_inventory': 'query',
      'store/place_order': 'mutation',
      'store/get_order_by_id': 'query',
      'store/delete_order': 'mutation',
      'user/create_user': 'mutation',
      'user/create_users_with_array_input': 'mutation',
      'user/create_users_with_list_input': 'mutation',
      'user/login_user': 'query',
      'user/logout_user': 'query',
      'user/get_user_by_name': 'query',
      'user/update_user': 'mutation',
      'user/delete_user': 'mutation',
    })
    expect(issues.map((i) => i.message)).toEqual([
      'security: security schemes (petstore_auth, api_key): credentials are not applied automatically; pass the `headers` or `credentials` option; part left out',
      'POST /pet/{petId}/uploadImage (uploadFile): multipart/form-data request body: only JSON, application/x-www-form-urlencoded and text/* request bodies are supported (alknet carries JSON); part left out',
    ])
    const add = described(ops, 'pet/add_pet').input as { properties: { body: { required: string[] } }; required: string[] }
    expect(add.required).toEqual(['body'])
    expect(add.properties.body.required).toEqual(['name', 'photoUrls'])
    const peer = await dial(await start(ops))
    expect((await peer.discover()).map((o) => o.name)).toEqual(expect.arrayContaining(['pet/add_pet', 'user/login_user']))
    expect((await rejection(peer.call('pet/get_pet_by_id', { petId: 'one' }))).code).toBe('INVALID_INPUT')
  })

  it('Train Travel (OpenAPI 3.1): 2020-12 schemas kept, webhooks and security schemes reported', async () => {
    const issues: Issue[] = []
    const ops = await fromOpenAPI(fixture('train-travel-3.1.json'), { onUnsupported: (i) => issues.push(i) })
    expect(ops.describe().map((o) => o.name)).toEqual([
      'stations/get_stations',
      'trips/get_trips',
      'bookings/get_bookings',
      'bookings/create_booking',
      'bookings/get_booking',
      'bookings/delete_booking',
      'payments/create_booking_payment',
    ])
    expect(issues.map((i) => i.feature)).toEqual(['webhooks', 'security schemes (OAuth2)'])
    // With credentials of its own, the security schemes are the caller's business: not reported.
    const withCredentials: Issue[] = []
    await fromOpenAPI(fixture('train-travel-3.1.json'), { credentials: () => undefined, onUnsupported: (i) => withCredentials.push(i) })
    expect(withCredentials.map((i) => i.feature)).toEqual(['webhooks'])
    await dial(await start(ops))
  })

  it('refuses Swagger 2.0, other versions, invalid documents and unknown files clearly', async () => {
    await expect(fromOpenAPI(fixture('petstore-swagger-2.0.json'))).rejects.toThrow(/Swagger 2\.0 documents are not supported; convert it to OpenAPI 3 first/)
    await expect(fromOpenAPI({ openapi: '4.0.0', info: { title: 't', version: '1' }, paths: {} })).rejects.toThrow(/Unsupported OpenAPI version: 4\.0\.0/)
    await expect(fromOpenAPI({ openapi: '3.0.3', paths: {} })).rejects.toThrow(/the OpenAPI document is invalid/)
    await expect(fromOpenAPI(fixture('no-such-file.json'))).rejects.toThrow(/cannot read the OpenAPI document/)
    await expect(fromOpenAPI({ ...doc30({}), servers: [{ url: '/v1' }] })).rejects.toThrow(/servers\[0\]\.url is relative \("\/v1"\).*pass the `baseUrl` option/)
  })

  it('leaves the caller\'s document object untouched', async () => {
    const d = doc30({ '/a': { get: { operationId: 'a', responses: { '200': { $ref: '#/components/responses/A' } } } } }, {
      components: { responses: { A: { description: 'a', content: { 'application/json': { schema: { type: 'string' } } } } } },
    })
    const before = JSON.stringify(d)
    await fromOpenAPI(d)
    expect(JSON.stringify(d)).toBe(before)
    expect(CallError).toBeDefined()
  })
})
