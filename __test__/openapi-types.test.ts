// `npx alknet-openapi-types`: the generated file type-checks (strict), makes `peer.typed()` of an
// imported API typed rather than `unknown` (wrong inputs and outputs are compile errors), and its
// `operations` contract calls a real imported API at run time.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { todoApi } from './openapi-server'
import { explain, repoRoot, run } from './processes'
import { dial, start } from './support'
import { alknet } from './helpers'

const cli = join(repoRoot, 'dist/openapi-types-cli.js')
const dist = join(repoRoot, 'dist/index.js')
const fixture = (name: string) => join(repoRoot, '__test__/fixtures/openapi', name)

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'alknet-openapi-types-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function generate(source: string, file: string, ...args: string[]): Promise<string> {
  const out = await run(process.execPath, [cli, source, '--import-from', dist, ...args])
  expect(out.code, explain(out)).toBe(0)
  await writeFile(join(dir, file), out.stdout)
  return out.stdout
}

describe('alknet-openapi-types', () => {
  it('generates strict, typed code for Petstore and a recursive schema; wrong calls do not compile', async () => {
    const petstore = await generate(fixture('petstore-3.0.json'), 'petstore-api.ts')
    expect(petstore).toContain('"pet/get_pet_by_id": { kind: \'query\'; input: PetGetPetByIdInput; output: PetGetPetByIdOutput }')
    await generate(fixture('schema-circular-3.0.json'), 'circular-api.ts', '--namespace', 'circ')
    await writeFile(
      join(dir, 'usage.ts'),
      `import { fromOpenAPI, type Peer } from ${JSON.stringify(dist)}
import { operations, type Operations } from './petstore-api'
import { operations as circular } from './circular-api'

export async function use(peer: Peer): Promise<string> {
  const api = peer.typed(operations)
  const pet = await api.pet.get_pet_by_id({ petId: 1 })
  const name: string = pet.name
  const urls: string[] = pet.photoUrls
  await api.pet.find_pets_by_status({ status: ['available', 'sold'] })
  await api.pet.add_pet({ body: { name: 'rex', photoUrls: [] } })
  // @ts-expect-error petId is an integer
  await api.pet.get_pet_by_id({ petId: 'one' })
  // @ts-expect-error the body needs photoUrls
  await api.pet.add_pet({ body: { name: 'rex' } })
  // @ts-expect-error the status is an enum
  await api.pet.find_pets_by_status({ status: ['lost'] })
  // @ts-expect-error a Pet has no owner
  pet.owner
  // @ts-expect-error no such operation
  api.pet.adopt
  const served = await fromOpenAPI<Operations>('petstore.json')
  const again = peer.typed(served)
  const order = await again.store.get_order_by_id({ orderId: 3 })
  const quantity: number | undefined = order.quantity
  const deep = await peer.typed(circular).circ.post_not_quite_circular({ body: { rules: { transitions: [{ offsetBefore: { id: 'a', rules: { transitions: [] } } }] } } })
  return name + urls.length + quantity + String(deep)
}
`,
    )
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          target: 'ES2022',
          module: 'commonjs',
          moduleResolution: 'node',
          types: ['node'],
          typeRoots: [join(repoRoot, 'node_modules/@types')],
          skipLibCheck: true,
        },
        files: ['usage.ts'],
      }),
    )
    const tsc = await run(process.execPath, [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', dir])
    expect(tsc.code, explain(tsc)).toBe(0)
  }, 120_000)

  it('the generated `operations` contract calls a real imported API through peer.typed', async () => {
    const api = await todoApi()
    try {
      await generate(api.specUrl, 'todo-api.ts')
      const generated = (await import(join(dir, 'todo-api.ts'))) as { operations: Parameters<InstanceType<typeof alknet.Peer>['typed']>[0] }
      const peer = await dial(await start(await alknet.fromOpenAPI(api.specUrl, { onUnsupported: () => {} })))
      const typed = peer.typed(generated.operations) as unknown as {
        todos: { create_todo(input: unknown): Promise<unknown>; list_todos(input: unknown): Promise<unknown> }
      }
      expect(await typed.todos.create_todo({ body: { title: 'typed' } })).toMatchObject({ id: 1, title: 'typed' })
      expect(await typed.todos.list_todos({})).toEqual([{ id: 1, title: 'typed', done: false, note: null }])
    } finally {
      await api.app.close()
    }
  })

  it('says what is wrong with its arguments and documents', async () => {
    const usage = await run(process.execPath, [cli])
    expect([usage.code, usage.stderr]).toEqual([2, expect.stringContaining('usage: alknet-openapi-types')])
    const swagger = await run(process.execPath, [cli, fixture('petstore-swagger-2.0.json')])
    expect([swagger.code, swagger.stderr]).toEqual([1, expect.stringContaining('Swagger 2.0 documents are not supported')])
  })
})
