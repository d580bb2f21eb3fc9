/**
 * Time is injected. Domain code asks a Clock, never `Date.now()`, so tests move time instead of sleeping
 * and key lifecycle decisions are pure functions of (keyset, now). One Clock for the issuer and the SDK:
 * it lives in the SDK (the issuer may depend on the SDK, never the reverse).
 */
export { systemClock, ManualClock, type Clock } from '@authz/sdk'
