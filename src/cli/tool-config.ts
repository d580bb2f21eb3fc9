/** The configuration as the CLIs read it: the server's AUTHZ_* variables, validated by the same schema. */
import type { Clock } from '../clock.js'
import { loadConfig, type Config } from '../config.js'
import type { KeysAdminOptions, NewKey } from '../keys/admin.js'
import { lazyToken } from '../keys/pkcs11/token.js'

/** The server's configuration, without requiring TLS files (the CLIs report on them, they do not serve). */
export function toolConfig(env: NodeJS.ProcessEnv): Config {
  return loadConfig(env, process.cwd(), { requireTls: false })
}

/** The keys directory as the server sees it: where, with which lifetimes, at what time. */
export function keysOptions(config: Config, clock: Clock, newKey?: NewKey): KeysAdminOptions {
  return {
    dir: config.keysDir,
    ...(newKey === undefined ? {} : { newKey }),
    timing: { tokenTtl: config.tokenTtl, jwksMaxAge: config.jwksMaxAge },
    clock,
    passphrase: config.keyPassphrase,
    // Opened only by a command that touches a PKCS#11 key.
    ...(config.pkcs11 === null ? {} : { token: lazyToken(config.pkcs11) }),
  }
}
