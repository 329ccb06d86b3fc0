// A real OpenAPI server for the fromOpenAPI tests: fastify generates its own OpenAPI 3.0 document
// (@fastify/swagger) from the route schemas, as a Node developer's existing API would.
import swagger from '@fastify/swagger'
import Fastify from 'fastify'
import { deferred } from './support'

/** The todo API, listening on a free loopback port; `upstreamClosed` resolves when the /slow request is aborted. */
export async function todoApi() {
  // Close every connection on close(), also the one a test left hanging on /slow.
  const app = Fastify({ forceCloseConnections: true })
  await app.register(swagger, { openapi: { openapi: '3.0.3', info: { title: 'Todo API', version: '1.0.0' } } })
  const todos = new Map<number, { id: number; title: string; done: boolean; note: string | null }>()
  let next = 1
  const slowArrived = deferred()
  const upstreamClosed = deferred()
  const todo = {
    type: 'object',
    properties: { id: { type: 'integer' }, title: { type: 'string' }, done: { type: 'boolean' }, note: { type: 'string', nullable: true } },
    required: ['id', 'title', 'done', 'note'],
  }
  const error = { type: 'object', properties: { message: { type: 'string' } } }

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  app.get(
    '/todos',
    {
      schema: {
        operationId: 'listTodos',
        tags: ['todos'],
        summary: 'Lists todos',
        querystring: { type: 'object', properties: { done: { type: 'boolean' }, limit: { type: 'integer', minimum: 1 } } },
        response: { 200: { type: 'array', items: todo } },
      },
    },
    async (req) => {
      const q = req.query as { done?: boolean; limit?: number }
      return [...todos.values()].filter((t) => q.done === undefined || t.done === q.done).slice(0, q.limit ?? 100)
    },
  )
  app.get(
    '/todos/:id',
    {
      schema: {
        operationId: 'getTodo',
        tags: ['todos'],
        params: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'] },
        response: { 200: todo, 404: error },
      },
    },
    async (req, reply) => {
      const t = todos.get((req.params as { id: number }).id)
      return t ?? reply.code(404).send({ message: 'no such todo' })
    },
  )
  app.post(
    '/todos',
    {
      schema: {
        operationId: 'createTodo',
        tags: ['todos'],
        headers: { type: 'object', properties: { 'x-request-id': { type: 'string' } } },
        body: { type: 'object', properties: { title: { type: 'string', minLength: 1 }, done: { type: 'boolean' } }, required: ['title'] },
        response: { 201: { ...todo, properties: { ...todo.properties, requestId: { type: 'string' } } } },
      },
    },
    async (req, reply) => {
      const body = req.body as { title: string; done?: boolean }
      const t = { id: next++, title: body.title, done: body.done ?? false, note: null }
      todos.set(t.id, t)
      return reply.code(201).send({ ...t, requestId: req.headers['x-request-id'] })
    },
  )
  app.delete(
    '/todos/:id',
    {
      schema: {
        operationId: 'deleteTodo',
        tags: ['todos'],
        params: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'] },
        response: { 204: { type: 'null', description: 'deleted' } },
      },
    },
    async (req, reply) => {
      todos.delete((req.params as { id: number }).id)
      return reply.code(204).send()
    },
  )
  app.get(
    '/status/:code',
    {
      schema: {
        operationId: 'answerStatus',
        tags: ['status'],
        params: { type: 'object', properties: { code: { type: 'integer' } }, required: ['code'] },
        response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } },
      },
    },
    async (req, reply) => {
      const code = (req.params as { code: number }).code
      if (code === 200) return { ok: true }
      return reply.code(code as 200).header('content-type', 'application/json').send(JSON.stringify({ message: `status ${code}`, secret: 'internal detail' }))
    },
  )
  app.get(
    '/whoami',
    { schema: { operationId: 'whoami', tags: ['auth'], response: { 200: { type: 'object', properties: { authorization: { type: 'string' } } } } } },
    async (req) => ({ authorization: req.headers.authorization ?? '' }),
  )
  app.get('/slow', { schema: { operationId: 'slow', tags: ['status'], response: { 200: { type: 'object' } } } }, (_req, reply) => {
    reply.raw.on('close', () => upstreamClosed.resolve())
    slowArrived.resolve()
    // Never answered: only the caller's abort ends it.
  })
  app.get(
    '/events',
    {
      schema: {
        operationId: 'streamEvents',
        tags: ['events'],
        querystring: { type: 'object', properties: { count: { type: 'integer' } }, required: ['count'] },
        response: { 200: { description: 'events', content: { 'text/event-stream': { schema: { type: 'string' } } } } },
      },
    },
    (req, reply) => {
      const count = (req.query as { count: number }).count
      reply.hijack()
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream' })
      for (let i = 1; i <= count; i++) reply.raw.write(`event: tick\nid: ${i}\ndata: {"n":${i}}\n\n`)
      reply.raw.write('data: plain text\n\n')
      reply.raw.end()
    },
  )
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  const url = `http://127.0.0.1:${address.port}`
  return { app, url, specUrl: `${url}/openapi.json`, slowArrived: slowArrived.promise, upstreamClosed: upstreamClosed.promise }
}
