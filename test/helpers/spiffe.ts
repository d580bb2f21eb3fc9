/** An authz instance in spiffe mode for tests: two trust domains, a policy whose callers are SPIFFE IDs. */
import type { Test } from 'tap'
import { startHarness, type Harness } from './harness.js'

export const ORDER = 'spiffe://example.org/ns/default/sa/order'
export const PAYMENT = 'spiffe://prod.example.org/payments/api'
export const SPIFFE_ENV = { AUTHZ_IDENTITY: 'spiffe', AUTHZ_SPIFFE_TRUST_DOMAINS: 'example.org, prod.example.org' }
export const SPIFFE_POLICY = {
  audiences: ['inventory-service', 'order-service'],
  grants: {
    [ORDER]: { 'inventory-service': ['stock:read', 'stock:deduct'] },
    [PAYMENT]: { 'order-service': ['order:read'] },
  },
}

export const spiffeHarness = (t: Test, env: Record<string, string> = {}): Promise<Harness> =>
  startHarness(t, { env: { ...SPIFFE_ENV, ...env }, policy: SPIFFE_POLICY })
