/**
 * A leaf certificate read as an X.509-SVID (X509-SVID.md §2, §4, §5.2): exactly one URI SAN, which is a
 * workload's SPIFFE ID in one of the trusted trust domains; key usage present with `digitalSignature` and
 * without `keyCertSign`/`cRLSign`; not a CA. PKI.js reads the extensions from the DER, so the identity is
 * the SAN as encoded, never a rendering of it (Node's `subjectaltname` string is text meant for people).
 * Other SAN types (DNS, IP) may be present and play no part; the Subject plays no part at all.
 */
import * as pkijs from 'pkijs'
import { toArrayBuffer } from '../tls/trust.js'
import { parseWorkloadId } from './spiffe-id.js'

const SUBJECT_ALT_NAME = '2.5.29.17'
const KEY_USAGE = '2.5.29.15'
const BASIC_CONSTRAINTS = '2.5.29.19'
/** GeneralName `uniformResourceIdentifier [6] IA5String` (RFC 5280 §4.2.1.6). */
const URI_NAME = 6

export type SvidRefusal =
  | 'unreadable_certificate'
  | 'ca_certificate'
  | 'no_uri_san'
  | 'several_uri_sans'
  | 'not_a_spiffe_id'
  | 'untrusted_trust_domain'
  | 'no_digital_signature'
  | 'signing_key_usage'

export type SvidResult =
  | { readonly ok: true; readonly id: string; readonly trustDomain: string }
  | { readonly ok: false; readonly reason: SvidRefusal; readonly trustDomain?: string }

/** The bits of a KeyUsage BIT STRING that matter here (RFC 5280 §4.2.1.3: bit 0 is the first byte's 0x80). */
function keyUsageBits(value: unknown): { digitalSignature: boolean; keyCertSign: boolean; cRLSign: boolean } | undefined {
  const block = value as { idBlock?: { tagClass?: number; tagNumber?: number }; valueBlock?: { valueHexView?: Uint8Array } } | undefined
  // PKI.js leaves KeyUsage as the raw ASN.1 value: it must be a universal BIT STRING (tag 3).
  if (block?.idBlock?.tagClass !== 1 || block.idBlock.tagNumber !== 3) return undefined
  const bytes = block.valueBlock?.valueHexView
  if (!(bytes instanceof Uint8Array)) return undefined
  const first = bytes[0] ?? 0
  return { digitalSignature: (first & 0x80) !== 0, keyCertSign: (first & 0x04) !== 0, cRLSign: (first & 0x02) !== 0 }
}

/** An extension's parsed value, or undefined when PKI.js could not read it. */
function parsed(ext: pkijs.Extension): unknown {
  const value: unknown = ext.parsedValue
  if (value === undefined || value === null) return undefined
  return (value as { parsingError?: unknown }).parsingError === undefined ? value : undefined
}

/** Reads `der` as an X.509-SVID whose trust domain must be one of `trustDomains`. Pure; never throws. */
export function svidOf(der: Uint8Array, trustDomains: readonly string[]): SvidResult {
  const refuse = (reason: SvidRefusal): SvidResult => ({ ok: false, reason })
  let cert: pkijs.Certificate
  try {
    cert = pkijs.Certificate.fromBER(toArrayBuffer(der))
  } catch {
    return refuse('unreadable_certificate')
  }
  const extensions = cert.extensions ?? []
  // RFC 5280 §4.2: an extension appears at most once. Two SAN or key-usage extensions would let two
  // readers see two different certificates.
  if (new Set(extensions.map((e) => e.extnID)).size !== extensions.length) return refuse('unreadable_certificate')
  const find = (oid: string) => extensions.find((e) => e.extnID === oid)

  const basic = find(BASIC_CONSTRAINTS)
  if (basic !== undefined) {
    const value = parsed(basic) as { cA?: unknown } | undefined
    if (value === undefined) return refuse('unreadable_certificate')
    if (value.cA === true) return refuse('ca_certificate')
  }

  const san = find(SUBJECT_ALT_NAME)
  let uris: unknown[] = []
  if (san !== undefined) {
    const value = parsed(san) as { altNames?: { type: number; value: unknown }[] } | undefined
    if (value?.altNames === undefined) return refuse('unreadable_certificate')
    uris = value.altNames.filter((name) => name.type === URI_NAME).map((name) => name.value)
  }
  if (uris.length === 0) return refuse('no_uri_san')
  if (uris.length > 1) return refuse('several_uri_sans')
  const uri = uris[0]
  const id = typeof uri === 'string' ? parseWorkloadId(uri) : undefined
  if (id === undefined || !id.ok) return refuse('not_a_spiffe_id')
  if (!trustDomains.includes(id.value.trustDomain)) return { ok: false, reason: 'untrusted_trust_domain', trustDomain: id.value.trustDomain }

  const usage = find(KEY_USAGE)
  const bits = usage === undefined ? undefined : keyUsageBits(parsed(usage))
  if (usage !== undefined && bits === undefined) return refuse('unreadable_certificate')
  if (bits === undefined || !bits.digitalSignature) return refuse('no_digital_signature')
  if (bits.keyCertSign || bits.cRLSign) return refuse('signing_key_usage')
  return { ok: true, id: id.value.id, trustDomain: id.value.trustDomain }
}
