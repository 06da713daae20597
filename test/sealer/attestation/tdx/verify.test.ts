/**
 * DCAP verification (verify.ts) of synthetic quotes signed by a test PKI: one accepted case and
 * the failures it must refuse, each refused with the claim that failed.
 */
import { describe, expect, it } from 'vitest';
import { parseCollateral, type TdxCollateral } from '../../../../sealer/attestation/tdx/collateral.js';
import { parseTdxQuote } from '../../../../shared/attestation/tdx/quote.js';
import { intelSgxRootCa, INTEL_SGX_ROOT_CA_SHA256, trustedRootFromPem, verifyTdxQuoteDcap } from '../../../../sealer/attestation/tdx/verify.js';
import {
  buildCollateral,
  buildTdxQuote,
  createTestPki,
  flipBit,
  TD_ATTRIBUTES_DEBUG,
  TEST_TIME,
  type CollateralOptions,
  type QuoteOptions,
} from '../../../support/tdx-quote-builder.js';
import dcapQvl from '@phala/dcap-qvl';
import { expectKmsError, expectRefusal } from '../../../support/tdx-helpers.js';
import { createHash } from 'node:crypto';

describe('DCAP verification of synthetic quotes', async () => {
  const pki = await createTestPki();
  const collateral = parseCollateral(await buildCollateral(pki), 'test');
  const root = trustedRootFromPem(pki.root.pem);

  const dcap = (raw: Uint8Array, options: { collateral?: TdxCollateral; at?: Date } = {}) =>
    verifyTdxQuoteDcap(raw, parseTdxQuote(raw), options.collateral ?? collateral, { at: options.at ?? TEST_TIME, trustedRootCa: root });
  const quote = (options: QuoteOptions = {}) => buildTdxQuote(pki, options);

  it('accepts a valid v4 quote: UpToDate, no advisories', () => {
    expect(dcap(quote().quote)).toEqual({
      tcbStatus: 'UpToDate',
      advisoryIds: [],
      tdxModule: { identityId: 'TDX_01', svn: 6, tcbStatus: 'UpToDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
  });

  it('accepts v5 quotes (TD report 1.0 and 1.5 bodies) and trailing bytes', () => {
    expect(dcap(quote({ version: 5, bodyType: 2 }).quote).tcbStatus).toBe('UpToDate');
    expect(dcap(quote({ version: 5, bodyType: 3 }).quote).tcbStatus).toBe('UpToDate');
    expect(dcap(quote({ trailing: Buffer.alloc(64, 0xff) }).quote).tcbStatus).toBe('UpToDate');
  });

  it('reports OutOfDate with its advisories for a TDX module SVN below the UpToDate level', () => {
    const outdated = quote({ report: { teeTcbSvn: '06010200000000000000000000000000' } }).quote;
    expect(dcap(outdated)).toEqual({
      tcbStatus: 'OutOfDate',
      advisoryIds: ['INTEL-SA-00837', 'INTEL-SA-01036'],
      tdxModule: { identityId: 'TDX_01', svn: 6, tcbStatus: 'UpToDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
  });

  it('refuses a TCB below every level', async () => {
    const ancient = quote({ report: { teeTcbSvn: '01000000000000000000000000000000' } }).quote;
    await expectRefusal(() => dcap(ancient), 'tcb_status', 'the platform TCB is below every level of the TCB info (not UpToDate)');
  });

  it('refuses a flipped bit in the body (MRTD)', async () => {
    const { quote: raw, layout } = quote();
    await expectRefusal(() => dcap(flipBit(raw, layout.mrTd, 3)), 'quote_signature', 'the quote signature does not verify under the attestation key');
  });

  it('refuses a flipped bit in the body (report_data)', async () => {
    const { quote: raw, layout } = quote();
    await expectRefusal(() => dcap(flipBit(raw, layout.reportData + 5)), 'quote_signature');
  });

  it('refuses a flipped bit in the quote signature', async () => {
    const { quote: raw, layout } = quote();
    await expectRefusal(() => dcap(flipBit(raw, layout.quoteSignature + 40, 1)), 'quote_signature');
  });

  it('refuses a flipped bit in the QE report', async () => {
    const { quote: raw, layout } = quote();
    await expectRefusal(() => dcap(flipBit(raw, layout.qeReport + 100)), 'qe_report_signature', 'the QE report is not signed by the PCK key');
  });

  it('refuses a flipped bit in the QE report signature', async () => {
    const { quote: raw, layout } = quote();
    await expectRefusal(() => dcap(flipBit(raw, layout.qeReportSignature + 7)), 'qe_report_signature');
  });

  it('refuses an attestation key the QE report does not bind', async () => {
    const { quote: raw, layout } = quote();
    await expectRefusal(() => dcap(flipBit(raw, layout.attestationKey + 10)), 'qe_report_binding', 'the QE report does not bind the attestation key');
  });

  it('refuses a PCK chain from another root (wrong chain)', async () => {
    const impostor = await createTestPki({ label: 'Impostor' });
    await expectRefusal(() => dcap(buildTdxQuote(impostor).quote), 'pck_chain', 'PCK chain ends at a root CA that is not the trusted root');
    // A look-alike PKI with the very same names, its root left out of the chain: the PCK CA's
    // signature does not verify under the trusted root's key.
    const lookAlike = await createTestPki();
    const { quote: raw } = buildTdxQuote(lookAlike);
    const parsed = parseTdxQuote(raw);
    const withoutRoot = { ...parsed, signature: { ...parsed.signature, pckCertChainPem: parsed.signature.pckCertChainPem.slice(0, 2) } };
    await expectRefusal(
      () => verifyTdxQuoteDcap(raw, withoutRoot, collateral, { at: TEST_TIME, trustedRootCa: root }),
      'pck_chain',
      'PCK chain: intermediate certificate 1 signature does not verify under its issuer (untrusted chain)',
    );
    // And the look-alike chain as sent, ending at the look-alike root.
    await expectRefusal(() => dcap(raw), 'pck_chain', 'PCK chain ends at a root CA that is not the trusted root');
  });

  it('refuses a quote without a PCK chain', async () => {
    await expectRefusal(() => dcap(quote({ omitPckChain: true }).quote), 'pck_chain', /no certificate|no PCK certificate chain/);
  });

  it('refuses a revoked PCK certificate (PCK CRL)', async () => {
    const revoking = parseCollateral(await buildCollateral(pki, { revokedPckSerials: [pki.pckLeaf.serial] }), 'test');
    await expectRefusal(() => dcap(quote().quote, { collateral: revoking }), 'pck_chain', 'PCK chain: leaf certificate is revoked');
  });

  it('refuses a revoked PCK CA (root CA CRL)', async () => {
    const revoking = parseCollateral(await buildCollateral(pki, { revokedCaSerials: [pki.pckCa.serial] }), 'test');
    // The PCK CA also issues the PCK CRL, so the CRL chain is the first to fail.
    await expectRefusal(() => dcap(quote().quote, { collateral: revoking }), 'crl', 'PCK CRL issuer chain: leaf certificate is revoked');
  });

  it('refuses a PCK CRL not signed by the PCK CA (a forged CRL that drops revocations)', async () => {
    const forged = parseCollateral(await buildCollateral(pki, { pckCrlSigner: pki.tcbSigner }), 'test');
    await expectRefusal(() => dcap(quote().quote, { collateral: forged }), 'crl', 'PCK CRL signature does not verify');
  });

  it('refuses an expired PCK certificate', async () => {
    const shortLived = await createTestPki({ pckLeafNotAfter: new Date('2030-01-10T00:00:00Z') });
    const shortCollateral = parseCollateral(await buildCollateral(shortLived), 'test');
    const raw = buildTdxQuote(shortLived).quote;
    await expectRefusal(
      () => verifyTdxQuoteDcap(raw, parseTdxQuote(raw), shortCollateral, { at: TEST_TIME, trustedRootCa: trustedRootFromPem(shortLived.root.pem) }),
      'pck_chain',
      /^attestation refused: pck_chain: PCK chain: leaf certificate is not valid at 2030-01-15T00:00:00.000Z/,
    );
  });

  it('refuses a debug TD', async () => {
    await expectRefusal(
      () => dcap(quote({ report: { tdAttributes: TD_ATTRIBUTES_DEBUG } }).quote),
      'debug',
      'the TD is debuggable (TDATTRIBUTES.DEBUG is set): the host can read its memory',
    );
  });

  it('refuses a debug quoting enclave', async () => {
    await expectRefusal(() => dcap(quote({ debugQe: true }).quote), 'qe_identity', 'the quoting enclave runs in debug mode');
  });

  it('refuses a TD without SEPT_VE_DISABLE and a TD 1.5 service TD binding', async () => {
    await expectRefusal(() => dcap(quote({ report: { tdAttributes: '0000000000000000' } }).quote), 'td_attributes', 'TDATTRIBUTES.SEPT_VE_DISABLE is not set');
    await expectRefusal(() => dcap(quote({ version: 5, bodyType: 3, report: { mrServiceTd: '11'.repeat(48) } }).quote), 'mr_service_td');
  });

  it('refuses expired collateral and collateral not yet valid', async () => {
    await expectRefusal(
      () => dcap(quote().quote, { at: new Date('2030-03-01T00:00:00Z') }),
      'collateral',
      'TCB info expired at 2030-02-01T00:00:00.000Z (evaluated at 2030-03-01T00:00:00.000Z)',
    );
    await expectRefusal(
      () => dcap(quote().quote, { at: new Date('2029-12-01T00:00:00Z') }),
      'collateral',
      'TCB info is not yet valid at 2029-12-01T00:00:00.000Z (issued 2030-01-01T00:00:00.000Z)',
    );
  });

  it('refuses a CRL past its nextUpdate even when TCB info and QE identity are current', async () => {
    const staleCrls = await buildCollateral(pki, { issueDate: new Date('2029-12-01T00:00:00Z'), nextUpdate: new Date('2030-01-10T00:00:00Z') });
    const current = await buildCollateral(pki);
    const mixed = parseCollateral({ ...current, root_ca_crl: staleCrls.root_ca_crl }, 'test');
    await expectRefusal(() => dcap(quote().quote, { collateral: mixed }), 'crl', 'root CA CRL expired at 2030-01-10T00:00:00.000Z');
  });

  it('refuses a tampered TCB info and collateral for another platform', async () => {
    const tampered = parseCollateral({ ...collateral, tcb_info: collateral.tcb_info.replace('"OutOfDate"', '"UpToDate"') }, 'test');
    await expectRefusal(() => dcap(quote().quote, { collateral: tampered }), 'collateral', 'a collateral document signature does not verify');
    const otherPlatform = parseCollateral(await buildCollateral({ ...pki, fmspc: '00906ED50000' }), 'test');
    await expectRefusal(
      () => dcap(quote().quote, { collateral: otherPlatform }),
      'collateral',
      'the TCB info is for another platform (FMSPC differs from the PCK certificate)',
    );
  });

  it('trusts only the pinned Intel root by default', async () => {
    expect(createHash('sha256').update(intelSgxRootCa().raw).digest('hex')).toBe(INTEL_SGX_ROOT_CA_SHA256);
    expect(intelSgxRootCa().subject).toContain('CN=Intel SGX Root CA');
    const raw = quote().quote;
    await expectRefusal(
      () => verifyTdxQuoteDcap(raw, parseTdxQuote(raw), collateral, { at: TEST_TIME }),
      'crl',
      /^attestation refused: crl: root CA CRL is not issued by/,
    );
  });

  it('rejects a trusted root that is not a self-signed CA', async () => {
    await expectKmsError(() => trustedRootFromPem(pki.pckLeaf.pem), 'CONFIG', 'the trusted root CA must be a self-signed CA certificate in PEM');
    await expectKmsError(() => trustedRootFromPem('not a pem'), 'CONFIG');
  });
});

describe('DCAP verification with the TCB judged as Intel publishes it (tcb.ts)', async () => {
  const pki = await createTestPki();
  const root = trustedRootFromPem(pki.root.pem);
  const collateral = parseCollateral(await buildCollateral(pki), 'test');
  const collateralWith = async (options: CollateralOptions) => parseCollateral(await buildCollateral(pki, options), 'test');
  const dcap = (raw: Uint8Array, withCollateral: TdxCollateral = collateral) =>
    verifyTdxQuoteDcap(raw, parseTdxQuote(raw), withCollateral, { at: TEST_TIME, trustedRootCa: root });
  const svn = (moduleSvn: number, major: number, third = 3): string => Buffer.from([moduleSvn, major, third, ...Array(13).fill(0)]).toString('hex');
  const quote = (teeTcbSvn: string, options: QuoteOptions = {}) => buildTdxQuote(pki, { ...options, report: { teeTcbSvn, ...options.report } });

  /** Module SVN 4 is below tdxtcbcomponents[0] = 5 of every level; TEE_TCB_SVN[1] = 1 takes it out of the comparison. */
  const newModule = svn(4, 1);

  it('the library alone refuses the quote our module rule accepts (its TCB matching is not the gatekeeper)', () => {
    const raw = quote(newModule).quote;
    expect(() => dcapQvl.QuoteVerifier.newWithRootCa(Buffer.from(root.raw)).verify(Buffer.from(raw), { ...collateral }, TEST_TIME.getTime() / 1000)).toThrow(
      /^No matching TCB level found$/,
    );
    expect(dcap(raw)).toEqual({
      tcbStatus: 'UpToDate',
      advisoryIds: [],
      tdxModule: { identityId: 'TDX_01', svn: 4, tcbStatus: 'UpToDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
  });

  it('still refuses a bad signature anywhere when the library stops at its TCB matching', async () => {
    const { quote: raw, layout } = quote(newModule);
    await expectRefusal(() => dcap(flipBit(raw, layout.mrTd, 3)), 'quote_signature');
    await expectRefusal(() => dcap(flipBit(raw, layout.reportData + 1)), 'quote_signature');
    await expectRefusal(() => dcap(flipBit(raw, layout.quoteSignature + 9)), 'quote_signature');
    await expectRefusal(() => dcap(flipBit(raw, layout.qeReport + 100)), 'qe_report_signature');
    await expectRefusal(() => dcap(flipBit(raw, layout.qeReportSignature + 3)), 'qe_report_signature');
    await expectRefusal(() => dcap(flipBit(raw, layout.attestationKey + 10)), 'qe_report_binding');
    // TEE_TCB_SVN itself is signed: lowering the module major version to dodge the rule breaks the signature.
    await expectRefusal(() => dcap(flipBit(raw, layout.mrTd - 16 - 48 - 48 - 8 - 8 - 8 + 1, 0)), 'quote_signature');
    const tamperedTcb = parseCollateral({ ...collateral, tcb_info: collateral.tcb_info.replace('"isvsvn":4', '"isvsvn":1') }, 'test');
    await expectRefusal(() => dcap(raw, tamperedTcb), 'collateral', 'a collateral document signature does not verify');
    const tamperedQe = parseCollateral({ ...collateral, qe_identity: collateral.qe_identity.replace('"isvsvn":4', '"isvsvn":1') }, 'test');
    await expectRefusal(() => dcap(raw, tamperedQe), 'collateral', 'a collateral document signature does not verify');
    const impostor = await createTestPki({ label: 'Impostor' });
    await expectRefusal(() => dcap(buildTdxQuote(impostor, { report: { teeTcbSvn: newModule } }).quote), 'pck_chain');
    const forgedCollateral = parseCollateral(await buildCollateral(impostor), 'test');
    await expectRefusal(() => dcap(raw, forgedCollateral), 'crl');
  });

  it('performs the TD checks the library would have run after its TCB matching', async () => {
    await expectRefusal(() => dcap(quote(newModule, { report: { tdAttributes: TD_ATTRIBUTES_DEBUG } }).quote), 'debug');
    await expectRefusal(
      () => dcap(quote(newModule, { report: { tdAttributes: '0000000000000000' } }).quote),
      'td_attributes',
      'TDATTRIBUTES.SEPT_VE_DISABLE is not set',
    );
    await expectRefusal(
      () => dcap(quote(newModule, { report: { tdAttributes: '0000001000000100' } }).quote),
      'td_attributes',
      'reserved TDATTRIBUTES bits are set',
    );
    await expectRefusal(
      () => dcap(quote(newModule, { report: { tdAttributes: '0000003000000000' } }).quote),
      'td_attributes',
      'reserved TDATTRIBUTES bits are set',
    );
    await expectRefusal(() => dcap(quote(newModule, { version: 5, bodyType: 3, report: { mrServiceTd: '11'.repeat(48) } }).quote), 'mr_service_td');
    await expectRefusal(() => dcap(quote(newModule, { debugQe: true }).quote), 'qe_identity', 'the quoting enclave runs in debug mode');
    // PKS (bit 30) and PERFMON (bit 63) are not reserved.
    expect(dcap(quote(newModule, { report: { tdAttributes: '0000005000000080' } }).quote).tcbStatus).toBe('UpToDate');
  });

  it('reports a module whose identity level says OutOfDate as OutOfDate, with its advisories', () => {
    expect(dcap(quote(svn(3, 1)).quote)).toEqual({
      tcbStatus: 'OutOfDate',
      advisoryIds: ['INTEL-SA-01036', 'INTEL-SA-01099'],
      tdxModule: { identityId: 'TDX_01', svn: 3, tcbStatus: 'OutOfDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
  });

  it('refuses a non-zero MRSIGNERSEAM and SEAMATTRIBUTES outside the expected ones (major version 0)', async () => {
    expect(dcap(quote(svn(5, 0)).quote).tdxModule).toEqual({ identityId: null, svn: 5, tcbStatus: 'UpToDate' });
    await expectRefusal(() => dcap(quote(svn(5, 0), { report: { mrSignerSeam: '5a'.repeat(48) } }).quote), 'tdx_module', /MRSIGNERSEAM/);
    await expectRefusal(() => dcap(quote(svn(5, 0), { report: { seamAttributes: '0000000000000001' } }).quote), 'tdx_module', /SEAMATTRIBUTES/);
    const lenientMask = await collateralWith({ tdxModule: { mrsigner: '00'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFE' } });
    expect(dcap(quote(svn(5, 0), { report: { seamAttributes: '0000000000000001' } }).quote, lenientMask).tcbStatus).toBe('UpToDate');
  });

  it('refuses a module of major version 2 when the TCB info has no TDX_02 identity', async () => {
    await expectRefusal(() => dcap(quote(svn(6, 2)).quote), 'tdx_module', 'the TCB info has no identity TDX_02 for TDX module major version 2');
    const withTdx02 = await collateralWith({
      tdxModuleIdentities: [
        {
          id: 'TDX_02',
          mrsigner: '00'.repeat(48),
          attributes: '0000000000000000',
          attributesMask: 'FFFFFFFFFFFFFFFF',
          tcbLevels: [{ isvsvn: 1, tcbStatus: 'UpToDate' }],
        },
      ],
    });
    expect(dcap(quote(svn(6, 2)).quote, withTdx02).tdxModule).toEqual({ identityId: 'TDX_02', svn: 6, tcbStatus: 'UpToDate' });
  });

  it('compares the module SVN with tdxtcbcomponents only when TEE_TCB_SVN[1] is 0 (the skip rule)', async () => {
    await expectRefusal(() => dcap(quote(svn(4, 0)).quote), 'tcb_status', 'the platform TCB is below every level of the TCB info (not UpToDate)');
    expect(dcap(quote(svn(4, 1)).quote).tcbStatus).toBe('UpToDate');
    // Components after index 1 still count.
    expect(dcap(quote(svn(4, 1, 2)).quote).tcbStatus).toBe('OutOfDate');
  });

  it('evaluates TEE_TCB_SVN2 of a TD report 1.5 (quote v5): TD relaunch advised', () => {
    const relaunch = quote(svn(3, 1), { version: 5, bodyType: 3, report: { teeTcbSvn2: svn(4, 1) } }).quote;
    expect(dcap(relaunch)).toMatchObject({ tcbStatus: 'TDRelaunchAdvised', tdxModule: { identityId: 'TDX_01', svn: 3, tcbStatus: 'OutOfDate' } });
    const stale = quote(svn(3, 1), { version: 5, bodyType: 3, report: { teeTcbSvn2: svn(3, 1) } }).quote;
    expect(dcap(stale).tcbStatus).toBe('OutOfDate');
  });

  it('refuses a PCK certificate of another PCE than the TCB info', async () => {
    const otherPce = await collateralWith({ pceId: '0001' });
    await expectRefusal(() => dcap(quote(svn(6, 1)).quote, otherPce), 'collateral', /PCEID 0001, the PCK certificate for PCEID 0000/);
  });
});
