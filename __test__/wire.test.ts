// The TypeScript API's types and its one camelCase ↔ snake_case mapping (src-ts/wire.ts) against
// the Rust types themselves: the native layer hands over one fully populated sample of each
// (alknet_node::wire), so a field added on one side and not the other fails here.
import { describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { PROTOCOL_ERRORS } from '../src-ts/errors'
import type { Registry as RegistryClass } from '../src-ts/registry'
import * as wire from '../src-ts/wire'
import { alknet } from './helpers'
import { start } from './support'

const native = createRequire(import.meta.url)('../index.js') as { wireSamples(): string; protocolConstants(): string }
const samples = JSON.parse(native.wireSamples()) as Record<string, Record<string, unknown>>
const constants = JSON.parse(native.protocolConstants()) as wire.ProtocolConstants
const { Keypair, Registry, Type } = alknet

const sorted = (keys: Iterable<string>) => [...keys].sort()
const rustKeys = (type: string) => sorted(Object.keys(samples[type]))

describe('shared types', () => {
  it.each([
    ['PeerEntry', wire.PEER_ENTRY],
    ['ApiKeyEntry', wire.API_KEY_ENTRY],
    ['TopicRule', wire.TOPIC_RULE],
    ['ForwardRule', wire.FORWARD_RULE],
    ['ForwardingPolicy', wire.FORWARDING],
    ['LimitsConfig', wire.LIMITS],
    ['IrohSettings', wire.IROH],
    ['NatsConfig', wire.NATS],
    ['HttpConfig', wire.HTTP],
    ['Access', wire.ACCESS],
    ['ErrorDecl', wire.ERROR_DECLARATION],
    ['Identity', wire.IDENTITY],
  ] as const)('the TypeScript fields of %s map onto exactly the Rust fields', (type, table) => {
    expect(sorted(Object.values(table))).toEqual(rustKeys(type))
  })

  it('serve() options cover every NodeConfig key, apart from the documented ones', () => {
    const mapped = Object.values(wire.SERVE_OPTIONS).filter((v): v is NonNullable<typeof v> => v !== null)
    expect(sorted([...mapped, ...Object.keys(wire.NODE_CONFIG_ONLY)])).toEqual(rustKeys('NodeConfig'))
  })

  it('connect() options cover every ConnectConfig key', () => {
    const mapped = Object.values(wire.CONNECT_OPTIONS).filter((v): v is NonNullable<typeof v> => v !== null)
    expect(sorted(mapped)).toEqual(rustKeys('ConnectConfig'))
  })

  it('the dynamic part has the sections reload() sends', () => {
    const dynamic = wire.dynamicConfigWire({})
    expect(sorted(Object.keys(dynamic))).toEqual(rustKeys('DynamicConfig'))
    const auth = samples.DynamicConfig.auth as Record<string, unknown>
    expect(sorted(Object.keys(dynamic.auth as object))).toEqual(sorted(Object.keys(auth)))
  })

  it('an operation spec carries every field the Rust OperationSpec has', () => {
    const ops = new Registry().mutation(
      'todo/create',
      {
        input: Type.Object({}),
        output: Type.Object({}),
        description: 'd',
        errors: [{ code: 'ITEM_NOT_OWNED', description: 'd', schema: {} }],
        access: { requiredScopes: ['a'], requiredScopesAny: ['b'], resourceType: 't', resourceAction: 'w', resourceIdPath: '/id' },
        visibility: 'external',
      },
      () => ({}),
    ) as unknown as RegistryClass
    const spec = ops.operations.get('todo/create')?.spec as unknown as Record<string, Record<string, unknown>[] & Record<string, unknown>>
    expect(sorted(Object.keys(spec))).toEqual(rustKeys('OperationSpec'))
    expect(sorted(Object.keys(spec.access))).toEqual(rustKeys('Access'))
    expect(sorted(Object.keys(spec.errors[0]))).toEqual(rustKeys('ErrorDecl'))
  })

  it('the protocol error codes and their retryability match the Rust list', () => {
    expect(Object.entries(PROTOCOL_ERRORS).map(([code, retryable]) => ({ code, retryable }))).toEqual(constants.error_codes)
  })
})

describe('options cross into Rust', () => {
  it('a node takes every option set at once, and a full reload', async () => {
    const alice = Keypair.generate()
    const sha = `sha256:${'0'.repeat(64)}`
    const dynamic = {
      auth: {
        peers: [{ id: 'alice', fingerprints: [alice.fingerprint], tokenHash: sha, scopes: ['a'], resources: { todo: ['write'] }, enabled: true }],
        apiKeys: [{ prefix: 'ci', hash: sha, scopes: ['a'], resources: { todo: ['read'] }, expiresAt: 4_000_000_000 }],
      },
      pubsub: { rules: [{ pattern: 'news/>', publish: ['a'], subscribe: null, anonymous: false }] },
    }
    const node = await start(new Registry(), {
      ...dynamic,
      tcp: true,
      tls: 'raw',
      limits: { connectionsPerIp: 8, connections: 64, handshakesPerIp: 8, handshakes: 16, relayConnections: 8, streamsPerConnection: 8, maxConcurrentRequests: 8, subscriptionQueue: 8, subscriptionQueueBytes: 8, connectionQueueBytes: 8, anonymousMaxFrameBytes: 4096, connectionInputBytes: 4096, anonymousInputBytes: 4096, frameDeadlineMs: 1000, quicIdleTimeoutMs: 30000, defaultTimeoutMs: 1000, maxTimeoutMs: 2000, maxFrameBytes: 4096 },
      handshakeTimeoutMs: 5000,
      drainTimeoutMs: 1000,
      http: { decoy: 'builtin', websocket: true, gateway: { requireIdentity: true }, openapi: false },
    })
    expect(() => node.reload(dynamic)).not.toThrow()
  })

  it('a misspelt connect() option is refused with its name', async () => {
    const options = { address: '127.0.0.1:1', fingerprint: Keypair.generate().fingerprint, key: Keypair.generate(), adress: 'x' }
    await expect(alknet.connect(options as Parameters<typeof alknet.connect>[0])).rejects.toThrow(/adress/)
  })

  it('a misspelt option is refused with its name', async () => {
    type Options = Parameters<typeof alknet.serve>[0]
    const base = { listen: '127.0.0.1:0', key: Keypair.generate(), operations: new Registry() }
    await expect(alknet.serve({ ...base, limts: {} } as Options)).rejects.toThrow(/limts/)
    await expect(alknet.serve({ ...base, limits: { conectionsPerIp: 1 } } as Options)).rejects.toThrow(/conectionsPerIp/)
    await expect(alknet.serve({ ...base, http: { gateway: { requireIdentty: true } } } as Options)).rejects.toThrow(/requireIdentty/)
    await expect(alknet.serve({ ...base, http: { decoy: { dir: '/nonexistent/alknet-decoy' } } })).rejects.toThrow(/http.decoy.dir/)
  })
})
