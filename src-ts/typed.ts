import type { RemoteOperations, RequestOptions, Subscription } from './call'
import type { OperationMap, OperationTypes, Registry } from './registry'

/** The method an operation becomes: a promise for queries and mutations, an async iterator for subscriptions. */
export type OperationMethod<T extends OperationTypes> = T['kind'] extends 'subscription'
  ? (input: T['input'], options?: RequestOptions) => Subscription<T['output']>
  : (input: T['input'], options?: RequestOptions) => Promise<T['output']>

type Split<N extends string> = N extends `${infer Head}/${infer Rest}` ? [Head, ...Split<Rest>] : [N]

type Nest<Path extends string[], V> = Path extends [infer Head extends string, ...infer Rest extends string[]]
  ? { readonly [K in Head]: Nest<Rest, V> }
  : V

type Intersect<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never

/**
 * A registry's operations as nested methods: `math/add` becomes `api.math.add(input)`.
 *
 * @example
 * ```ts
 * const api = peer.typed(ops)
 * const sum: number = await api.math.add({ a: 1, b: 2 })
 * for await (const tick of api.clock.ticks({ everyMs: 100 })) { … }
 * ```
 */
export type TypedApi<Ops extends OperationMap> = Intersect<
  { [N in keyof Ops & string]: Nest<Split<N>, OperationMethod<Ops[N]>> }[keyof Ops & string]
>

/** A proxy for `registry`'s operations, calling them on `target`. @internal */
export function typedApi<Ops extends OperationMap>(target: RemoteOperations, registry: Registry<Ops>): TypedApi<Ops> {
  const at = (path: string[]): unknown =>
    new Proxy(() => undefined, {
      get: (_fn, prop) => (typeof prop === 'string' && prop !== 'then' ? at([...path, prop]) : undefined),
      apply: (_fn, _this, args: unknown[]) => {
        const name = path.join('/')
        const options = args[1] as RequestOptions | undefined
        const kind = registry.kindOf(name)
        if (kind === undefined) throw new Error(`${name} is not an operation of the registry given to typed()`)
        return kind === 'subscription' ? target.subscribe(name, args[0], options) : target.call(name, args[0], options)
      },
    })
  return at([]) as TypedApi<Ops>
}
