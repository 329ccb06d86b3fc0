// The node's own publishes from JavaScript: `publish` one message per call, `publishMany` several
// in one call into the native layer. Both reach subscribers in order, count the subscriptions each
// message reached, apply the subscribers' topic rules, and refuse bad topics with a clear error.
import { describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { alknet } from './helpers'
import { dial, rejection, start, take } from './support'

const { Registry } = alknet

const sha = (t: string) => `sha256:${createHash('sha256').update(t).digest('hex')}`

type Message = { topic: string; data: unknown }

/** A node where anyone may receive `news/>`, and only the `staff` scope `staff/>`. */
const node = () =>
  start(new Registry(), {
    auth: { peers: [{ id: 'staff', tokenHash: sha('tok-staff'), scopes: ['staff'] }] },
    pubsub: {
      rules: [
        { pattern: 'news/>', publish: [], subscribe: null, anonymous: true },
        { pattern: 'staff/>', publish: [], subscribe: ['staff'], anonymous: false },
      ],
    },
  })

/** A subscription to `pattern` on `peer`, registered on the node (a probe reached it and was read off). */
async function subscribed(n: Awaited<ReturnType<typeof node>>, peer: Awaited<ReturnType<typeof dial>>, pattern: string, probe: string) {
  const messages = peer.topic<unknown>(pattern)
  while ((await n.publish(probe, 'probe')) === 0);
  expect((await messages.next()).value).toEqual({ topic: probe, data: 'probe' })
  return messages
}

describe.each(['quic', 'tcp'] as const)('the node publishes over %s', (transport) => {
  it('publishMany reaches each subscriber once, in order, and counts the subscriptions each message reached', async () => {
    const n = await node()
    // The narrower one first: the wider one's probe does not reach it.
    const second = await subscribed(n, await dial(n, { transport }), 'news/sport/*', 'news/sport/probe')
    const first = await subscribed(n, await dial(n, { transport }), 'news/>', 'news/probe')
    const messages: Message[] = Array.from({ length: 300 }, (_, i) => ({
      topic: i % 3 === 0 ? `news/sport/${i}` : i % 3 === 1 ? `news/tech/${i}` : 'elsewhere/x',
      data: { i, text: `"quoted" \u2028 ${'é'.repeat(i % 5)}` },
    }))
    const counts = await n.publishMany(messages)
    expect(counts).toEqual(messages.map((_, i) => (i % 3 === 0 ? 2 : i % 3 === 1 ? 1 : 0)))
    const news = messages.filter((m) => m.topic.startsWith('news/'))
    expect(await take(first, news.length)).toEqual(news)
    const sport = messages.filter((m) => m.topic.startsWith('news/sport/'))
    expect(await take(second, sport.length)).toEqual(sport)
  })

  it('publish and publishMany keep their order at a subscriber, and a missing data is null', async () => {
    const n = await node()
    const messages = await subscribed(n, await dial(n, { transport }), 'news/>', 'news/probe')
    const published = [n.publish('news/a', 0), n.publishMany([{ topic: 'news/a', data: 1 }, { topic: 'news/a', data: undefined }]), n.publish('news/a', 3)]
    expect(await Promise.all(published)).toEqual([1, [1, 1], 1])
    expect(await take(messages, 4)).toEqual([0, 1, null, 3].map((data) => ({ topic: 'news/a', data })))
  })

  it('publishes made in one tick settle on their own: a bad topic rejects alone, the others arrive in order', async () => {
    const n = await node()
    const messages = await subscribed(n, await dial(n, { transport }), 'news/>', 'news/probe')
    const topicOf = (i: number) => (i === 50 ? 'news/*' : `news/${i % 3}`)
    const settled = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => n.publish(topicOf(i), { i })))
    settled.forEach((s, i) => {
      if (i === 50) expect(s.status === 'rejected' && s.reason.code).toBe('INVALID_INPUT')
      else expect(s).toEqual({ status: 'fulfilled', value: 1 })
    })
    const expected = Array.from({ length: 100 }, (_, i) => i).filter((i) => i !== 50)
    expect(await take(messages, expected.length)).toEqual(expected.map((i) => ({ topic: `news/${i % 3}`, data: { i } })))
    // Nothing else was delivered: the next message is the next one published.
    expect(await n.publish('news/end', 'end')).toBe(1)
    expect(await take(messages, 1)).toEqual([{ topic: 'news/end', data: 'end' }])
  })

  it('data a subscriber could not decode is refused with INVALID_INPUT, and the subscriber keeps its connection', async () => {
    const n = await node()
    const messages = await subscribed(n, await dial(n, { transport }), 'news/>', 'news/probe')
    // Half an emoji (text cut with slice) and nesting past the decoders' limit: valid JSON text,
    // which a subscriber's decoder would refuse and, on a shared stream, close the connection on.
    const half = '😀'.slice(0, 1)
    let deep: unknown = 1
    for (let i = 0; i < 200; i++) deep = [deep]
    for (const data of [half, { text: half }, deep]) {
      expect((await rejection(n.publish('news/bad', data))).code).toBe('INVALID_INPUT')
      const many = await rejection(n.publishMany([{ topic: 'news/ok', data: 1 }, { topic: 'news/bad', data }]))
      expect([many.code, many.message]).toEqual(['INVALID_INPUT', expect.stringMatching(/message 1/)])
    }
    const settled = await Promise.allSettled([n.publish('news/a', 1), n.publish('news/bad', half), n.publish('news/a', 2)])
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect(await take(messages, 2)).toEqual([1, 2].map((data) => ({ topic: 'news/a', data })))
    expect(await n.publish('news/end', 'end')).toBe(1)
    expect(await take(messages, 1)).toEqual([{ topic: 'news/end', data: 'end' }])
  })

  it('a subscriber receives only the topics its rules let it', async () => {
    const n = await node()
    const anonymous = await subscribed(n, await dial(n, { transport }), '>', 'news/probe')
    const staff = await subscribed(n, await dial(n, { transport, token: 'tok-staff' }), 'staff/>', 'staff/probe')
    expect(await n.publishMany([{ topic: 'staff/memo', data: 'internal' }, { topic: 'news/x', data: 'public' }])).toEqual([1, 1])
    expect(await take(staff, 1)).toEqual([{ topic: 'staff/memo', data: 'internal' }])
    expect(await take(anonymous, 1)).toEqual([{ topic: 'news/x', data: 'public' }])
  })

  it('an invalid topic rejects the whole call with INVALID_INPUT naming the message, and nothing is published', async () => {
    const n = await node()
    const messages = await subscribed(n, await dial(n, { transport }), 'news/>', 'news/probe')
    const wildcard = await rejection(n.publishMany([{ topic: 'news/a', data: 1 }, { topic: 'news/*', data: 2 }]))
    expect(wildcard.code).toBe('INVALID_INPUT')
    expect(wildcard.message).toMatch(/message 1/)
    const notString = await rejection(n.publishMany([{ topic: 'news/a', data: 1 }, { topic: 7 as unknown as string, data: 2 }]))
    expect(notString.code).toBe('INVALID_INPUT')
    expect(notString.message).toMatch(/message 1/)
    expect(await n.publishMany([])).toEqual([])
    // Nothing of the refused calls arrived: the next message is the one published now.
    expect(await n.publishMany([{ topic: 'news/after', data: 'after' }])).toEqual([1])
    expect(await take(messages, 1)).toEqual([{ topic: 'news/after', data: 'after' }])
    // Data JSON cannot express rejects, as a promise does.
    await expect(n.publish('news/big', 1n)).rejects.toThrow(TypeError)
    await expect(n.publishMany([{ topic: 'news/big', data: 1n }])).rejects.toThrow(TypeError)
    // The node serves on.
    expect(await n.publish('news/again', 'again')).toBe(1)
    expect(await take(messages, 1)).toEqual([{ topic: 'news/again', data: 'again' }])
  })
})
