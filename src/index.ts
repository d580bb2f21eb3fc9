/**
 * authz as a library: the issuer's building blocks. Services that call or receive calls import
 * `@authz/sdk` instead (packages/sdk), which loads none of the issuer.
 *
 * @packageDocumentation
 */

/** Time, injectable everywhere (tests move a ManualClock instead of sleeping). */
export { systemClock, ManualClock, type Clock } from './clock.js'
/** Starting the issuer from code (what `authz-server` does). */
export { startServer, type RunningServer, type StartOptions } from './server.js'
/** Building the issuer's apps without listening (embedding, tests). */
export { buildApp, buildOpsApp, type AppDeps, type TlsMaterial } from './app.js'
/** Configuration, validated from the environment. */
export { loadConfig, configSchema, type Config } from './config.js'
/** The dev PKI (node-forge): for development and tests only. */
export { createCa, createServerCert, createClientCert, type KeyPairPem } from './pki/dev-pki.js'
