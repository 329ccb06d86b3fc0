import { CallError, callErrorFrom } from './errors'

/** Messages one `pubsub/publish_batch` carries at most (the node's limit is 1 024). */
const MAX_BATCH = 1024
/** Encoded bytes of messages one batch carries at most; a larger message goes alone. */
const MAX_BATCH_BYTES = 256 * 1024

/** Sends one request with its input already encoded as JSON. */
type Send = (operation: string, inputJson: string, token: string | undefined) => Promise<unknown>

interface Waiting {
  token: string | undefined
  json: string
  /** The UTF-8 length of `json`, as the frame carries it. */
  bytes: number
  resolve: (delivered: number) => void
  reject: (error: unknown) => void
}

function deliveredOf(out: unknown): number {
  const delivered = (out as { delivered?: unknown } | null)?.delivered
  return typeof delivered === 'number' ? delivered : 0
}

/**
 * A peer's publishes, travelling together: the publishes made in one tick, or while the previous
 * batch is in flight, go as one `pubsub/publish_batch` request (in the order they were made);
 * each promise settles with its own `delivered` count or error. One publish alone goes as
 * `pubsub/publish`. A node without `pubsub/publish_batch` (`NOT_FOUND`) is remembered for the
 * connection (`generation`); from then on each publish is its own `pubsub/publish`.
 * @internal
 */
export class Publisher {
  private queue: Waiting[] = []
  private busy = false
  /** The connection generation whose node lacks `pubsub/publish_batch`. */
  private unsupportedAt = -1

  /**
   * @param send - sends one request on the current connection
   * @param generation - the current connection's generation
   */
  constructor(
    private readonly send: Send,
    private readonly generation: () => number,
  ) {}

  /** Queues one publish; resolves with how many subscriptions it reached. */
  publish(topic: string, data: unknown, token: string | undefined): Promise<number> {
    const json = JSON.stringify({ topic, data: data ?? null })
    if (this.unsupportedAt === this.generation()) return this.send('pubsub/publish', json, token).then(deliveredOf)
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ token, json, bytes: Buffer.byteLength(json), resolve, reject })
      if (!this.busy) {
        this.busy = true
        // What this tick still publishes joins the batch.
        setImmediate(() => void this.drain())
      }
    })
  }

  /** Sends what waits, batch after batch, until nothing does. */
  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.takeBatch()
      try {
        await this.sendBatch(batch)
      } catch (e) {
        // Not expected (sendBatch settles every promise itself); no batch is left unsettled.
        for (const w of batch) w.reject(e)
      }
    }
    this.busy = false
  }

  /** The longest run at the front of the queue one batch carries: the same token, within the limits. */
  private takeBatch(): Waiting[] {
    const first = this.queue[0]!
    let bytes = 0
    let n = 0
    for (const w of this.queue) {
      if (n > 0 && (n >= MAX_BATCH || bytes + w.bytes > MAX_BATCH_BYTES || w.token !== first.token)) break
      bytes += w.bytes
      n++
    }
    return this.queue.splice(0, n)
  }

  private async sendBatch(batch: Waiting[]): Promise<void> {
    if (batch.length === 1 || this.unsupportedAt === this.generation()) return this.sendEach(batch)
    const generation = this.generation()
    let out: unknown
    try {
      out = await this.send('pubsub/publish_batch', `{"messages":[${batch.map((w) => w.json).join(',')}]}`, batch[0]!.token)
    } catch (e) {
      if (e instanceof CallError && e.code === 'NOT_FOUND') {
        this.unsupportedAt = generation
        return this.sendEach(batch)
      }
      for (const w of batch) w.reject(e)
      return
    }
    const results = (out as { results?: unknown } | null)?.results
    if (!Array.isArray(results) || results.length !== batch.length) {
      const e = new CallError('INTERNAL', 'pubsub/publish_batch answered without one result per message')
      for (const w of batch) w.reject(e)
      return
    }
    batch.forEach((w, i) => {
      const result = results[i] as { error?: unknown } | null
      if (result?.error === undefined) w.resolve(deliveredOf(result))
      else w.reject(callErrorFrom(result.error) ?? new CallError('INTERNAL', 'an unreadable error for this message'))
    })
  }

  /** Each message as its own `pubsub/publish`, all in flight together. */
  private async sendEach(batch: Waiting[]): Promise<void> {
    await Promise.all(
      batch.map((w) =>
        this.send('pubsub/publish', w.json, w.token).then(
          (out) => w.resolve(deliveredOf(out)),
          (e: unknown) => w.reject(e),
        ),
      ),
    )
  }
}
