/**
 * The deployment files (Dockerfile, .dockerignore, docker-compose.yml, deploy/kubernetes/) checked for
 * what production depends on, without a Docker engine or a cluster: they are parsed and their essentials
 * asserted (non-root, read-only, probes on the ops port, no baked-in secrets, replicas, ...).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { parse, parseAllDocuments } from 'yaml'
import { configSchema } from '../../src/config.js'

const root = new URL('../../', import.meta.url)
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8')
const exists = (path: string): boolean => existsSync(new URL(path, root))
const knownVariables = new Set(Object.keys(configSchema.properties))

// --- a small Dockerfile parser -----------------------------------------------------------------------

interface Instruction {
  readonly keyword: string
  readonly args: string
}

interface Stage {
  readonly name: string | undefined
  readonly from: string
  readonly instructions: Instruction[]
}

/** Instructions after line continuations are joined and comment lines dropped; stages split at FROM. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const logical: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd()
    if (/^\s*#/.test(line)) continue // comments (and parser directives), also inside a continuation
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `
      continue
    }
    const whole = (pending + line).trim()
    pending = ''
    if (whole !== '') logical.push(whole)
  }
  const args = new Map<string, string>()
  const stages: Stage[] = []
  const substitute = (s: string): string => s.replace(/\$\{?(\w+)\}?/g, (_m, name: string) => args.get(name) ?? '')
  for (const line of logical) {
    const match = /^(\w+)\s*(.*)$/.exec(line)
    if (match === null) throw new Error(`cannot parse Dockerfile line: ${line}`)
    const keyword = (match[1] as string).toUpperCase()
    const rest = match[2] as string
    if (keyword === 'FROM') {
      const words = rest.split(/\s+/).filter((w) => !w.startsWith('--'))
      const asIndex = words.findIndex((w) => w.toUpperCase() === 'AS')
      stages.push({ from: substitute(words[0] as string), name: asIndex === -1 ? undefined : words[asIndex + 1], instructions: [] })
    } else if (stages.length === 0) {
      if (keyword === 'ARG') {
        const [name, value = ''] = rest.split('=', 2)
        args.set((name as string).trim(), value.trim())
      }
    } else {
      stages.at(-1)?.instructions.push({ keyword, args: rest })
    }
  }
  return { args, stages }
}

/** A stage and the stages it is built FROM, base first. */
function chainOf(stages: Stage[], stage: Stage): Stage[] {
  const parent = stages.find((s) => s.name !== undefined && s.name.toLowerCase() === stage.from.toLowerCase())
  return parent === undefined ? [stage] : [...chainOf(stages, parent), stage]
}

/** `KEY=value` pairs of ENV instructions (quoted values allowed). */
function envOf(instructions: Instruction[]): Map<string, string> {
  const env = new Map<string, string>()
  for (const i of instructions.filter((i) => i.keyword === 'ENV')) {
    for (const m of i.args.matchAll(/(\w+)=("[^"]*"|\S*)/g)) env.set(m[1] as string, (m[2] as string).replace(/^"|"$/g, ''))
  }
  return env
}

function isRoot(user: string | undefined): boolean {
  if (user === undefined) return true
  const name = user.split(':')[0]
  return name === 'root' || name === '0'
}

const dockerfile = parseDockerfile(read('Dockerfile'))
const finalStage = dockerfile.stages.at(-1) as Stage
const finalChain = chainOf(dockerfile.stages, finalStage)
const finalInstructions = finalChain.flatMap((s) => s.instructions)
const last = (keyword: string): Instruction | undefined => finalInstructions.filter((i) => i.keyword === keyword).at(-1)

t.test('Dockerfile: the final image is Node LTS, non-root, production dependencies, no dev mode', async (t) => {
  t.ok(dockerfile.stages.length >= 2, 'multi-stage')
  const base = (finalChain[0] as Stage).from
  const major = /^(?:node:|gcr\.io\/distroless\/nodejs)(\d+)\b/.exec(base)?.[1]
  t.ok(major !== undefined && Number(major) >= 24 && Number(major) % 2 === 0, `final stage built on a Node LTS image (${base})`)

  const user = last('USER')?.args
  t.notOk(isRoot(user), `USER is not root (${user})`)

  const env = envOf(finalInstructions)
  t.equal(env.get('AUTHZ_DEV'), 'false', 'ENV AUTHZ_DEV=false')
  t.equal(env.get('AUTHZ_HOST'), '0.0.0.0', 'ENV AUTHZ_HOST=0.0.0.0')
  t.equal(env.get('AUTHZ_OPS_HOST'), '0.0.0.0', 'ENV AUTHZ_OPS_HOST=0.0.0.0: probes reach the ops listener from outside the container')
  t.equal(env.get('AUTHZ_KEYS_DIR'), '/var/lib/authz/keys', 'keys on a mounted volume')
  t.equal(env.get('AUTHZ_POLICY'), '/etc/authz/service-policy.json', 'policy on a mounted volume')
  for (const name of ['AUTHZ_TLS_CERT', 'AUTHZ_TLS_KEY', 'AUTHZ_CLIENT_CA']) t.match(env.get(name), /^\/etc\/authz\/tls\//, name)
  for (const name of env.keys()) if (name.startsWith('AUTHZ_')) t.ok(knownVariables.has(name), `${name} is a configuration variable`)

  const exposed = finalInstructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/))
  t.ok(exposed.includes('8443') && exposed.includes('9464'), `EXPOSE 8443 9464 (${exposed.join(' ')})`)

  const healthcheck = last('HEALTHCHECK')?.args ?? 'NONE'
  t.not(healthcheck.toUpperCase(), 'NONE', 'a HEALTHCHECK')
  t.match(healthcheck, /9464/, 'HEALTHCHECK on the ops port')
  t.match(healthcheck, /\/healthz/, 'HEALTHCHECK on /healthz')
  t.notMatch(healthcheck, /\b(curl|wget)\b/, 'works without curl')

  t.same(JSON.parse(last('CMD')?.args ?? 'null'), ['node', 'dist/bin/server.js'], 'exec form: node receives SIGTERM')
  t.equal(last('ENTRYPOINT'), undefined, 'no entrypoint wrapper between the signal and node')

  const depsCopy = finalInstructions.find((i) => i.keyword === 'COPY' && /--from=\S+/.test(i.args) && /node_modules/.test(i.args))
  const depsStageName = /--from=(\S+)/.exec(depsCopy?.args ?? '')?.[1]
  const depsStage = dockerfile.stages.find((s) => s.name === depsStageName)
  const install = depsStage?.instructions.find((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args))?.args ?? ''
  t.match(install, /--omit=dev/, 'node_modules holds production dependencies only')
  t.match(install, /--ignore-scripts/, 'no install scripts')
  t.ok(finalInstructions.some((i) => i.keyword === 'COPY' && /\bdist\b/.test(i.args)), 'copies dist/')
  // Start errors and hints name `authz-keys …` where there are no sources (src/keys/commands.ts): the bin must be there.
  const bins = (JSON.parse(read('package.json')) as { bin: Record<string, string> }).bin
  const runs = finalInstructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n')
  for (const [name, file] of Object.entries(bins)) {
    t.match(runs, new RegExp(`ln -s /app/${file.replace(/^\.\//, '').replace(/\./g, '\\.')} /usr/local/bin/${name}\\b`), `the ${name} bin is on PATH`)
  }
  t.match(read('Dockerfile'), /chmod 0755 dist\/bin\/\*\.js/, 'and the bins are executable')

  t.ok(
    dockerfile.stages.some((s) => s.instructions.some((i) => i.keyword === 'RUN' && /npm run build/.test(i.args))),
    'a build stage compiles the TypeScript',
  )
})

t.test('Dockerfile: no stage copies keys, certificates or the dev keys directory', async (t) => {
  for (const stage of dockerfile.stages) {
    for (const i of stage.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
      const sources = i.args
        .split(/\s+/)
        .filter((w) => !w.startsWith('--'))
        .slice(0, -1)
      for (const source of sources) t.notMatch(source, /(^|\/)keys(\/|$)|\.pem$|\.key$|\.crt$/, `${stage.name ?? stage.from}: COPY ${source}`)
    }
  }
})

t.test('.dockerignore keeps secrets, local state and build output out of the build context', async (t) => {
  const patterns = new Set(
    read('.dockerignore')
      .split('\n')
      .map((l) => l.trim().replace(/\/$/, ''))
      .filter((l) => l !== '' && !l.startsWith('#')),
  )
  for (const p of ['keys', 'node_modules', 'test', '.tap', 'coverage', '.git']) t.ok(patterns.has(p), p)
  t.ok(patterns.has('dist*') || (patterns.has('dist') && patterns.has('dist-examples')), 'dist*')
})

// --- docker-compose.yml ----------------------------------------------------------------------------------

interface ComposeService {
  image?: string
  build?: { target?: string }
  command?: string[] | string
  entrypoint?: string[] | string
  deploy?: { replicas?: number }
  depends_on?: Record<string, { condition?: string }>
  environment?: Record<string, string>
  volumes?: (string | { source?: string; target?: string; read_only?: boolean })[]
  healthcheck?: { test?: string[] | string; disable?: boolean }
  read_only?: boolean
  user?: string
  profiles?: string[]
}

interface Mount {
  readonly source: string
  readonly target: string
  readonly readOnly: boolean
}

function mountsOf(service: ComposeService): Mount[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v === 'string') {
      const [source = '', target = '', mode = ''] = v.split(':')
      return { source, target, readOnly: mode.split(',').includes('ro') }
    }
    return { source: v.source ?? '', target: v.target ?? '', readOnly: v.read_only === true }
  })
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, ComposeService>; volumes?: Record<string, unknown> }
const services = compose.services
const text = (value: string[] | string | undefined): string => (Array.isArray(value) ? value.join(' ') : (value ?? ''))
const authzServices = Object.entries(services).filter(([name]) => /^authz(-\d+)?$/.test(name))
const keysDir = '/var/lib/authz/keys'

t.test('compose: an init service makes the dev PKI, policy and first key, tolerating a re-run', async (t) => {
  const init = services.init
  t.ok(init, 'an init service')
  if (init === undefined) return
  const script = text(init.command)
  t.match(script, /dist\/bin\/pki\.js init/, 'dev CA with the pki CLI')
  for (const caller of ['order-service', 'payment-service', 'inventory-service']) t.match(script, caller, `a certificate for ${caller}`)
  t.match(script, /dist\/bin\/pki\.js client/, 'client certificates with the pki CLI')
  t.match(script, /dist\/bin\/keys\.js init/, 'first key with the keys CLI')
  t.match(script, /already has/, 'a second run accepts the keys CLI refusing to init over existing keys')
  t.match(script, /service-policy\.json/, 'copies the policy')
  const keysMount = mountsOf(init).find((m) => m.target === keysDir)
  t.ok(keysMount !== undefined && !keysMount.readOnly, 'init writes the keys volume')
})

t.test('compose: two authz replicas share the keys volume read-only, after init, with health checks', async (t) => {
  const replicas = authzServices.reduce((n, [, s]) => n + (s.deploy?.replicas ?? 1), 0)
  t.equal(replicas, 2, 'two authz replicas')
  const initKeys = mountsOf(services.init ?? {}).find((m) => m.target === keysDir)?.source
  for (const [name, service] of authzServices) {
    const keys = mountsOf(service).find((m) => m.target === keysDir)
    t.ok(keys?.readOnly, `${name}: keys volume read-only`)
    t.equal(keys?.source, initKeys, `${name}: the same volume init writes`)
    t.ok(compose.volumes !== undefined && keys !== undefined && keys.source in compose.volumes, `${name}: a named volume`)
    t.equal(service.depends_on?.init?.condition, 'service_completed_successfully', `${name}: starts after init`)
    t.match(text(service.healthcheck?.test), /9464\/(healthz|readyz)/, `${name}: health check on the ops port`)
    t.not(service.environment?.AUTHZ_DEV, 'true', `${name}: never dev mode`)
    t.equal(text(service.command), '', `${name}: runs the image's server command`)
  }
})

t.test('compose: every AUTHZ_* variable is known, every build target and demo entry exists', async (t) => {
  const stageNames = new Set(dockerfile.stages.map((s) => s.name))
  for (const [name, service] of Object.entries(services)) {
    for (const variable of Object.keys(service.environment ?? {})) {
      if (variable.startsWith('AUTHZ_')) t.ok(knownVariables.has(variable), `${name}: ${variable}`)
    }
    if (service.build?.target !== undefined) t.ok(stageNames.has(service.build.target), `${name}: target ${service.build.target}`)
    for (const m of text(service.command).matchAll(/dist-examples\/(examples\/\S+)\.js/g)) t.ok(exists(`${m[1]}.ts`), `${name}: ${m[1]}.ts`)
  }
  t.ok(services['inventory-service'], 'the receiving demo service')
  t.ok(services['order-service'], 'the calling demo service')
})

// --- deploy/kubernetes ----------------------------------------------------------------------------------

const k8sDir = 'deploy/kubernetes/'
const k8sFiles = readdirSync(new URL(k8sDir, root))
  .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
  .sort()
// Kubernetes reads YAML 1.1 (`defaultMode: 0400` is octal there), so parse it the same way.
const k8sDocs = k8sFiles.flatMap((file) =>
  parseAllDocuments(read(k8sDir + file), { version: '1.1' }).map((d) => ({ file, doc: d.toJS() as Record<string, unknown> & { kind?: string } })),
)
const ofKind = <T>(kind: string): T[] => k8sDocs.filter((d) => d.doc.kind === kind).map((d) => d.doc as T)

interface Probe {
  httpGet?: { path?: string; port?: number | string }
}
interface Container {
  name: string
  image?: string
  ports?: { name?: string; containerPort: number }[]
  env?: { name: string; value?: string }[]
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; runAsNonRoot?: boolean; runAsUser?: number }
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> }
  livenessProbe?: Probe
  readinessProbe?: Probe
  lifecycle?: { preStop?: unknown }
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[]
}
interface Volume {
  name: string
  secret?: { secretName: string; defaultMode?: number }
  configMap?: { name: string }
}
interface Deployment {
  metadata: { name: string }
  spec: {
    replicas: number
    selector: { matchLabels: Record<string, string> }
    template: {
      metadata: { labels: Record<string, string> }
      spec: {
        securityContext?: { runAsNonRoot?: boolean; runAsUser?: number }
        terminationGracePeriodSeconds?: number
        enableServiceLinks?: boolean
        containers: Container[]
        volumes?: Volume[]
      }
    }
  }
}
interface Service {
  metadata: { name: string }
  spec: { type?: string; selector: Record<string, string>; ports: { port: number; protocol?: string }[] }
}
interface NetworkPolicyPeer {
  podSelector?: { matchLabels?: Record<string, string> }
  namespaceSelector?: { matchLabels?: Record<string, string> }
}
interface NetworkPolicy {
  spec: { podSelector: { matchLabels: Record<string, string> }; ingress: { ports: { port: number }[]; from?: NetworkPolicyPeer[] }[] }
}

const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v)

const deployment = ofKind<Deployment>('Deployment')[0]
const podLabels = deployment?.spec.template.metadata.labels ?? {}

t.test('kubernetes: kustomization lists every manifest; no Secret carries data', async (t) => {
  const kustomization = parse(read(`${k8sDir}kustomization.yaml`)) as { resources: string[] }
  t.same([...kustomization.resources].sort(), k8sFiles.filter((f) => f !== 'kustomization.yaml'))
  for (const { file, doc } of k8sDocs) {
    if (doc.kind === 'Secret') t.ok(doc.data === undefined && doc.stringData === undefined, `${file}: a Secret without data`)
  }
})

t.test('kubernetes: the Deployment runs 3 non-root, read-only replicas probed on the ops port', async (t) => {
  t.ok(deployment, 'a Deployment')
  if (deployment === undefined) return
  const pod = deployment.spec.template.spec
  t.equal(deployment.spec.replicas, 3, '3 replicas')
  t.ok(selects(deployment.spec.selector.matchLabels, podLabels), 'selector matches the pod labels')
  t.equal(pod.securityContext?.runAsNonRoot, true, 'runAsNonRoot')
  t.ok((pod.terminationGracePeriodSeconds ?? 0) >= 20, 'time to drain')
  // Service links would put AUTHZ_SERVICE_HOST, AUTHZ_PORT=tcp://... in the environment: a refused start.
  t.equal(pod.enableServiceLinks, false, 'no service-link variables (Services named authz*)')
  const container = pod.containers.find((c) => c.name === 'authz') as Container
  t.ok(container, 'an authz container')
  t.equal(container.securityContext?.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem')
  t.equal(container.securityContext?.allowPrivilegeEscalation, false, 'no privilege escalation')
  t.not(container.securityContext?.runAsUser ?? pod.securityContext?.runAsUser, 0, 'not UID 0')
  for (const kind of ['requests', 'limits'] as const) {
    t.ok(container.resources?.[kind]?.cpu && container.resources?.[kind]?.memory, `resources.${kind} cpu + memory`)
  }
  t.ok(container.lifecycle?.preStop, 'a preStop hook before SIGTERM')

  const portOf = (port: number | string | undefined): number | undefined =>
    typeof port === 'number' ? port : container.ports?.find((p) => p.name === port)?.containerPort
  t.equal(portOf(container.livenessProbe?.httpGet?.port), 9464, 'liveness on the ops port')
  t.equal(container.livenessProbe?.httpGet?.path, '/healthz')
  t.equal(portOf(container.readinessProbe?.httpGet?.port), 9464, 'readiness on the ops port')
  t.equal(container.readinessProbe?.httpGet?.path, '/readyz')

  const env = new Map((container.env ?? []).map((e) => [e.name, e.value]))
  t.equal(env.get('AUTHZ_DEV'), 'false', 'AUTHZ_DEV=false')
  for (const name of env.keys()) if (name.startsWith('AUTHZ_')) t.ok(knownVariables.has(name), `${name} is a configuration variable`)

  // Which volume holds each configured path (the longest mountPath that contains it).
  const volumeFor = (path: string | undefined): Volume | undefined => {
    const mount = (container.volumeMounts ?? [])
      .filter((m) => path !== undefined && (path === m.mountPath || path.startsWith(`${m.mountPath}/`)))
      .sort((a, b) => b.mountPath.length - a.mountPath.length)[0]
    t.ok(mount?.readOnly, `${path} is mounted read-only`)
    t.equal(mount?.subPath, undefined, `${path}: no subPath (it would never see updates)`)
    return pod.volumes?.find((v) => v.name === mount?.name)
  }
  const keys = volumeFor(env.get('AUTHZ_KEYS_DIR') ?? '/var/lib/authz/keys')
  t.ok(keys?.secret, 'keys from a Secret')
  t.equal(keys?.secret?.defaultMode, 0o400, 'keys defaultMode 0400')
  t.ok(volumeFor(env.get('AUTHZ_POLICY'))?.configMap, 'policy from a ConfigMap')
  for (const name of ['AUTHZ_TLS_CERT', 'AUTHZ_TLS_KEY', 'AUTHZ_CLIENT_CA']) t.ok(volumeFor(env.get(name))?.secret, `${name} from a Secret`)
})

t.test('kubernetes: services for 8443 and the ops port, a PDB and a NetworkPolicy for the pods', async (t) => {
  const services = ofKind<Service>('Service')
  const main = services.find((s) => s.spec.ports.some((p) => p.port === 8443))
  const ops = services.find((s) => s.spec.ports.some((p) => p.port === 9464))
  t.ok(main && (main.spec.ports.find((p) => p.port === 8443)?.protocol ?? 'TCP') === 'TCP', 'a Service on 8443/TCP')
  t.ok(ops && ops !== main && (ops.spec.type ?? 'ClusterIP') === 'ClusterIP', 'a separate ClusterIP Service for 9464')
  for (const s of services) t.ok(selects(s.spec.selector, podLabels), `Service ${s.metadata.name} selects the pods`)

  const pdb = ofKind<{ spec: { minAvailable?: number; selector: { matchLabels: Record<string, string> } } }>('PodDisruptionBudget')[0]
  t.equal(pdb?.spec.minAvailable, 2, 'PDB minAvailable 2')
  t.ok(selects(pdb?.spec.selector.matchLabels, podLabels), 'PDB selects the pods')

  const policy = ofKind<NetworkPolicy>('NetworkPolicy')[0]
  t.ok(policy, 'a NetworkPolicy')
  if (policy === undefined) return
  t.ok(selects(policy.spec.podSelector.matchLabels, podLabels), 'NetworkPolicy selects the pods')
  const rulesFor = (port: number): { from?: NetworkPolicyPeer[] }[] => policy.spec.ingress.filter((r) => r.ports.some((p) => p.port === port))
  t.ok(rulesFor(8443).length > 0, 'ingress on 8443')
  t.ok(rulesFor(9464).length > 0, 'ingress on 9464')
  for (const rule of rulesFor(9464)) {
    t.ok(rule.from !== undefined && rule.from.length > 0, '9464 is not open to everyone')
    for (const peer of rule.from ?? []) {
      const anyNamespace = peer.namespaceSelector !== undefined && Object.keys(peer.namespaceSelector.matchLabels ?? {}).length === 0
      t.notOk(anyNamespace, `9464 peer ${JSON.stringify(peer)} is this namespace or a named one`)
    }
  }
})

t.test('no deployment file carries PEM material', async (t) => {
  const files = ['Dockerfile', '.dockerignore', 'docker-compose.yml', ...k8sFiles.map((f) => k8sDir + f)]
  for (const f of readdirSync(new URL('examples/compose/', root))) files.push(`examples/compose/${f}`)
  for (const file of files) t.notMatch(read(file), /-----BEGIN/, file)
})

t.test('grace periods agree with AUTHZ_SHUTDOWN_TIMEOUT: the process exits before anyone sends SIGKILL', async (t) => {
  const defaultTimeout = configSchema.properties.AUTHZ_SHUTDOWN_TIMEOUT.default
  const margin = 2
  // Kubernetes: the grace period counts from the start of preStop.
  const pod = deployment?.spec.template.spec
  const container = pod?.containers.find((c) => c.name === 'authz')
  const k8sTimeout = Number(container?.env?.find((e) => e.name === 'AUTHZ_SHUTDOWN_TIMEOUT')?.value ?? defaultTimeout)
  const preStopMs = Number(/setTimeout\([^,]+,\s*(\d+)\)/.exec(JSON.stringify(container?.lifecycle?.preStop))?.[1] ?? 0)
  t.ok(preStopMs > 0, 'the preStop pause is a known length')
  t.ok((pod?.terminationGracePeriodSeconds ?? 30) >= preStopMs / 1000 + k8sTimeout + margin, `Deployment: ${pod?.terminationGracePeriodSeconds} s ≥ ${preStopMs / 1000} s preStop + ${k8sTimeout} s + ${margin} s`)
  t.equal(container?.env?.find((e) => e.name === 'AUTHZ_CRL')?.value, '/etc/authz/tls/ca.crl', 'the Deployment checks a CRL')
  // Compose: stop_grace_period, then SIGKILL (10 s when unset).
  for (const [name, service] of authzServices) {
    const grace = (service as ComposeService & { stop_grace_period?: string }).stop_grace_period ?? '10s'
    const seconds = Number(/^(\d+)s$/.exec(grace)?.[1])
    const timeout = Number(service.environment?.AUTHZ_SHUTDOWN_TIMEOUT ?? defaultTimeout)
    t.ok(seconds >= timeout + margin, `compose ${name}: stop_grace_period ${grace} ≥ ${timeout} s + ${margin} s`)
  }
  t.ok(defaultTimeout + margin <= 10, `the default (${defaultTimeout} s) fits docker stop's default 10 s`)
})

t.test('kubernetes: /readyz gates the /token Service only; the key Services keep every running replica', async (t) => {
  type KeyedService = Service & { spec: Service['spec'] & { publishNotReadyAddresses?: boolean } }
  const services = new Map(ofKind<KeyedService>('Service').map((s) => [s.metadata.name, s]))
  const token = services.get('authz')
  t.ok(token?.spec.ports.some((p) => p.port === 8443), 'authz: 8443')
  t.notOk(token?.spec.publishNotReadyAddresses, 'authz (POST /token): only replicas whose /readyz answers 200')
  for (const [name, port] of [['authz-jwks', 8443], ['authz-ops', 9464]] as const) {
    const keys = services.get(name)
    t.ok(keys?.spec.ports.some((p) => p.port === port), `${name}: ${port}`)
    t.equal(keys?.spec.publishNotReadyAddresses, true, `${name} (JWKS): a replica that cannot sign still serves keys`)
    t.ok(selects(keys?.spec.selector, podLabels), `${name} selects the pods`)
  }
  const container = deployment?.spec.template.spec.containers.find((c) => c.name === 'authz')
  t.equal(container?.readinessProbe?.httpGet?.path, '/readyz')
  t.equal(container?.livenessProbe?.httpGet?.path, '/healthz', 'liveness never depends on signing: an HSM outage must not restart every pod')
})
