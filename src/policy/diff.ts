/**
 * What a policy change does: the audiences and callers it adds and removes, and every caller → audience
 * grant whose scopes change. `authz policy check --against` prints it before a new policy goes live.
 */
import type { Policy } from './policy.js'

export interface GrantChange {
  readonly caller: string
  readonly audience: string
  readonly change: 'added' | 'removed' | 'changed'
  readonly added: readonly string[]
  readonly removed: readonly string[]
}

export interface PolicyDiff {
  readonly audiencesAdded: readonly string[]
  readonly audiencesRemoved: readonly string[]
  readonly callersAdded: readonly string[]
  readonly callersRemoved: readonly string[]
  readonly grants: readonly GrantChange[]
}

const sorted = (names: Iterable<string>): string[] => [...names].sort()
const minus = <T>(a: Iterable<T>, b: { has(x: T): boolean }): T[] => [...a].filter((x) => !b.has(x))

/** What changes from `before` to `after`: audiences, callers, and caller → audience → scopes. */
export function diffPolicies(before: Policy, after: Policy): PolicyDiff {
  const grants: GrantChange[] = []
  for (const caller of sorted(new Set([...before.grants.keys(), ...after.grants.keys()]))) {
    const was = before.grants.get(caller) ?? new Map<string, readonly string[]>()
    const now = after.grants.get(caller) ?? new Map<string, readonly string[]>()
    for (const audience of sorted(new Set([...was.keys(), ...now.keys()]))) {
      const from = was.get(audience)
      const to = now.get(audience)
      const added = minus(to ?? [], new Set(from ?? []))
      const removed = minus(from ?? [], new Set(to ?? []))
      const change = from === undefined ? 'added' : to === undefined ? 'removed' : 'changed'
      if (change !== 'changed' || added.length > 0 || removed.length > 0) grants.push({ caller, audience, change, added, removed })
    }
  }
  return {
    audiencesAdded: sorted(minus(after.audiences, before.audiences)),
    audiencesRemoved: sorted(minus(before.audiences, after.audiences)),
    callersAdded: sorted(minus(after.grants.keys(), before.grants)),
    callersRemoved: sorted(minus(before.grants.keys(), after.grants)),
    grants,
  }
}
