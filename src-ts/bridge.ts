// What the bridges (fromOpenAPI, fromMCP, toMCP) share: the name rule of operations and the
// report of what an import could not carry over. Every rule is described in docs/bridges.md.

/** Something a bridge met and could not carry over, and why: it is reported, never dropped silently. */
export interface Unsupported {
  /** Where: an OpenAPI `METHOD /path` (with its operationId), an MCP tool or resource name. */
  where: string
  /** The feature, e.g. `cookie parameter`, `multipart/form-data request body`, `Swagger 2.0`. */
  feature: string
  /** What the bridge did about it: the operation was skipped, or only that part was left out. */
  action: 'operation skipped' | 'part left out'
  /** One line for a log: where, what and why. */
  message: string
}

/** Where unsupported features are reported; the default writes one line per feature to `console.warn`. */
export type UnsupportedReporter = (issue: Unsupported) => void

/** The default reporter: one line on stderr, never a payload. @internal */
export const warnUnsupported =
  (bridge: string): UnsupportedReporter =>
  (issue) =>
    console.warn(`alknet ${bridge}: ${issue.message}`)

/** An operation an import registered, as {@link OpenApiRegistry.describe} and {@link McpRegistry.describe} list it. */
export interface ImportedOperation {
  /** The operation name, e.g. `pets/list_pets`. */
  name: string
  /** Query, mutation or subscription. */
  kind: 'query' | 'mutation' | 'subscription'
  /** The description it got from the source. */
  description?: string
  /** Its input JSON Schema (2020-12), as the node validates it. */
  input: unknown
  /** Its output JSON Schema (2020-12), of each item for a subscription. */
  output: unknown
}

/** The registered operations of `registry`, in order. @internal */
export function describeOperations(operations: ReadonlyMap<string, { kind: ImportedOperation['kind']; spec: { description?: string; input_schema: unknown; output_schema: unknown } }>): ImportedOperation[] {
  return [...operations].map(([name, op]) => {
    const d: ImportedOperation = { name, kind: op.kind, input: op.spec.input_schema, output: op.spec.output_schema }
    if (op.spec.description !== undefined) d.description = op.spec.description
    return d
  })
}

/** What an import does with an unsupported feature: how `report(where, feature, action, why)` is called. @internal */
export type Report = (where: string, feature: string, action: Unsupported['action'], why: string) => void

/**
 * The `report` of one import: records each issue in `into`, passes it to `onUnsupported` (default:
 * a warning line), or throws when `strict`.
 * @internal
 */
export function reporter(bridge: string, options: { strict?: boolean; onUnsupported?: UnsupportedReporter }, into: Unsupported[]): Report {
  const onUnsupported = options.onUnsupported ?? warnUnsupported(bridge)
  return (where, feature, action, why) => {
    const issue: Unsupported = { where, feature, action, message: `${where}: ${feature}: ${why}; ${action}` }
    if (options.strict) throw new Error(`${bridge}: ${issue.message} (strict)`)
    into.push(issue)
    onUnsupported(issue)
  }
}

/** The registry's name rule (the Rust `valid_name`): two or more lowercase `a-z 0-9 - _` segments. */
const NAME = /^[a-z0-9_-]+(\/[a-z0-9_-]+)+$/

/** Whether `name` is a valid operation name. @internal */
export function validName(name: string): boolean {
  return NAME.test(name)
}

/**
 * One name segment from any identifier: camelCase and PascalCase boundaries become `_`, every run
 * of other characters becomes `_`, all lowercase, no `_` at either end; `''` stays `''`.
 * `listPets` → `list_pets`, `get-sum` → `get_sum`, `HTTPStatus` → `http_status`.
 * @internal
 */
export function segment(identifier: string): string {
  return identifier
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
}

/**
 * Names operations, refusing collisions: two sources that map to one name are a configuration
 * error the user must resolve (with `include`/`exclude` or a `name` callback), never a silent overwrite.
 * @internal
 */
export class Names {
  private readonly taken = new Map<string, string>()

  constructor(private readonly bridge: string) {}

  /** Claims `name` for `source`; throws if the name is invalid or already claimed. */
  claim(name: string, source: string): string {
    if (!validName(name)) {
      throw new Error(
        `${this.bridge}: ${source} maps to the operation name ${JSON.stringify(name)}, which is not lowercase ` +
          '`namespace/op` segments (a-z, 0-9, -, _); pass a `name` option that returns a valid one',
      )
    }
    const other = this.taken.get(name)
    if (other !== undefined) {
      throw new Error(
        `${this.bridge}: ${source} and ${other} both map to the operation name ${JSON.stringify(name)}; ` +
          'exclude one of them or pass a `name` option that tells them apart',
      )
    }
    this.taken.set(name, source)
    return name
  }
}

/** Whether `value` is a plain JSON object (not an array, not null). @internal */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** A filter by operation name: exact names, `prefix/*` wildcards or regular expressions. */
export type NameFilter = ReadonlyArray<string | RegExp>

/** Whether any of `candidates` (an operation's names) matches `filter`. @internal */
export function matches(candidates: ReadonlyArray<string | undefined>, filter: NameFilter): boolean {
  return candidates.some(
    (name) =>
      name !== undefined &&
      filter.some((f) => (typeof f === 'string' ? (f.endsWith('/*') ? name.startsWith(f.slice(0, -1)) : name === f) : f.test(name))),
  )
}

/** Whether an operation with these names passes `include` (when given) and is not in `exclude`. @internal */
export function selected(candidates: ReadonlyArray<string | undefined>, include: NameFilter | undefined, exclude: NameFilter | undefined): boolean {
  if (include !== undefined && !matches(candidates, include)) return false
  return exclude === undefined || !matches(candidates, exclude)
}
