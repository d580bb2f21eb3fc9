/**
 * What a service loads when it imports the SDK, counted in fresh node processes by bench/import-cost.mjs
 * (every CommonJS module in require.cache, every ES module the loader loads): `@authz/sdk` and
 * `@authz/sdk/fastify` load the SDK's own files and jose, nothing else — no fastify, no gRPC, no
 * node-forge, pino, prom-client or ajv, no file of the issuer. Runs against the built package
 * (`npm test` builds it first; alone: `npm run build:sdk`).
 */
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const root = fileURLToPath(new URL('../../', import.meta.url))
const run = promisify(execFile)

interface Cost {
  specifier: string
  modules: number
  files: string[]
}

const FORBIDDEN = /(^|\/)node_modules\/(fastify|@fastify|@grpc|node-forge|pino|prom-client|ajv|env-schema)\//
const ISSUER = /^(src|dist)\//

t.test('importing @authz/sdk loads the SDK and jose only; /fastify no more; /grpc no issuer', async (t) => {
  const { stdout } = await run(process.execPath, ['bench/import-cost.mjs', '--list', '--runs', '1', '@authz/sdk', '@authz/sdk/fastify', '@authz/sdk/grpc'], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '' },
    timeout: 60_000,
  })
  const [main, fastify, grpc] = JSON.parse(stdout) as [Cost, Cost, Cost]
  for (const cost of [main, fastify]) {
    t.same(
      cost.files.filter((f) => !f.startsWith('packages/sdk/dist/') && !/(^|\/)node_modules\/jose\//.test(f)),
      [],
      `${cost.specifier}: nothing but the SDK and jose`,
    )
    t.ok(cost.files.some((f) => f.startsWith('packages/sdk/dist/')), `${cost.specifier}: the SDK itself was counted`)
  }
  t.ok(main.files.some((f) => f.includes('node_modules/jose/')), 'jose is counted (the hook sees ES modules)')
  t.ok(grpc.files.some((f) => f.includes('node_modules/@grpc/grpc-js/')), '/grpc loads @grpc/grpc-js (counted from require.cache)')
  t.same(grpc.files.filter((f) => ISSUER.test(f) || (FORBIDDEN.test(f) && !f.includes('node_modules/@grpc/'))), [], '/grpc: no issuer, no fastify')
})

t.test('the package manifest: jose the only dependency, fastify and @grpc/grpc-js optional peers; the issuer has no gRPC', async (t) => {
  const sdk = JSON.parse(await readFile(new URL('../../packages/sdk/package.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>
  const issuer = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>
  t.same(Object.keys(sdk.dependencies ?? {}), ['jose'])
  t.same(Object.keys(sdk.peerDependencies ?? {}).sort(), ['@grpc/grpc-js', 'fastify'])
  t.same(sdk.peerDependenciesMeta, { '@grpc/grpc-js': { optional: true }, fastify: { optional: true } })
  t.same(Object.keys(sdk.exports ?? {}), ['.', './fastify', './grpc', './package.json'])
  t.notOk('@grpc/grpc-js' in (issuer.dependencies ?? {}), 'the issuer never speaks gRPC')
})
