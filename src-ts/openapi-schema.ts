// OpenAPI schema objects → JSON Schema 2020-12, the dialect of operation schemas.
//
// The document is dereferenced by swagger-parser, so a schema is a plain object graph; a circular
// `$ref` is an object that contains itself. JSON cannot hold a cycle, so each object that recurs
// on its own path is named once in `$defs` and referenced there (`{ "$ref": "#/$defs/Node" }`).
// OpenAPI 3.0 schemas are then converted by @openapi-contrib/openapi-schema-to-json-schema
// (`nullable`, formats, keywords JSON Schema lacks); what it leaves in draft-04 form is finished
// here. OpenAPI 3.1 schemas already are JSON Schema 2020-12 and are only made acyclic.
import { openapiSchemaToJsonSchema } from '@openapi-contrib/openapi-schema-to-json-schema'
import { isObject } from './bridge'

/** A JSON Schema (2020-12) as plain JSON. @internal */
export type JsonSchema = Record<string, unknown>

/** Which way a schema is used: readOnly properties are dropped from requests, writeOnly from responses. @internal */
export type Direction = 'request' | 'response'

/**
 * Converts the schemas of one operation. All schemas converted by one instance share its `$defs`,
 * so an operation's input and output each get the definitions they need at their root.
 * @internal
 */
export class SchemaConverter {
  private readonly defNames = new Map<object, string>()
  private readonly defs = new Map<string, JsonSchema>()
  private readonly used = new Set<string>()

  /** `components`: the document's named schemas, so a recursive one keeps its component name in `$defs`. */
  constructor(
    private readonly openapi30: boolean,
    private readonly components: ReadonlyMap<object, string> = new Map(),
  ) {}

  /** `schema` (dereferenced, possibly cyclic) as acyclic JSON Schema 2020-12. */
  convert(schema: unknown, direction: Direction): JsonSchema {
    const acyclic = this.acyclic(schema, new Set())
    return this.dialect(acyclic, direction)
  }

  /** `schema` with the `$defs` every `$ref` made so far needs, at its root. Resets the set used. */
  withDefs(schema: JsonSchema, direction: Direction): JsonSchema {
    if (this.used.size === 0) return schema
    const $defs: Record<string, JsonSchema> = {}
    // A definition may reference others that were named while converting it.
    for (let grew = true; grew; ) {
      grew = false
      for (const name of this.used) {
        if ($defs[name] !== undefined) continue
        const def = this.defs.get(name)
        if (def === undefined) continue
        $defs[name] = this.dialect(def, direction)
        grew = true
      }
    }
    this.used.clear()
    return { ...schema, $defs }
  }

  /** `node` without cycles; `names`: its keys are property names, not keywords. */
  private acyclic(node: unknown, path: Set<object>, names = false): unknown {
    if (Array.isArray(node)) return node.map((item) => this.acyclic(item, path))
    if (!isObject(node)) return node
    if (path.has(node)) return { $ref: `#/$defs/${this.nameOf(node)}` }
    path.add(node)
    const out: JsonSchema = {}
    for (const [key, value] of Object.entries(node)) {
      // Examples and extensions are data, not schema; they may hold anything, cycles included.
      if (!names && (key === 'example' || key === 'examples' || key.startsWith('x-'))) continue
      out[key] = this.acyclic(value, path, !names && SCHEMA_MAPS.has(key))
    }
    path.delete(node)
    const name = this.defNames.get(node)
    if (name !== undefined) {
      if (!this.defs.has(name)) this.defs.set(name, out)
      this.used.add(name)
    }
    return out
  }

  private nameOf(node: Record<string, unknown>): string {
    let name = this.defNames.get(node)
    if (name === undefined) {
      const given = this.components.get(node) ?? (typeof node.title === 'string' ? node.title : 'def')
      const base = given.replace(/[^A-Za-z0-9_.-]/g, '_') || 'def'
      name = base
      for (let i = 2; [...this.defNames.values()].includes(name); i++) name = `${base}${i}`
      this.defNames.set(node, name)
    }
    this.used.add(name)
    return name
  }

  private dialect(schema: unknown, direction: Direction): JsonSchema {
    if (!isObject(schema)) return schema === false ? { not: {} } : {}
    const copy = JSON.parse(JSON.stringify(schema)) as JsonSchema
    if (!this.openapi30) return copy
    const converted = openapiSchemaToJsonSchema(copy, {
      cloneSchema: false,
      removeReadOnly: direction === 'request',
      removeWriteOnly: direction === 'response',
      definitionKeywords: ['$defs'],
      beforeTransform: (s) => nullableWithoutType(s as JsonSchema),
      afterTransform: (s) => exclusiveBounds(s as JsonSchema),
    }) as JsonSchema
    delete converted.$schema
    return converted
  }
}

/** Keywords whose value maps names to schemas. */
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas'])

/**
 * OpenAPI 3.0 `nullable: true` beside `allOf`/`oneOf`/`anyOf`/`enum` without a `type`: the
 * converter only handles it next to `type`, so it becomes `anyOf: [schema, { type: 'null' }]`.
 */
function nullableWithoutType(schema: JsonSchema): JsonSchema {
  if (schema.nullable !== true || 'type' in schema) return schema
  const rest: JsonSchema = { ...schema }
  delete rest.nullable
  return { anyOf: [rest, { type: 'null' }] }
}

/** OpenAPI 3.0 (draft-04) `exclusiveMinimum: true` + `minimum: n` → 2020-12 `exclusiveMinimum: n`. */
function exclusiveBounds(schema: JsonSchema): JsonSchema {
  for (const [flag, bound] of [
    ['exclusiveMinimum', 'minimum'],
    ['exclusiveMaximum', 'maximum'],
  ] as const) {
    if (typeof schema[flag] !== 'boolean') continue
    if (schema[flag] === true && typeof schema[bound] === 'number') {
      schema[flag] = schema[bound]
      delete schema[bound]
    } else {
      delete schema[flag]
    }
  }
  return schema
}

/** The document's `components.schemas`, by object (after dereferencing, `$ref`s point at these very objects). @internal */
export function componentNames(document: Record<string, unknown>): Map<object, string> {
  const names = new Map<object, string>()
  const schemas = isObject(document.components) && isObject(document.components.schemas) ? document.components.schemas : {}
  for (const [name, schema] of Object.entries(schemas)) if (isObject(schema)) names.set(schema, name)
  return names
}
