/**
 * A leaf certificate read as an X.509-SVID (X509-SVID.md §2, §4, §5.2): exactly one URI SAN, which is a
 * workload's SPIFFE ID in one of the trusted trust domains; key usage present with `digitalSignature` and
 * without `keyCertSign`/`cRLSign`; not a CA. The extensions are read from the DER with asn1js (the ASN.1
 * library under PKI.js), so the identity is the SAN as encoded, never a rendering of it (Node's
 * `subjectaltname` string is text meant for people). Only the three extensions that matter are decoded:
 * PKI.js's whole-certificate parse cost several times the TLS handshake's own work per connection, and its
 * SAN parse grew with every name in the list. Other SAN types (DNS, IP) may be present and play no part;
 * the Subject plays no part at all.
 */
import * as asn1js from 'asn1js'
import { parseWorkloadId } from './spiffe-id.js'

const SUBJECT_ALT_NAME = '2.5.29.17'
const KEY_USAGE = '2.5.29.15'
const BASIC_CONSTRAINTS = '2.5.29.19'

/** ASN.1 tag classes as asn1js numbers them. */
const UNIVERSAL = 1
const CONTEXT = 3
/** GeneralName `uniformResourceIdentifier [6] IA5String` (RFC 5280 §4.2.1.6). */
const URI_NAME = 6
/** `extensions [3] EXPLICIT Extensions` in TBSCertificate (RFC 5280 §4.1). */
const EXTENSIONS_TAG = 3

/** Bounds on what is decoded: a certificate is a few KiB; these leave room and cap the work. */
const DECODE_LIMITS = { maxDepth: 16, maxNodes: 4096, parseEmbedded: false, copyInput: false } as const

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

type Block = asn1js.AsnType

const isSequence = (b: Block | undefined): b is asn1js.Sequence => b instanceof asn1js.Sequence
const children = (b: Block | undefined): Block[] =>
  b instanceof asn1js.Constructed || b instanceof asn1js.Sequence ? (b.valueBlock.value as Block[]) : []

function decode(bytes: Uint8Array): Block | undefined {
  const parsed = asn1js.fromBER(bytes, DECODE_LIMITS)
  // The whole input must be one value: trailing bytes would be a second reading of the certificate.
  return parsed.offset === bytes.byteLength ? parsed.result : undefined
}

/** The certificate's extensions, extnID → extnValue; undefined when the DER is not a readable certificate or names one twice. */
function extensionsOf(der: Uint8Array): Map<string, Uint8Array> | undefined {
  const cert = decode(der)
  const tbs = children(cert)[0]
  if (!isSequence(cert) || !isSequence(tbs)) return undefined
  const out = new Map<string, Uint8Array>()
  const tagged = children(tbs).find((b) => b.idBlock.tagClass === CONTEXT && b.idBlock.tagNumber === EXTENSIONS_TAG)
  if (tagged === undefined) return out
  const list = children(tagged)[0]
  if (!isSequence(list)) return undefined
  for (const ext of children(list)) {
    const parts = children(ext)
    const id = parts[0]
    const value = parts[parts.length - 1]
    if (!(id instanceof asn1js.ObjectIdentifier) || !(value instanceof asn1js.OctetString) || value.valueBlock.isConstructed) return undefined
    const oid = id.valueBlock.toString()
    // RFC 5280 §4.2: an extension appears at most once. Two SAN or key-usage extensions would let two
    // readers see two different certificates.
    if (out.has(oid)) return undefined
    out.set(oid, value.valueBlock.valueHexView)
  }
  return out
}

/** The URI SANs, as their IA5String bytes read one byte per character; undefined when unreadable. */
function uriNames(value: Uint8Array): string[] | undefined {
  const names = decode(value)
  if (!isSequence(names)) return undefined
  const uris: string[] = []
  for (const name of children(names)) {
    if (name.idBlock.tagClass !== CONTEXT || name.idBlock.tagNumber !== URI_NAME) continue
    if (name.idBlock.isConstructed) return undefined
    uris.push(Buffer.from((name as asn1js.Primitive).valueBlock.valueHexView).toString('latin1'))
  }
  return uris
}

/** The KeyUsage bits that matter (RFC 5280 §4.2.1.3: bit 0 is the first byte's 0x80); undefined when unreadable. */
function keyUsageBits(value: Uint8Array): { digitalSignature: boolean; keyCertSign: boolean; cRLSign: boolean } | undefined {
  const bits = decode(value)
  if (!(bits instanceof asn1js.BitString) || bits.idBlock.tagClass !== UNIVERSAL) return undefined
  const first = bits.valueBlock.valueHexView[0] ?? 0
  return { digitalSignature: (first & 0x80) !== 0, keyCertSign: (first & 0x04) !== 0, cRLSign: (first & 0x02) !== 0 }
}

/** BasicConstraints `cA` (default FALSE); undefined when unreadable. */
function isCa(value: Uint8Array): boolean | undefined {
  const constraints = decode(value)
  if (!isSequence(constraints)) return undefined
  const first = children(constraints)[0]
  return first instanceof asn1js.Boolean ? first.valueBlock.value : false
}

/** Reads `der` as an X.509-SVID whose trust domain must be one of `trustDomains`. Pure; never throws. */
export function svidOf(der: Uint8Array, trustDomains: readonly string[]): SvidResult {
  const refuse = (reason: SvidRefusal): SvidResult => ({ ok: false, reason })
  const extensions = extensionsOf(der)
  if (extensions === undefined) return refuse('unreadable_certificate')

  const basic = extensions.get(BASIC_CONSTRAINTS)
  if (basic !== undefined) {
    const ca = isCa(basic)
    if (ca === undefined) return refuse('unreadable_certificate')
    if (ca) return refuse('ca_certificate')
  }

  const san = extensions.get(SUBJECT_ALT_NAME)
  const uris = san === undefined ? [] : uriNames(san)
  if (uris === undefined) return refuse('unreadable_certificate')
  if (uris.length === 0) return refuse('no_uri_san')
  if (uris.length > 1) return refuse('several_uri_sans')
  const id = parseWorkloadId(uris[0] as string)
  if (!id.ok) return refuse('not_a_spiffe_id')
  if (!trustDomains.includes(id.value.trustDomain)) return { ok: false, reason: 'untrusted_trust_domain', trustDomain: id.value.trustDomain }

  const usage = extensions.get(KEY_USAGE)
  const bits = usage === undefined ? undefined : keyUsageBits(usage)
  if (usage !== undefined && bits === undefined) return refuse('unreadable_certificate')
  if (bits === undefined || !bits.digitalSignature) return refuse('no_digital_signature')
  if (bits.keyCertSign || bits.cRLSign) return refuse('signing_key_usage')
  return { ok: true, id: id.value.id, trustDomain: id.value.trustDomain }
}
