import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DerError, derTime, readDer, readDerExact } from '../../../../sealer/attestation/tdx/der.js';
import { parseCrl, parsePemBundle, PkiError, verifyChain, verifyCrl } from '../../../../sealer/attestation/tdx/pki.js';
import { intelSgxRootCa } from '../../../../sealer/attestation/tdx/verify.js';
import { buildCollateral, createTestPki, TEST_TIME } from '../../../support/tdx-quote-builder.js';
import { FIXTURES_SKIP_NOTE, fixtureCollateral, fixturesPresent } from '../../../support/tdx-fixtures.js';

describe('DER reader', () => {
  it('reads short and long lengths and refuses overruns and BER forms', () => {
    expect(readDerExact(Buffer.from([0x04, 0x02, 0xaa, 0xbb])).content).toEqual(Buffer.from([0xaa, 0xbb]));
    const long = Buffer.concat([Buffer.from([0x04, 0x81, 0x80]), Buffer.alloc(0x80, 1)]);
    expect(readDerExact(long).content.length).toBe(0x80);
    expect(() => readDer(Buffer.from([0x04, 0x05, 0x00]))).toThrow(new DerError('DER value runs past the end of its container'));
    expect(() => readDer(Buffer.from([0x30, 0x80, 0x00, 0x00]))).toThrow(new DerError('unsupported DER length form'));
    expect(() => readDer(Buffer.from([0x30]))).toThrow(new DerError('truncated DER header'));
    expect(() => readDerExact(Buffer.from([0x05, 0x00, 0x00]))).toThrow(new DerError('trailing bytes after DER value'));
  });

  it('reads UTCTime and GeneralizedTime', () => {
    const utc = readDerExact(Buffer.concat([Buffer.from([0x17, 13]), Buffer.from('250619100035Z')]));
    expect(derTime(utc)).toEqual(new Date('2025-06-19T10:00:35Z'));
    const gen = readDerExact(Buffer.concat([Buffer.from([0x18, 15]), Buffer.from('20510101000000Z')]));
    expect(derTime(gen)).toEqual(new Date('2051-01-01T00:00:00Z'));
  });
});

describe.skipIf(!fixturesPresent)(`Intel CRLs${FIXTURES_SKIP_NOTE}`, () => {
  it('parses and verifies the real PCK and root CA CRLs', () => {
    const collateral = fixtureCollateral('tdx_quote_collateral.json');
    const at = new Date('2025-07-01T00:00:00Z');
    const pckCrl = parseCrl(Buffer.from(collateral.pck_crl, 'hex'), 'PCK CRL');
    expect(pckCrl.thisUpdate).toEqual(new Date('2025-06-19T10:00:35Z'));
    expect(pckCrl.nextUpdate).toEqual(new Date('2025-07-19T10:00:35Z'));
    expect(pckCrl.revokedSerials.has('6FC34E5023E728923435D61AA4B83C618166AD35')).toBe(true);
    expect(pckCrl.revokedSerials.has('FD608648629CBA73078B4D492F4B3EA741AD08CD')).toBe(true);
    const [platformCa] = parsePemBundle(collateral.pck_crl_issuer_chain, 'PCK CRL issuer chain');
    expect(platformCa!.subject).toContain('CN=Intel SGX PCK Platform CA');
    expect(() => verifyCrl(pckCrl, platformCa!, at, 'PCK CRL')).not.toThrow();
    expect(() => verifyCrl(pckCrl, intelSgxRootCa(), at, 'PCK CRL')).toThrow(
      new PkiError('PCK CRL is not issued by CN=Intel SGX Root CA, O=Intel Corporation, L=Santa Clara, ST=CA, C=US'),
    );
    expect(() => verifyCrl(pckCrl, platformCa!, new Date('2025-07-20T00:00:00Z'), 'PCK CRL')).toThrow(
      new PkiError('PCK CRL expired at 2025-07-19T10:00:35.000Z'),
    );

    const rootCrl = parseCrl(Buffer.from(collateral.root_ca_crl, 'hex'), 'root CA CRL');
    expect(rootCrl.nextUpdate).toEqual(new Date('2026-04-03T11:21:57Z'));
    expect(() => verifyCrl(rootCrl, intelSgxRootCa(), at, 'root CA CRL')).not.toThrow();
  });
});

describe('chains and CRLs of a test PKI', async () => {
  const pki = await createTestPki();
  const collateral = await buildCollateral(pki, { revokedPckSerials: ['1234', pki.pckLeaf.serial] });
  const rootCrl = parseCrl(Buffer.from(collateral.root_ca_crl, 'hex'), 'root CA CRL');
  const pckCrl = parseCrl(Buffer.from(collateral.pck_crl, 'hex'), 'PCK CRL');
  const chain = [pki.pckLeaf.cert, pki.pckCa.cert, pki.root.cert];

  it('parses revoked serials in node:crypto notation', () => {
    expect([...pckCrl.revokedSerials]).toEqual(['1234', pki.pckLeaf.serial]);
    expect(rootCrl.revokedSerials.size).toBe(0);
    expect(pki.pckLeaf.cert.serialNumber).toBe(pki.pckLeaf.serial);
  });

  it('verifies a chain with and without the root at its end, and finds the revoked leaf', () => {
    expect(() => verifyChain([pki.tcbSigner.cert, pki.root.cert], pki.root.cert, TEST_TIME, [rootCrl], 'TCB chain')).not.toThrow();
    expect(() => verifyChain([pki.tcbSigner.cert], pki.root.cert, TEST_TIME, [rootCrl], 'TCB chain')).not.toThrow();
    expect(() => verifyChain(chain, pki.root.cert, TEST_TIME, [rootCrl, pckCrl], 'PCK chain')).toThrow(new PkiError('PCK chain: leaf certificate is revoked'));
    expect(() => verifyChain(chain, pki.root.cert, TEST_TIME, [rootCrl], 'PCK chain')).toThrow(
      new PkiError('no CRL from the issuer of PCK chain: leaf certificate'),
    );
  });

  it('refuses a CA as end entity, an end entity as issuer, and out-of-order chains', () => {
    expect(() => verifyChain([pki.pckCa.cert], pki.root.cert, TEST_TIME, [rootCrl], 'X')).toThrow(
      new PkiError('X: leaf certificate must not be a CA certificate'),
    );
    expect(() => verifyChain([pki.pckLeaf.cert, pki.tcbSigner.cert], pki.root.cert, TEST_TIME, [rootCrl], 'X')).toThrow(
      new PkiError('X: intermediate certificate 1 is not a CA certificate'),
    );
    expect(() => verifyChain([pki.pckLeaf.cert], pki.root.cert, TEST_TIME, [rootCrl], 'X')).toThrow(/leaf certificate is not issued by the next certificate/);
    expect(() => verifyChain([pki.root.cert], pki.root.cert, TEST_TIME, [], 'X')).toThrow(new PkiError('X holds no certificate below the root'));
  });

  it('refuses certificates outside their validity at the evaluation time', () => {
    expect(() => verifyChain([pki.tcbSigner.cert], pki.root.cert, new Date('2028-01-01T00:00:00Z'), [rootCrl], 'X')).toThrow(
      /X: root CA is not valid at 2028-01-01/,
    );
  });

  it('refuses malformed CRLs and certificates with our own message', () => {
    expect(() => parseCrl(Buffer.from('3003020100', 'hex'), 'PCK CRL')).toThrow(new PkiError('PCK CRL is not a well-formed DER CRL'));
    expect(() => parsePemBundle('garbage', 'PCK chain')).toThrow(new PkiError('PCK chain holds no certificate'));
    expect(() => parsePemBundle('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', 'PCK chain')).toThrow(
      new PkiError('PCK chain certificate 0 is not a valid X.509 certificate'),
    );
  });

  it('the test PKI is understood by node:crypto as issued', () => {
    expect(pki.pckLeaf.cert.checkIssued(pki.pckCa.cert)).toBe(true);
    expect(new X509Certificate(pki.root.pem).ca).toBe(true);
  });
});
