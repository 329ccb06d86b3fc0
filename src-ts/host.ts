import * as native from '../index.js'
import { Completions, type RemoteOperations, type RequestOptions, stream } from './call'
import { CallError } from './errors'
import type { HandlerContext, Identity, RegisteredOperation, Registry } from './registry'

/** Where handler failures that are not {@link CallError}s are reported. */
export type HandlerErrorReporter = (error: unknown, operation: string) => void

/** Reports to `console.error` (the default). @internal */
export const reportToConsole: HandlerErrorReporter = (error, operation) =>
  console.error(`alknet: handler of ${operation} failed:`, error)

/** Items a subscription handler may run ahead of its subscriber (the native side's INITIAL_CREDIT). */
const INITIAL_CREDIT = 128

/** Encoded items waiting for one `push`; pushed sooner when this many wait. */
const PUSH_BATCH = 64

interface Running {
  operation: string
  /** Made when a handler first reads `ctx.signal` (most never do). */
  controller?: AbortController
  /** Why the request was cancelled, once it was. */
  cancelled?: CallError
  iterator?: AsyncIterator<unknown>
  /** Items that may still be produced before the subscriber takes some. */
  credit: number
  /** A `next()` of the generator is in flight. */
  pulling: boolean
  /** Encoded items not yet pushed. */
  batch: string[]
  /** A push of `batch` is scheduled. */
  flushing: boolean
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** Parsed identities by their JSON: a connection's requests share one (frozen) object. */
const identities = new Map<string, Identity | null>()

function parseIdentity(json: string): Identity | null {
  let identity = identities.get(json)
  if (identity !== undefined) return identity
  const value: unknown = JSON.parse(json)
  identity = value === null || typeof value !== 'object' ? null : (value as Identity)
  if (identity !== null) {
    Object.freeze(identity.scopes)
    for (const actions of Object.values(identity.resources ?? {})) Object.freeze(actions)
    Object.freeze(identity.resources)
    Object.freeze(identity)
  }
  if (identities.size >= 1024) identities.clear()
  identities.set(json, identity)
  return identity
}

/** The context of one request answered here. */
class RequestContext implements HandlerContext {
  private remote?: RemoteOperations

  constructor(
    private readonly host: native.Host,
    private readonly completions: Completions,
    private readonly id: number,
    private readonly entry: Running,
    readonly identity: Identity | null,
  ) {}

  get operation(): string {
    return this.entry.operation
  }

  get signal(): AbortSignal {
    const entry = this.entry
    if (entry.controller === undefined) {
      entry.controller = new AbortController()
      if (entry.cancelled !== undefined) entry.controller.abort(entry.cancelled)
    }
    return entry.controller.signal
  }

  call<T = unknown>(operation: string, input: unknown): Promise<T> {
    const { host, id } = this
    return this.completions.run<T>((callId) => host.callLocal(callId, id, operation, JSON.stringify(input ?? null)), () => {})
  }

  get peer(): RemoteOperations {
    const { host, id, completions } = this
    this.remote ??= {
      call: <T>(operation: string, input: unknown, options?: RequestOptions) =>
        completions.run<T>((callId, o) => host.callPeer(callId, id, operation, JSON.stringify(input ?? null), o), (c) => host.cancel(c), options),
      subscribe: <T>(operation: string, input: unknown, options?: RequestOptions) =>
        stream<T>((o, listener) => host.subscribePeer(id, operation, JSON.stringify(input ?? null), o, listener), options),
    }
    return this.remote
  }
}

/**
 * Runs a registry's handlers for the native side: requests arrive as events, answers go back by
 * request id. A handler that throws, rejects or returns garbage answers `INTERNAL` (reported
 * through `report`) and nothing else is affected.
 * @internal
 */
export class HandlerHost {
  readonly native: native.Host
  private readonly completions = new Completions((wake) => new native.CompletionQueue(wake))
  private readonly running = new Map<number, Running>()
  private readonly operations: ReadonlyMap<string, RegisteredOperation>

  constructor(
    registry: Registry,
    private readonly report: HandlerErrorReporter,
  ) {
    this.operations = registry.operations
    this.native = new native.Host(() => this.wake(), this.completions.queue)
  }

  /** The specs the native registry is built from. */
  specsJson(): string {
    return JSON.stringify([...this.operations.values()].map((op) => op.spec))
  }

  /** Answers not yet handed to the native side: `[kind, id, payload]` entries as JSON. */
  private answers: string[] = []

  /**
   * Queues answer `kind` (0 resolve, 1 reject, 2 push, 3 end) with its JSON `payload`; the
   * answers of one tick cross together in one `answerMany`. Answers may race a cancel: the
   * native side drops those to requests that are no longer open.
   */
  private answer(kind: 0 | 1 | 2 | 3, id: number, payload: string): void {
    if (this.answers.push(`[${kind},${id},${payload}]`) === 1) process.nextTick(this.flushAnswers)
  }

  private readonly flushAnswers = (): void => {
    const json = `[${this.answers.join(',')}]`
    this.answers = []
    this.native.answerMany(json)
  }

  /** Runs the events the native side has waiting. */
  private wake(): void {
    const events = JSON.parse(this.native.takeEvents()) as Array<[string, number, string, unknown, string]>
    for (const [event, id, operation, input, identityJson] of events) this.dispatch(event, id, operation, input, identityJson)
  }

  private errorJson(error: unknown, operation: string): string {
    if (error instanceof CallError) return JSON.stringify(error)
    this.report(error, operation)
    return JSON.stringify({ code: 'INTERNAL', message: 'the handler failed' })
  }

  /**
   * Answers `error` for request `id`. A handler that rejects after its request was cancelled
   * (caller abort, deadline; often an `AbortError` from passing `ctx.signal` on) has not failed:
   * nothing is reported, and nobody waits for the answer.
   */
  private fail(id: number, operation: string, error: unknown, entry?: Running): void {
    this.running.delete(id)
    if (entry?.cancelled !== undefined) return
    this.answer(1, id, this.errorJson(error, operation))
  }

  /** `value` as JSON; a value JSON cannot hold (a BigInt, a cycle) fails the request instead. */
  private encode(id: number, operation: string, value: unknown): string | undefined {
    try {
      return JSON.stringify(value ?? null)
    } catch (e) {
      this.fail(id, operation, e)
      return undefined
    }
  }

  /** Pushes the encoded items waiting, as one JSON array. */
  private flush(id: number, entry: Running): void {
    entry.flushing = false
    if (entry.batch.length === 0) return
    const json = `[${entry.batch.join(',')}]`
    entry.batch = []
    this.answer(2, id, json)
  }

  /** Runs the generator while it has credit; items produced together cross in one push. */
  private pull(id: number, entry: Running): void {
    const iterator = entry.iterator
    if (!iterator || entry.pulling || entry.credit <= 0) return
    entry.pulling = true
    iterator.next().then(
      (r) => {
        entry.pulling = false
        if (this.running.get(id) !== entry) return
        if (r.done) {
          this.running.delete(id)
          this.flush(id, entry)
          this.answer(3, id, 'null')
          return
        }
        const json = this.encode(id, entry.operation, r.value)
        if (json === undefined) return
        entry.credit--
        entry.batch.push(json)
        if (entry.batch.length >= PUSH_BATCH) this.flush(id, entry)
        else if (!entry.flushing) {
          entry.flushing = true
          setImmediate(() => this.flush(id, entry))
        }
        this.pull(id, entry)
      },
      (e: unknown) => {
        entry.pulling = false
        if (this.running.get(id) !== entry) return
        this.flush(id, entry)
        this.fail(id, entry.operation, e, entry)
      },
    )
  }

  private start(id: number, op: RegisteredOperation, operation: string, input: unknown, identityJson: string): void {
    const entry: Running = { operation, credit: INITIAL_CREDIT, pulling: false, batch: [], flushing: false }
    this.running.set(id, entry)
    const ctx = new RequestContext(this.native, this.completions, id, entry, parseIdentity(identityJson))
    if (op.kind === 'subscription') {
      entry.iterator = op.handler(input, ctx)[Symbol.asyncIterator]()
      this.pull(id, entry)
      return
    }
    let out: unknown
    try {
      out = op.handler(input, ctx)
    } catch (e) {
      this.fail(id, operation, e, entry)
      return
    }
    // A handler that answers at once is answered without a promise hop. A thenable goes through
    // `Promise.resolve` (the same object for a native promise), so one that calls back twice, or
    // throws in `then`, still settles the request once.
    if (isThenable(out)) Promise.resolve(out).then((v) => this.resolved(id, operation, v), (e: unknown) => this.fail(id, operation, e, entry))
    else this.resolved(id, operation, out)
  }

  private resolved(id: number, operation: string, out: unknown): void {
    const json = this.encode(id, operation, out)
    if (json === undefined) return
    this.running.delete(id)
    this.answer(0, id, json)
  }

  private dispatch(event: string, id: number, operation: string, input: unknown, identityJson: string): void {
    try {
      switch (event) {
        case 'call':
        case 'subscribe': {
          const op = this.operations.get(operation)
          if (op) this.start(id, op, operation, input, identityJson)
          else this.answer(1, id, JSON.stringify({ code: 'NOT_FOUND', message: `no operation ${operation}` }))
          break
        }
        case 'credit': {
          const entry = this.running.get(id)
          if (entry) {
            entry.credit += Number(input)
            this.pull(id, entry)
          }
          break
        }
        case 'cancel': {
          const entry = this.running.get(id)
          this.running.delete(id)
          if (entry) {
            entry.cancelled = new CallError('CANCELLED', 'the caller cancelled the request')
            entry.controller?.abort(entry.cancelled)
            entry.iterator?.return?.().catch(() => {})
          }
          break
        }
      }
    } catch (e) {
      this.fail(id, operation, e)
    }
  }
}
