import t from 'tap'
import { createCrl } from '../../src/pki/dev-pki.js'
import { crlDates } from '../../src/tls/crl.js'
import { pemBlocks } from '../../src/tls/trust.js'
import { loadPki } from '../helpers/material.js'

t.test('crlDates reads thisUpdate and nextUpdate of each CRL in a PEM file (PKI.js, no node-forge)', async (t) => {
  const { ca, expired: revoked } = loadPki()
  const pem = [
    createCrl(ca, [revoked], { thisUpdate: new Date('2026-01-01T00:00:00Z'), nextUpdate: new Date('2026-01-04T00:01:00Z') }),
    createCrl(ca, [], { thisUpdate: new Date('1999-12-31T23:59:59Z'), nextUpdate: new Date('2000-01-07T12:00:00Z') }),
  ].join('\n')
  const dates = pemBlocks(pem, 'X509 CRL').map((der) => crlDates(der))
  t.same(dates, [
    { thisUpdate: Date.parse('2026-01-01T00:00:00Z'), nextUpdate: Date.parse('2026-01-04T00:01:00Z') },
    { thisUpdate: Date.parse('1999-12-31T23:59:59Z'), nextUpdate: Date.parse('2000-01-07T12:00:00Z') },
  ])
})

t.test('crlDates throws on what is not a CRL', async (t) => {
  const { ca } = loadPki()
  t.throws(() => crlDates(Buffer.from('not DER')))
  t.throws(() => crlDates(pemBlocks(ca.certPem, 'CERTIFICATE')[0] as Buffer), 'a certificate is not a CRL')
})
