/** The value of a required environment variable; exits with a message naming it when unset. */
export function required(service: string, name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') {
    console.error(`${service}: ${name} is required`)
    process.exit(1)
  }
  return value
}
