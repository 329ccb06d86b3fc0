// The published types: no `any` in any declaration of dist/, and TSDoc on every export of the
// entry points and on every member of the exported classes and interfaces.
import ts from 'typescript'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

const dist = new URL('../dist/', import.meta.url).pathname
const files = readdirSync(dist).filter((f) => f.endsWith('.d.ts')).map((f) => join(dist, f))
const program = ts.createProgram(files, { strict: true, noEmit: true })
const checker = program.getTypeChecker()
const problems = []

for (const file of files) {
  const source = program.getSourceFile(file)
  const visit = (node) => {
    if (node.kind === ts.SyntaxKind.AnyKeyword) {
      const { line } = source.getLineAndCharacterOfPosition(node.getStart())
      problems.push(`${file}:${line + 1}: \`any\` in a published type`)
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
}

const documented = (symbol) => symbol.getDocumentationComment(checker).length > 0
// The package's entry points: `@alkdev/alknet` and `@alkdev/alknet/client`.
const entries = ['index.d.ts', 'client.d.ts'].map((name) => program.getSourceFile(join(dist, name)))
for (const exported of entries.flatMap((entry) => checker.getExportsOfModule(checker.getSymbolAtLocation(entry)))) {
  const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported
  // Re-exports of TypeBox carry TypeBox's own documentation.
  const fromTypebox = symbol.declarations?.some((d) => d.getSourceFile().fileName.includes('@sinclair'))
  if (fromTypebox) continue
  if (!documented(symbol)) problems.push(`export ${exported.name} has no TSDoc`)
  if (symbol.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface)) {
    for (const member of symbol.members?.values() ?? []) {
      const name = member.getName()
      const hidden = member.declarations?.some((d) => ts.getCombinedModifierFlags(d) & ts.ModifierFlags.Private)
      if (member.flags & ts.SymbolFlags.TypeParameter) continue
      if (name === "__constructor" || hidden || name.startsWith('__@')) continue
      if (!documented(member)) problems.push(`${exported.name}.${name} has no TSDoc`)
    }
  }
}

if (problems.length > 0) {
  console.error(problems.join('\n'))
  process.exit(1)
}
console.log(`published types: ${files.length} declaration files, no any, every export documented`)
