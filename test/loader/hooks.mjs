// Module hooks: a `.ts` file of this repository loads as the JavaScript `tsc -b` emitted for it, with its
// source map, instead of being transpiled again in every test process:
//
//   src/X.ts                 -> dist/X.js                 (the issuer as it ships)
//   packages/sdk/src/X.ts    -> packages/sdk/dist/X.js    (the SDK as it ships)
//   any other X.ts           -> .build/X.js               (tests, helpers, examples: tsconfig.json)
//
// The module keeps its `.ts` URL, so `import.meta.url`, relative imports, tap's mocks and coverage see the
// source file. A source changed since the last build (newer than its output and its project's build info),
// or without output (a test added since), is transpiled here instead, so a test never runs stale code;
// `npm test` builds first, so that is the exception.
import { readFile, stat } from 'node:fs/promises'
import { basename, dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const OUT = [
  { from: join(ROOT, 'src') + sep, to: join(ROOT, 'dist') + sep },
  { from: join(ROOT, 'packages', 'sdk', 'src') + sep, to: join(ROOT, 'packages', 'sdk', 'dist') + sep },
  { from: ROOT + sep, to: join(ROOT, '.build') + sep },
]

/**
 * Where tsc -b writes the JavaScript of `file` (a .ts path inside the repository) and the build info of
 * that project, or undefined.
 */
function compiledPath(file) {
  if (relative(ROOT, file).split(sep)[0] === 'node_modules') return undefined
  const out = OUT.find((o) => file.startsWith(o.from))
  return out === undefined ? undefined : { js: out.to + file.slice(out.from.length, -'.ts'.length) + '.js', buildInfo: join(out.to, '.tsbuildinfo') }
}

async function mtime(path) {
  try {
    return (await stat(path)).mtimeMs
  } catch {
    return undefined
  }
}

/** The compiled JavaScript, its source map inlined with the source named relative to the module's .ts URL. */
async function compiled(file, js) {
  let code = await readFile(js, 'utf8')
  const mapFile = `${js}.map`
  const map = await readFile(mapFile, 'utf8').then(JSON.parse, () => undefined)
  code = code.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n')
  if (map !== undefined) {
    map.sources = [basename(file)]
    delete map.sourceRoot
    map.file = basename(file)
    code += `//# sourceMappingURL=data:application/json;base64,${Buffer.from(JSON.stringify(map)).toString('base64')}\n`
  }
  return code
}

let ts
/** The fallback: transpile one file, as ts-node's transpile-only mode would (no type check: tsc -b does that). */
async function transpiled(file) {
  ts ??= (await import('typescript')).default
  const source = await readFile(file, 'utf8')
  const out = ts.transpileModule(source, {
    fileName: file,
    compilerOptions: {
      // ES modules (package.json "type": "module"); transpileModule cannot see package.json.
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2023,
      verbatimModuleSyntax: true,
      sourceMap: false,
      inlineSourceMap: true,
      inlineSources: false,
    },
  })
  return out.outputText
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context)
  } catch (err) {
    // `./x.js` written in a .ts file means ./x.ts (what tsc resolves), and so does a worker's entry URL
    // (`new Worker(new URL('./worker.js', import.meta.url))`); only when nothing else resolved it.
    const relativeJs = /^\.{1,2}\/.*\.js$/.test(specifier) && context.parentURL?.startsWith('file:') === true && context.parentURL.endsWith('.ts')
    const fileJs = (specifier.startsWith('file:') || specifier.startsWith('/')) && specifier.endsWith('.js')
    if (err?.code === 'ERR_MODULE_NOT_FOUND' && (relativeJs || fileJs)) return nextResolve(specifier.replace(/\.js$/, '.ts'), context)
    throw err
  }
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:')) return nextLoad(url, context)
  const file = fileURLToPath(url) // without the query tap's mocks add
  if (!file.endsWith('.ts') || file.endsWith('.d.ts')) return nextLoad(url, context)
  const out = compiledPath(file)
  if (out === undefined) return nextLoad(url, context)
  // Fresh when written after the source changed, or when tsc -b saw the source as it is and kept the output
  // (a touched file with the same content: tsc rewrites only its build info).
  const [sourceTime, jsTime, builtTime] = await Promise.all([mtime(file), mtime(out.js), mtime(out.buildInfo)])
  const fresh = jsTime !== undefined && sourceTime !== undefined && Math.max(jsTime, builtTime ?? 0) >= sourceTime
  const source = fresh ? await compiled(file, out.js) : await transpiled(file)
  return { format: 'module', source, shortCircuit: true }
}
