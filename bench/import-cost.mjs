// What importing a module costs a service: modules loaded (CommonJS require.cache ∪ ES modules seen by a
// load hook), wall time of the import and the RSS it adds, each measured in a fresh node process.
//   node bench/import-cost.mjs [--runs 7] [--json] [--list] <specifier>...   (after `npm run build`)
// Specifiers resolve from the repository root: `@authz/sdk`, `@authz/sdk/fastify`, `@authz/sdk/grpc`,
// `authz` (the issuer package, itself), or a path such as ./packages/sdk/dist/verifier.js.
// Time and RSS come from runs without the hook (it slows loading down); the module count from one run
// with it. --list prints every loaded file (what test/sdk/isolation.test.ts checks).
import { spawnSync } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const self = fileURLToPath(import.meta.url)

if (process.argv[2] === '--child') {
  const [, , , mode, specifier] = process.argv
  const { createRequire, register } = await import('node:module')
  const loaded = new Set()
  // The hook thread reports every ES module it loads, in order; a last import of a marker module tells
  // when every report before it has arrived.
  const marker = `data:text/javascript,export default ${process.pid}`
  let reported = Promise.resolve()
  if (mode === 'count') {
    const { MessageChannel } = await import('node:worker_threads')
    const channel = new MessageChannel()
    reported = new Promise((resolve) =>
      channel.port1.on('message', (url) => {
        if (url === marker) {
          channel.port1.close()
          resolve()
        } else if (url.startsWith('file:')) loaded.add(fileURLToPath(url))
      }),
    )
    register(new URL('./import-cost-hooks.mjs', import.meta.url), { data: { port: channel.port2 }, transferList: [channel.port2] })
  }
  const target = specifier.startsWith('.') ? pathToFileURL(`${root}/${specifier}`).href : specifier
  const require = createRequire(`${root}/package.json`)
  // Only what the import adds: a runner may have preloaded modules of its own (coverage hooks).
  const preloaded = new Set(Object.keys(require.cache))
  const rss0 = process.memoryUsage().rss
  const t0 = performance.now()
  await import(target)
  const ms = performance.now() - t0
  const rss = process.memoryUsage().rss - rss0
  const files = new Set(Object.keys(require.cache).filter((f) => !preloaded.has(f)))
  if (mode === 'count') {
    await import(marker)
    await reported
    for (const f of loaded) files.add(f)
  }
  process.stdout.write(JSON.stringify({ ms, rss, files: [...files].sort() }))
  process.exit(0)
}

const args = process.argv.slice(2)
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 7
const specifiers = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--runs')
if (specifiers.length === 0) {
  console.error('usage: node bench/import-cost.mjs [--runs N] [--json] [--list] <specifier>...')
  process.exit(2)
}

function child(mode, specifier) {
  const out = spawnSync(process.execPath, [self, '--child', mode, specifier], { cwd: root, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
  if (out.status !== 0) throw new Error(`importing ${specifier} failed: ${out.stderr}`)
  return JSON.parse(out.stdout)
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const results = specifiers.map((specifier) => {
  const counted = child('count', specifier)
  const timed = Array.from({ length: runs }, () => child('time', specifier))
  return {
    specifier,
    modules: counted.files.length,
    ms: +median(timed.map((r) => r.ms)).toFixed(1),
    rssMB: +(median(timed.map((r) => r.rss)) / 2 ** 20).toFixed(1),
    ...(args.includes('--list') ? { files: counted.files.map((f) => f.replace(root, '')) } : {}),
  }
})

if (args.includes('--json') || args.includes('--list')) {
  console.log(JSON.stringify(results, null, 2))
} else {
  console.log(`import cost — node ${process.version}, median of ${runs} fresh processes`)
  console.log('| import | modules loaded | ms | RSS added, MB |')
  console.log('|---|---:|---:|---:|')
  for (const r of results) console.log(`| \`${r.specifier}\` | ${r.modules} | ${r.ms} | ${r.rssMB} |`)
}
