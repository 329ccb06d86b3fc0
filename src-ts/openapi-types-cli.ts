#!/usr/bin/env node
// `npx alknet-openapi-types <document> [options] > api.ts`: see openapi-types.ts.
import { parseArgs } from 'node:util'
import { openApiTypes } from './openapi-types'

const USAGE = `usage: alknet-openapi-types <openapi.json|yaml|url> [--namespace NS] [--include NAME]... [--exclude NAME]...
                            [--import-from MODULE] [--no-validate] > api.ts`

async function main(): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        namespace: { type: 'string' },
        include: { type: 'string', multiple: true },
        exclude: { type: 'string', multiple: true },
        'import-from': { type: 'string' },
        'no-validate': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help || positionals.length !== 1) {
    process.stderr.write(`${USAGE}\n`)
    return values.help ? 0 : 2
  }
  try {
    const source = await openApiTypes(positionals[0] as string, {
      namespace: values.namespace,
      include: values.include,
      exclude: values.exclude,
      importFrom: values['import-from'],
      validate: !values['no-validate'],
    })
    process.stdout.write(source)
    return 0
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`)
    return 1
  }
}

void main().then((code) => {
  process.exitCode = code
})
