/** The messages between the server and its PKCS#11 worker (worker.ts). */

/** What the worker is started with. The PIN never reaches a log. */
export interface Pkcs11WorkerData {
  /** Path of the PKCS#11 library (`AUTHZ_PKCS11_MODULE`). */
  readonly module: string
  /** The token, by label or by slot id (`AUTHZ_PKCS11_TOKEN`: `<label>` or `slot:<id>`). */
  readonly token: { readonly label?: string; readonly slot?: number }
  readonly pin: string
  /** The variable the PIN came from, to name it when the login fails. */
  readonly pinVariable: string
  /** Sessions in the pool: signatures in parallel. */
  readonly sessions: number
}

/** What the server asks of the worker. */
export type Pkcs11Operation =
  | { readonly op: 'sign'; readonly label: string; readonly alg: string; readonly input: Uint8Array }
  | { readonly op: 'public'; readonly label: string }
  | { readonly op: 'generate'; readonly alg: string; readonly prefix: string }
  | { readonly op: 'destroy'; readonly label: string }
  | { readonly op: 'close' }

export type Pkcs11Request = Pkcs11Operation & { readonly id: number }

export type Pkcs11Reply =
  | { readonly type: 'ready' }
  | { readonly type: 'failed'; readonly variable: string; readonly message: string }
  | { readonly type: 'result'; readonly id: number; readonly result?: unknown; readonly error?: { readonly message: string; readonly code: string } }
