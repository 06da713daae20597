/** TdxVerifier end to end on Trustee-shaped evidence carrying synthetic quotes. */
import { describe, expect, it } from 'vitest';
import { parseCollateral, StaticCollateralSource } from '../../../../sealer/attestation/tdx/collateral.js';
import { createTdxPolicy } from '../../../../sealer/attestation/tdx/policy.js';
import { TdxVerifier } from '../../../../sealer/attestation/tdx/verifier.js';
import {
  buildCollateral,
  buildTdxQuote,
  createTestPki,
  DEFAULT_TD,
  evidenceFor,
  reportDataFrom,
  TD_ATTRIBUTES_DEBUG,
  TEST_TIME,
  type QuoteOptions,
} from '../../../support/tdx-quote-builder.js';
import { expectKmsError, expectRefusal } from '../../../support/tdx-helpers.js';

describe('TdxVerifier', async () => {
  const pki = await createTestPki();
  const collateral = new StaticCollateralSource(parseCollateral(await buildCollateral(pki), 'test'));
  const policy = createTdxPolicy({
    mrTd: [DEFAULT_TD.mrTd],
    rtmr0: [DEFAULT_TD.rtmr[0]],
    rtmr1: [DEFAULT_TD.rtmr[1]],
    rtmr2: [DEFAULT_TD.rtmr[2]],
    mrConfigId: [DEFAULT_TD.mrConfigId],
  });
  let clock = TEST_TIME;
  const verifier = new TdxVerifier({ policy, collateral, trustedRootCaPem: pki.root.pem, now: () => clock });
  const nonce = reportDataFrom('session-1');
  const evidence = (options: QuoteOptions = {}, ccEventlog?: Uint8Array) =>
    evidenceFor(buildTdxQuote(pki, { ...options, report: { reportData: nonce, ...options.report } }).quote, ccEventlog);

  it('accepts genuine evidence of the expected TD and returns its claims', async () => {
    clock = TEST_TIME;
    const verified = await verifier.verify(evidence(), nonce);
    expect(verifier.tee).toBe('tdx');
    expect(verified.tee).toBe('tdx');
    expect(verified.reportData).toEqual(nonce);
    expect(verified.claims).toEqual({
      tee: 'tdx',
      quoteVersion: 4,
      bodyType: 2,
      teeTcbSvn: DEFAULT_TD.teeTcbSvn,
      mrSeam: DEFAULT_TD.mrSeam,
      mrSignerSeam: DEFAULT_TD.mrSignerSeam,
      seamAttributes: DEFAULT_TD.seamAttributes,
      tdAttributes: DEFAULT_TD.tdAttributes,
      debug: false,
      xfam: DEFAULT_TD.xfam,
      mrTd: DEFAULT_TD.mrTd,
      mrConfigId: DEFAULT_TD.mrConfigId,
      mrOwner: DEFAULT_TD.mrOwner,
      mrOwnerConfig: DEFAULT_TD.mrOwnerConfig,
      rtmr: [...DEFAULT_TD.rtmr],
      reportData: Buffer.from(nonce).toString('hex'),
      tcbStatus: 'UpToDate',
      advisoryIds: [],
      tdxModule: { identityId: 'TDX_01', svn: 6, tcbStatus: 'UpToDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
      ccEventlogPresent: false,
    });
  });

  it('accepts v5 evidence with an event log, ignoring unknown fields such as aa_eventlog', async () => {
    const withLog = { ...evidence({ version: 5 }, new Uint8Array([1, 2, 3])), aa_eventlog: 'ignored' };
    const verified = await verifier.verify(withLog, nonce);
    expect(verified.claims).toMatchObject({ quoteVersion: 5, bodyType: 3, ccEventlogPresent: true, mrServiceTd: '00'.repeat(48) });
  });

  it('refuses a wrong MRTD, RTMR or MRCONFIGID, naming the claim', async () => {
    await expectRefusal(() => verifier.verify(evidence({ report: { mrTd: '01'.repeat(48) } }), nonce), 'mr_td', `${'01'.repeat(48)} is not an allowed value`);
    await expectRefusal(
      () => verifier.verify(evidence({ report: { rtmr: [DEFAULT_TD.rtmr[0], DEFAULT_TD.rtmr[1], '02'.repeat(48), DEFAULT_TD.rtmr[3]] } }), nonce),
      'rtmr_2',
    );
    await expectRefusal(() => verifier.verify(evidence({ report: { mrConfigId: '03'.repeat(48) } }), nonce), 'mr_config_id');
  });

  it('ignores RTMR3 (runtime-extended) for the policy', async () => {
    const rtmr3 = evidence({ report: { rtmr: [DEFAULT_TD.rtmr[0], DEFAULT_TD.rtmr[1], DEFAULT_TD.rtmr[2], '04'.repeat(48)] } });
    expect((await verifier.verify(rtmr3, nonce)).claims['rtmr']).toEqual([...DEFAULT_TD.rtmr.slice(0, 3), '04'.repeat(48)]);
  });

  it('refuses a debug TD', async () => {
    await expectRefusal(() => verifier.verify(evidence({ report: { tdAttributes: TD_ATTRIBUTES_DEBUG } }), nonce), 'debug');
  });

  it('refuses evidence bound to another session', async () => {
    await expectRefusal(() => verifier.verify(evidence(), reportDataFrom('session-2')), 'report_data', /does not bind this session/);
  });

  it('refuses an OutOfDate TCB unless the per-secret policy allows it', async () => {
    const outdated = evidence({ report: { teeTcbSvn: '06010200000000000000000000000000' } });
    await expectRefusal(
      () => verifier.verify(outdated, nonce),
      'tcb_status',
      'OutOfDate is not allowed (allowed: UpToDate) (advisories: INTEL-SA-00837, INTEL-SA-01036)',
    );
    const lenient = createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], allowedTcbStatuses: ['UpToDate', 'OutOfDate'] });
    const verified = await verifier.verifyWithPolicy(outdated, nonce, lenient);
    expect(verified.claims).toMatchObject({ tcbStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-00837', 'INTEL-SA-01036'] });
  });

  it('carries the TDX module verdict and refuses a denied advisory or too old collateral by per-secret policy', async () => {
    const oldModule = evidence({ report: { teeTcbSvn: '03010300000000000000000000000000' } });
    const allowOutOfDate = { mrTd: [DEFAULT_TD.mrTd], allowedTcbStatuses: ['UpToDate', 'OutOfDate'] };
    const verified = await verifier.verifyWithPolicy(oldModule, nonce, createTdxPolicy(allowOutOfDate));
    expect(verified.claims).toMatchObject({
      tcbStatus: 'OutOfDate',
      advisoryIds: ['INTEL-SA-01036', 'INTEL-SA-01099'],
      tdxModule: { identityId: 'TDX_01', svn: 3, tcbStatus: 'OutOfDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
    await expectRefusal(
      () => verifier.verifyWithPolicy(oldModule, nonce, createTdxPolicy({ ...allowOutOfDate, deniedAdvisoryIds: ['INTEL-SA-01099'] })),
      'advisory_ids',
      'the platform is affected by denied advisories: INTEL-SA-01099',
    );
    await expectRefusal(
      () => verifier.verifyWithPolicy(evidence(), nonce, createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], minTcbEvaluationDataNumber: 18 })),
      'tcb_evaluation_data_number',
      /TCB info 17, QE identity 17\) is below the required 18/,
    );
    expect(
      (await verifier.verifyWithPolicy(evidence(), nonce, createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], minTcbEvaluationDataNumber: 17 }))).claims['tcbStatus'],
    ).toBe('UpToDate');
  });

  it('evaluates collateral at the injected clock', async () => {
    clock = new Date('2030-02-02T00:00:00Z');
    try {
      await expectRefusal(
        () => verifier.verify(evidence(), nonce),
        'collateral',
        /^attestation refused: collateral: TCB info expired at 2030-02-01T00:00:00.000Z/,
      );
    } finally {
      clock = TEST_TIME;
    }
  });

  it('refuses a quote of another TEE type', async () => {
    const sgxHeader = buildTdxQuote(pki, { report: { reportData: nonce } }).quote;
    sgxHeader.writeUInt32LE(0, 4);
    await expectRefusal(() => verifier.verify(evidenceFor(sgxHeader), nonce), 'tee_type', 'not a TDX quote (tee_type 0x00000000, sgx)');
  });

  it('refuses synthetic quotes when trusting only Intel', async () => {
    const intelOnly = new TdxVerifier({ policy, collateral, now: () => TEST_TIME });
    await expectRefusal(() => intelOnly.verify(evidence(), nonce), 'crl');
  });

  it('answers malformed evidence with BAD_REQUEST', async () => {
    const shape = 'TDX evidence must be a JSON object {"quote": base64, "cc_eventlog"?: base64}';
    await expectKmsError(() => verifier.verify(null, nonce), 'BAD_REQUEST', shape);
    await expectKmsError(() => verifier.verify([evidence()], nonce), 'BAD_REQUEST', shape);
    await expectKmsError(() => verifier.verify({}, nonce), 'BAD_REQUEST', 'TDX evidence: quote must be non-empty standard base64');
    await expectKmsError(() => verifier.verify({ quote: 'not base64!' }, nonce), 'BAD_REQUEST', 'TDX evidence: quote must be non-empty standard base64');
    await expectKmsError(
      () => verifier.verify({ ...evidence(), cc_eventlog: 42 }, nonce),
      'BAD_REQUEST',
      'TDX evidence: cc_eventlog must be non-empty standard base64',
    );
    const truncated = Buffer.from(evidence().quote, 'base64').subarray(0, 300).toString('base64');
    await expectKmsError(() => verifier.verify({ quote: truncated }, nonce), 'BAD_REQUEST', 'malformed quote: truncated at td_report.mr_owner');
  });

  it('rejects a trusted root that is not a CA certificate at construction', async () => {
    await expectKmsError(() => new TdxVerifier({ policy, collateral, trustedRootCaPem: pki.pckLeaf.pem }), 'CONFIG');
  });
});
