// The node's own publishes, crossing into the native layer together.
import type * as native from '../index.js'
import { CallError, fromNative } from './errors'
import type { TopicMessage } from './remote'

/** A publish waiting for the end of its tick: topic, `data` as JSON, its promise. */
interface Waiting {
  topic: string
  data: string
  resolve: (delivered: number) => void
  reject: (error: unknown) => void
}

/** One `{ "topic", "data" }` item as JSON (`data` already JSON). */
const item = (topic: string, data: string) => `{"topic":${JSON.stringify(topic)},"data":${data}}`

/** `data` as JSON; `undefined` (and what JSON has no form for) is `null`. */
const dataJson = (data: unknown) => JSON.stringify(data ?? null) ?? 'null'

/**
 * The node's publishes: those made in one tick cross into the native layer as one `publishMany`
 * at its end (in the order they were made), so a burst of publishes pays one crossing, and each
 * promise settles with its own count. If the native layer refuses the batch (a bad topic: nothing
 * was published), each goes alone and settles with its own count or error.
 */
export class NodePublisher {
  private waiting: Waiting[] = []

  /** @param node - the native node */
  constructor(private readonly node: native.Node) {}

  /** Queues one publish for the end of this tick; resolves with how many subscriptions it reached. */
  publish(topic: string, data: unknown): Promise<number> {
    // Inside the executor: data JSON cannot express (a BigInt) rejects rather than throws.
    return new Promise((resolve, reject) => {
      if (this.waiting.push({ topic, data: dataJson(data), resolve, reject }) === 1) queueMicrotask(() => this.flush())
    })
  }

  /** Publishes `messages` now, after what is waiting; throws `INVALID_INPUT` (naming the message) if one is bad. */
  publishMany(messages: readonly TopicMessage[]): number[] {
    this.flush()
    if (messages.length === 0) return []
    let json = '['
    for (let i = 0; i < messages.length; i++) {
      const { topic, data } = messages[i]!
      if (typeof topic !== 'string') throw new CallError('INVALID_INPUT', `message ${i}: the topic must be a string, not ${typeof topic}`)
      json += `${i === 0 ? '' : ','}${item(topic, dataJson(data))}`
    }
    try {
      return this.node.publishMany(`${json}]`)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** Publishes what is waiting (call before anything that must come after it, e.g. a reload). */
  flush(): void {
    const batch = this.waiting
    if (batch.length === 0) return
    this.waiting = []
    if (batch.length > 1) {
      let counts: number[] | undefined
      try {
        counts = this.node.publishMany(`[${batch.map((w) => item(w.topic, w.data)).join(',')}]`)
      } catch {
        // Refused whole, nothing published: each alone below, with its own count or error.
      }
      if (counts !== undefined) {
        batch.forEach((w, i) => w.resolve(counts[i]!))
        return
      }
    }
    for (const w of batch) {
      try {
        w.resolve(this.node.publish(w.topic, w.data))
      } catch (e) {
        w.reject(fromNative(e))
      }
    }
  }
}
