/**
 * X.509 chain and CRL checks with node:crypto. @phala/dcap-qvl 0.3.9 checks revocation by serial
 * number only: it never verifies a CRL's signature or its thisUpdate/nextUpdate, and ignores
 * pck_crl_issuer_chain, so anyone able to alter collateral in transit could strip a revocation
 * or replay an old CRL. These functions close that gap; they throw PkiError with a message of our
 * own, which verify.ts turns into a refusal naming the claim.
 */
import { X509Certificate, verify as verifySignature } from 'node:crypto';
import { DER_TAG, DerError, derChildren, derIntegerHex, derOid, derTime, normalizeSerialHex, readDerExact, type DerNode } from './der.js';

export class PkiError extends Error {
  override readonly name = 'PkiError';
}

export function parseCertificate(pemOrDer: string | Uint8Array, what: string): X509Certificate {
  try {
    return new X509Certificate(typeof pemOrDer === 'string' ? pemOrDer : Buffer.from(pemOrDer));
  } catch (error) {
    throw new PkiError(`${what} is not a valid X.509 certificate`, { cause: error });
  }
}

/** Certificates of a PEM bundle, in order. */
export function parsePemBundle(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new PkiError(`${what} holds no certificate`);
  return blocks.map((block, index) => parseCertificate(block, `${what} certificate ${index}`));
}

interface NameParts {
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
}

/** Issuer and subject Name DER of a certificate (node:crypto only offers them as text). */
function certificateNames(cert: X509Certificate): NameParts {
  try {
    const certificate = readDerExact(new Uint8Array(cert.raw), DER_TAG.SEQUENCE);
    const [tbs] = derChildren(certificate);
    if (!tbs) throw new DerError('empty certificate');
    const fields = derChildren(tbs);
    // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, …
    const start = fields[0]?.tag === DER_TAG.CONTEXT_0 ? 1 : 0;
    const issuer = fields[start + 2];
    const subject = fields[start + 4];
    if (!issuer || !subject) throw new DerError('truncated TBSCertificate');
    return { issuer: issuer.bytes, subject: subject.bytes };
  } catch (error) {
    throw new PkiError('certificate structure is not understood', { cause: error });
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

const HASH_BY_SIGNATURE_OID: Record<string, string> = {
  '1.2.840.10045.4.3.2': 'sha256', // ecdsa-with-SHA256 (Intel's choice)
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.113549.1.1.11': 'sha256', // sha256WithRSAEncryption
};

export interface Crl {
  readonly issuerName: Uint8Array;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  readonly revokedSerials: ReadonlySet<string>;
  readonly tbs: Uint8Array;
  readonly hash: string | undefined;
  readonly signature: Uint8Array;
}

const isTime = (node: DerNode | undefined): boolean => node !== undefined && (node.tag === DER_TAG.UTC_TIME || node.tag === DER_TAG.GENERALIZED_TIME);

/** Parses a DER CRL (RFC 5280 §5.1) without trusting it; verifyCrl establishes trust. */
export function parseCrl(der: Uint8Array, what: string): Crl {
  try {
    const [tbsNode, algorithm, signatureBits, ...rest] = derChildren(readDerExact(der, DER_TAG.SEQUENCE));
    if (!tbsNode || !algorithm || signatureBits?.tag !== DER_TAG.BIT_STRING || rest.length > 0) {
      throw new DerError('not a CertificateList');
    }
    const fields = derChildren(tbsNode);
    let i = fields[0]?.tag === DER_TAG.INTEGER ? 1 : 0; // optional version
    i += 1; // inner signature algorithm
    const issuer = fields[i++];
    const thisUpdate = fields[i++];
    if (!issuer || !isTime(thisUpdate)) throw new DerError('truncated TBSCertList');
    const nextUpdate = isTime(fields[i]) ? fields[i++] : undefined;
    const revokedSerials = new Set<string>();
    if (fields[i]?.tag === DER_TAG.SEQUENCE) {
      for (const entry of derChildren(fields[i++]!)) {
        const [serial] = derChildren(entry);
        if (!serial) throw new DerError('empty revoked certificate entry');
        revokedSerials.add(derIntegerHex(serial));
      }
    }
    const [algorithmOid] = derChildren(algorithm);
    if (signatureBits.content[0] !== 0) throw new DerError('CRL signature has unused bits');
    return {
      issuerName: issuer.bytes,
      thisUpdate: derTime(thisUpdate!),
      nextUpdate: nextUpdate ? derTime(nextUpdate) : undefined,
      revokedSerials,
      tbs: tbsNode.bytes,
      hash: algorithmOid ? HASH_BY_SIGNATURE_OID[derOid(algorithmOid)] : undefined,
      signature: signatureBits.content.subarray(1),
    };
  } catch (error) {
    if (error instanceof PkiError) throw error;
    throw new PkiError(`${what} is not a well-formed DER CRL`, { cause: error });
  }
}

/** The CRL is issued and signed by `issuer` and current at `at`. */
export function verifyCrl(crl: Crl, issuer: X509Certificate, at: Date, what: string): void {
  if (!sameBytes(crl.issuerName, certificateNames(issuer).subject)) {
    throw new PkiError(`${what} is not issued by ${issuer.subject.replace(/\n/g, ', ')}`);
  }
  if (crl.hash === undefined) throw new PkiError(`${what} uses an unsupported signature algorithm`);
  let valid: boolean;
  try {
    valid = verifySignature(crl.hash, crl.tbs, issuer.publicKey, crl.signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new PkiError(`${what} signature does not verify`);
  if (at < crl.thisUpdate) throw new PkiError(`${what} is not yet valid (thisUpdate ${crl.thisUpdate.toISOString()})`);
  if (crl.nextUpdate === undefined) throw new PkiError(`${what} has no nextUpdate`);
  if (at > crl.nextUpdate) throw new PkiError(`${what} expired at ${crl.nextUpdate.toISOString()}`);
}

function checkValidity(cert: X509Certificate, at: Date, what: string): void {
  if (at < new Date(cert.validFrom) || at > new Date(cert.validTo)) {
    throw new PkiError(
      `${what} is not valid at ${at.toISOString()} (valid ${new Date(cert.validFrom).toISOString()} to ${new Date(cert.validTo).toISOString()})`,
    );
  }
}

function checkNotRevoked(cert: X509Certificate, crls: readonly Crl[], what: string): void {
  const issuerName = certificateNames(cert).issuer;
  const relevant = crls.filter((crl) => sameBytes(crl.issuerName, issuerName));
  // Fail closed: a chain whose issuer publishes no CRL in the collateral cannot be checked.
  if (relevant.length === 0) throw new PkiError(`no CRL from the issuer of ${what}`);
  const serial = normalizeSerialHex(cert.serialNumber);
  if (relevant.some((crl) => crl.revokedSerials.has(serial))) throw new PkiError(`${what} is revoked`);
}

/**
 * Verifies `chain` (leaf first, optionally ending with the root itself) up to `root` at time
 * `at`: every signature, name linkage, validity period, CA flag on issuers, and revocation of
 * every non-root certificate against `crls` (which the caller has verified). `checkRevocation:
 * false` skips only the last step, for a check made before the CRLs are at hand (collateral.ts
 * verifies the PCK chain before it fetches anything); the full check follows with the collateral.
 */
export function verifyChain(
  chain: readonly X509Certificate[],
  root: X509Certificate,
  at: Date,
  crls: readonly Crl[],
  what: string,
  options: { readonly leafIsCa?: boolean; readonly checkRevocation?: boolean } = {},
): void {
  const certs = [...chain];
  const last = certs[certs.length - 1];
  if (last && sameBytes(last.raw, root.raw)) certs.pop();
  else if (last && certs.length > 1 && sameBytes(certificateNames(last).issuer, certificateNames(last).subject)) {
    throw new PkiError(`${what} ends at a root CA that is not the trusted root`);
  }
  if (certs.length === 0) throw new PkiError(`${what} holds no certificate below the root`);
  checkValidity(root, at, `${what}: root CA`);
  const label = (index: number) => (index === 0 ? `${what}: leaf certificate` : `${what}: intermediate certificate ${index}`);
  // First establish that the chain links up to the trusted root; only then consult revocation,
  // so an untrusted chain is reported as such rather than as "no CRL for its issuer".
  certs.forEach((cert, index) => {
    // Issuers must be CAs; an end entity (PCK, TCB signing) must not be one, unless the caller
    // verifies a CA's own chain (the PCK CRL issuer).
    const mustBeCa = index > 0 || options.leafIsCa === true;
    if (cert.ca !== mustBeCa) throw new PkiError(`${label(index)} ${mustBeCa ? 'is not' : 'must not be'} a CA certificate`);
  });
  certs.forEach((cert, index) => {
    const issuer = certs[index + 1] ?? root;
    if (!sameBytes(certificateNames(cert).issuer, certificateNames(issuer).subject)) {
      throw new PkiError(`${label(index)} is not issued by the next certificate (does the chain end at the trusted root?)`);
    }
    let signed: boolean;
    try {
      signed = cert.verify(issuer.publicKey);
    } catch {
      signed = false;
    }
    if (!signed) throw new PkiError(`${label(index)} signature does not verify under its issuer (untrusted chain)`);
    checkValidity(cert, at, label(index));
  });
  if (options.checkRevocation !== false) certs.forEach((cert, index) => checkNotRevoked(cert, crls, label(index)));
  if (!root.verify(root.publicKey)) throw new PkiError(`${what}: trusted root is not self-signed`);
}
