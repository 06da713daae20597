/**
 * Real Intel quotes with their Intel collateral (../shared/tdx-fixtures, read in place), always
 * evaluated at a time taken from the collateral, never at the wall clock.
 */
import { describe, expect, it } from 'vitest';
import { collateralWindows, PccsCollateralSource, StaticCollateralSource, TdxCollateral } from '../../../../sealer/attestation/tdx/collateral.js';
import { createTdxPolicy, TCB_STATUSES } from '../../../../sealer/attestation/tdx/policy.js';
import { parseTdxQuote } from '../../../../shared/attestation/tdx/quote.js';
import { TdxVerifier, verifyTdxQuote } from '../../../../sealer/attestation/tdx/verifier.js';
import { intelSgxRootCa } from '../../../../sealer/attestation/tdx/verify.js';
import { evidenceFor } from '../../../support/tdx-quote-builder.js';
import { startFakePccs } from '../../../support/fake-pccs.js';
import { FIXTURES_SKIP_NOTE, fixtureBytes, fixtureCollateral, fixturePath, fixturesPresent, timeInsideCollateral } from '../../../support/tdx-fixtures.js';
import { expectRefusal } from '../../../support/tdx-helpers.js';

const MRTD = '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7';
const REPORT_DATA = '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20';
const RTMR = [
  '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
  '0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378',
  'd833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132',
  '00'.repeat(48),
];

describe.skipIf(!fixturesPresent)(`real Intel quotes and collateral${FIXTURES_SKIP_NOTE}`, () => {
  const expected = () => new Uint8Array(Buffer.from(REPORT_DATA, 'hex'));

  function verifierFor(collateral: TdxCollateral | PccsCollateralSource, at: Date, mrTd = MRTD) {
    return new TdxVerifier({
      policy: createTdxPolicy({ mrTd: [mrTd], rtmr0: [RTMR[0]!], rtmr1: [RTMR[1]!], rtmr2: [RTMR[2]!], mrConfigId: ['00'.repeat(48)] }),
      collateral: collateral instanceof PccsCollateralSource ? collateral : new StaticCollateralSource(collateral),
      now: () => at,
    });
  }

  it('the collateral window is the documented one', () => {
    const { overall } = collateralWindows(fixtureCollateral('tdx_quote_collateral.json'));
    expect(overall).toEqual({ issueDate: new Date('2025-06-19T10:32:27Z'), nextUpdate: new Date('2025-07-19T10:16:03Z') });
  });

  it('tdx_quote is UpToDate inside its collateral window and passes a matching policy', async () => {
    const collateral = fixtureCollateral('tdx_quote_collateral.json');
    const at = timeInsideCollateral(collateral);
    const verified = await verifierFor(collateral, at).verify(evidenceFor(fixtureBytes('tdx_quote')), expected());
    expect(verified.claims).toMatchObject({ tee: 'tdx', quoteVersion: 4, mrTd: MRTD, rtmr: RTMR, debug: false, tcbStatus: 'UpToDate', advisoryIds: [] });
    // Intel's TCB info for this FMSPC: TDX_01 identity, module SVN 6 at or above its UpToDate level (isvsvn 4).
    expect(verified.claims).toMatchObject({
      tdxModule: { identityId: 'TDX_01', svn: 6, tcbStatus: 'UpToDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
    expect(Buffer.from(verified.reportData).toString('hex')).toBe(REPORT_DATA);
  });

  it('tdx_quote is refused outside the window, for another MRTD and for another session', async () => {
    const collateral = fixtureCollateral('tdx_quote_collateral.json');
    const { overall } = collateralWindows(collateral);
    const evidence = evidenceFor(fixtureBytes('tdx_quote'));
    const after = new Date(overall.nextUpdate.getTime() + 24 * 3600 * 1000);
    await expectRefusal(() => verifierFor(collateral, after).verify(evidence, expected()), 'collateral', /TCB info expired at 2025-07-19T10:16:03.000Z/);
    const before = new Date(overall.issueDate.getTime() - 24 * 3600 * 1000);
    await expectRefusal(() => verifierFor(collateral, before).verify(evidence, expected()), 'collateral', /not yet valid/);
    const at = timeInsideCollateral(collateral);
    await expectRefusal(() => verifierFor(collateral, at, 'ee'.repeat(48)).verify(evidence, expected()), 'mr_td', `${MRTD} is not an allowed value`);
    await expectRefusal(() => verifierFor(collateral, at).verify(evidence, new Uint8Array(64)), 'report_data');
  });

  it('tdx_quote_outdated is never accepted as UpToDate, whatever the policy allows', async () => {
    const collateral = fixtureCollateral('tdx_quote_outdated_collateral.json');
    const raw = fixtureBytes('tdx_quote_outdated');
    const at = timeInsideCollateral(collateral);
    await expectRefusal(
      () => verifyTdxQuote(raw, new StaticCollateralSource(collateral), { at }),
      'tcb_status',
      'the platform TCB is below every level of the TCB info (not UpToDate)',
    );
    const lenient = new TdxVerifier({
      policy: createTdxPolicy({ mrTd: [parseTdxQuote(raw).report.mrTd], allowedTcbStatuses: TCB_STATUSES.filter((s) => s !== 'Revoked') }),
      collateral: new StaticCollateralSource(collateral),
      now: () => at,
    });
    await expectRefusal(() => lenient.verify(evidenceFor(raw), parseTdxQuote(raw).reportData), 'tcb_status');
  });

  it('sgx_quote is refused as not a TDX quote', async () => {
    const collateral = fixtureCollateral('sgx_quote_collateral.json');
    await expectRefusal(
      () => verifierFor(collateral, timeInsideCollateral(collateral)).verify(evidenceFor(fixtureBytes('sgx_quote')), expected()),
      'tee_type',
      'not a TDX quote (tee_type 0x00000000, sgx)',
    );
  });

  it('loads fixture collateral from its file', async () => {
    const source = await StaticCollateralSource.fromFile(fixturePath('tdx_quote_collateral.json'));
    const quote = parseTdxQuote(fixtureBytes('tdx_quote'));
    const at = timeInsideCollateral(fixtureCollateral('tdx_quote_collateral.json'));
    expect(await source.collateralFor(quote, { trustedRootCa: intelSgxRootCa(), at })).toEqual(fixtureCollateral('tdx_quote_collateral.json'));
  });

  it('verifies with collateral fetched from a PCCS, asking for the platform CA of the quote', async () => {
    const collateral = fixtureCollateral('tdx_quote_collateral.json');
    const pccs = await startFakePccs(collateral, { https: true });
    try {
      const at = timeInsideCollateral(collateral);
      const source = new PccsCollateralSource({ baseUrl: pccs.url, tlsCa: pccs.tlsCa!, now: () => at });
      const verified = await verifierFor(source, at).verify(evidenceFor(fixtureBytes('tdx_quote')), expected());
      expect(verified.claims['tcbStatus']).toBe('UpToDate');
      expect(pccs.requests).toContain('/sgx/certification/v4/pckcrl?ca=platform&encoding=der');
      expect(pccs.requests).toContain('/tdx/certification/v4/tcb?fmspc=B0C06F000000');
    } finally {
      await pccs.close();
    }
  });
});
