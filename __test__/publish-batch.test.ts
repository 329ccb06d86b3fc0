// Batched publishes (the proposed `pubsub/publish_batch`): publishes a peer makes together travel
// as one request, each promise still settles with its own count or error, and what is published
// reaches a subscriber once, in the order the publishes were made. Over QUIC and TCP+TLS.
import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { alknet } from './helpers'
import { dial, rejection, start, take } from './support'

const { Registry } = alknet

const sha = (t: string) => `sha256:${createHash('sha256').update(t).digest('hex')}`

/** A node where anyone may use `b/>`, and only `root` (nobody here) may publish to `secret/>`. */
const node = () =>
  start(new Registry(), {
    auth: { peers: [{ id: 'press', tokenHash: sha('tok-press'), scopes: ['press'] }] },
    pubsub: {
      rules: [
        { pattern: 'b/>', publish: null, subscribe: null, anonymous: true },
        { pattern: 'secret/>', publish: ['root'], subscribe: null, anonymous: false },
      ],
    },
  })

/** A subscription to `b/>` on `peer`, registered on the node (a probe reached it and was read off). */
async function subscribed(publisher: Awaited<ReturnType<typeof dial>>, subscriber: Awaited<ReturnType<typeof dial>>) {
  const messages = subscriber.topic<unknown>('b/>')
  while ((await publisher.publish('b/probe', 'probe')) === 0);
  expect((await messages.next()).value).toEqual({ topic: 'b/probe', data: 'probe' })
  return messages
}

describe.each(['quic', 'tcp'] as const)('batched publishes over %s', (transport) => {
  it('publishes made in one tick: each settles on its own, the others arrive once and in order', async () => {
    const n = await node()
    const publisher = await dial(n, { transport, token: 'tok-press' })
    const messages = await subscribed(publisher, await dial(n, { transport }))
    const topicOf = (i: number) => (i === 100 ? 'secret/x' : i === 200 ? 'b/*' : `b/${i % 7}`)
    const settled = await Promise.allSettled(Array.from({ length: 600 }, (_, i) => publisher.publish(topicOf(i), { i })))
    settled.forEach((s, i) => {
      if (i === 100) expect(s.status === 'rejected' && s.reason.code).toBe('FORBIDDEN')
      else if (i === 200) expect(s.status === 'rejected' && s.reason.code).toBe('INVALID_INPUT')
      else expect(s).toEqual({ status: 'fulfilled', value: 1 })
    })
    const expected = Array.from({ length: 600 }, (_, i) => i).filter((i) => i !== 100 && i !== 200)
    expect(await take(messages, expected.length)).toEqual(expected.map((i) => ({ topic: `b/${i % 7}`, data: { i } })))
    // Nothing more was delivered: the next message is the next one published.
    await publisher.publish('b/end', 'end')
    expect((await messages.next()).value).toEqual({ topic: 'b/end', data: 'end' })
  })

  it('publishes made while others are in flight arrive in the order they were made', async () => {
    const n = await node()
    const publisher = await dial(n, { transport })
    const messages = await subscribed(publisher, await dial(n, { transport }))
    const order: number[] = []
    const received = take(messages, 2_000)
    let next = 0
    // 16 loops, each publishing its next message once its previous one is answered.
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < 2_000) {
          const i = next++
          order.push(i)
          expect(await publisher.publish('b/t', i)).toBe(1)
        }
      }),
    )
    expect((await received).map((m) => m.data)).toEqual(order)
  })

  it('splits large publishes into batches under the frame limit, and refuses an oversized batch whole', async () => {
    const n = await node()
    const publisher = await dial(n, { transport })
    const messages = await subscribed(publisher, await dial(n, { transport }))
    // 24 messages of 100 KB: far more than one frame of an unidentified peer (1 MiB) together.
    const blob = 'x'.repeat(100_000)
    const counts = await Promise.all(Array.from({ length: 24 }, (_, i) => publisher.publish('b/big', { i, blob })))
    expect(counts).toEqual(Array(24).fill(1))
    expect((await take(messages, 24)).map((m) => (m.data as { i: number }).i)).toEqual(Array.from({ length: 24 }, (_, i) => i))
    // The operation itself takes at most 1 024 messages: more is INVALID_INPUT, nothing published.
    const many = Array.from({ length: 1025 }, (_, i) => ({ topic: 'b/many', data: i }))
    expect((await rejection(publisher.call('pubsub/publish_batch', { messages: many }))).code).toBe('INVALID_INPUT')
    await publisher.publish('b/after', 'after')
    expect((await messages.next()).value).toEqual({ topic: 'b/after', data: 'after' })
  })
})
