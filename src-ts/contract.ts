// A registry that only knows its operations' names and kinds: what `peer.typed()` needs on a node
// that calls an imported API without importing the document itself (the types come from a
// generated file, see `npx alknet-openapi-types`).
import type { TUnsafe } from '@sinclair/typebox'
import { CallError } from './errors'
import { type OperationMap, type OperationType, Registry } from './registry'

/** Each operation's kind, by name: the runtime half of a generated `Operations` type. */
export type OperationKinds<Ops extends OperationMap> = { readonly [N in keyof Ops & string]: Ops[N]['kind'] }

/**
 * A registry of operation contracts only, for `peer.typed(contract<Ops>(kinds))`: the types come
 * from `Ops`, the kinds from `kinds`. Its handlers are never meant to run; served by mistake, each
 * answers `UNAVAILABLE`.
 *
 * @example
 * ```ts
 * import { operations } from './petstore-api' // generated: export const operations = contract<Operations>({ … })
 * const api = peer.typed(operations)
 * const pet = await api.pet.get_pet_by_id({ petId: 1 }) // typed from the document
 * ```
 */
export function contract<Ops extends OperationMap>(kinds: OperationKinds<Ops>): Registry<Ops> {
  const registry = new Registry()
  // Any input and output: the empty JSON Schema (no TypeBox at run time, so the browser client stays small).
  const any = { input: {} as TUnsafe<unknown>, output: {} as TUnsafe<unknown> }
  const refuse = (): never => {
    throw new CallError('UNAVAILABLE', 'this operation is a contract only (made by contract()); serve the real registry')
  }
  for (const [name, kind] of Object.entries(kinds) as [string, OperationType][]) {
    if (kind === 'subscription') {
      registry.subscription(name, any, async function* () {
        yield refuse()
      })
    } else if (kind === 'query') registry.query(name, any, refuse)
    else registry.mutation(name, any, refuse)
  }
  return registry as Registry as Registry<Ops>
}
