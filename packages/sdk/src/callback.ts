/** Calls a user's callback (a hook, a listener); its throw is its own fault and changes nothing of ours. */
export function safely<A extends unknown[]>(callback: ((...args: A) => void) | undefined, ...args: A): void {
  try {
    callback?.(...args)
  } catch {
    // the call is answered, the policy read, all the same
  }
}
