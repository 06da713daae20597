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
import { BOOT_EVENTS, EV_NO_ACTION, headerRecord, rtmrsOf, sha384, writeCcel, type LogEvent } from '../../../support/ccel-writer.js';
import { trimCcel } from '../../../../shared/attestation/tdx/ccel.js';

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
      eventLog: { replayed: false },
    });
  });

  it('accepts v5 evidence with an event log, ignoring unknown fields such as aa_eventlog', async () => {
    // A log that accounts for DEFAULT_TD's RTMRs could only be found by inverting SHA-384; this
    // one is the boot log, and the quote carries the RTMRs it produces.
    const rtmr = rtmrsOf(BOOT_EVENTS);
    const withLog = { ...evidence({ version: 5, report: { rtmr } }, writeCcel(BOOT_EVENTS)), aa_eventlog: 'ignored' };
    const verified = await verifier.verifyWithPolicy(withLog, nonce, createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd] }));
    expect(verified.claims).toMatchObject({
      quoteVersion: 5,
      bodyType: 3,
      ccEventlogPresent: true,
      eventLog: { replayed: true, events: BOOT_EVENTS.length, rtmrs: [0, 1, 2] },
      mrServiceTd: '00'.repeat(48),
    });
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

describe('TdxVerifier: the CCEL event log', async () => {
  const pki = await createTestPki();
  const collateral = new StaticCollateralSource(parseCollateral(await buildCollateral(pki), 'test'));
  const verifier = new TdxVerifier({ policy: createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd] }), collateral, trustedRootCaPem: pki.root.pem, now: () => TEST_TIME });
  const nonce = reportDataFrom('session-log');
  const bootRtmrs = rtmrsOf(BOOT_EVENTS);
  const kernel = sha384('vmlinuz-6.8 image').toString('hex');
  const otherKernel = sha384('vmlinuz-6.9 image').toString('hex');
  /** Evidence whose quote is genuine with RTMRs `rtmr`, carrying `log` as cc_eventlog. */
  const evidence = (rtmr: [string, string, string, string], log?: Uint8Array) =>
    evidenceFor(buildTdxQuote(pki, { report: { reportData: nonce, rtmr } }).quote, log);
  /** The attacker's log: the genuine boot's events, edited. */
  const edited = (edit: (events: LogEvent[]) => void): Buffer => {
    const events = BOOT_EVENTS.map((event) => ({ ...event }));
    edit(events);
    return writeCcel(events);
  };

  it('accepts a log whose replay gives the quote RTMR0-2, trimmed or as the firmware table', async () => {
    for (const log of [writeCcel(BOOT_EVENTS), writeCcel(BOOT_EVENTS, { end: 'pad-00' }), trimCcel(writeCcel(BOOT_EVENTS, { end: 'pad-ff' }))!]) {
      const verified = await verifier.verify(evidence(bootRtmrs, log), nonce);
      expect(verified.claims).toMatchObject({ ccEventlogPresent: true, eventLog: { replayed: true, events: 6, rtmrs: [0, 1, 2] }, rtmr: bootRtmrs });
    }
  });

  it('refuses a log with one event digest changed, naming the register', async () => {
    // The TD booted a backdoored kernel (its quote says so); the log names the expected one.
    const quoteRtmrs = rtmrsOf(BOOT_EVENTS.map((event, i) => (i === 3 ? { ...event, sha384: sha384('backdoored kernel') } : event)));
    await expectRefusal(
      () => verifier.verify(evidence(quoteRtmrs, writeCcel(BOOT_EVENTS)), nonce),
      'event_log',
      `rtmr1: the event log replays to ${bootRtmrs[1]}, the quote has ${quoteRtmrs[1]}`,
    );
    const flipped = edited((events) => {
      const digest = sha384(events[0]!.data!);
      digest[47] = digest[47]! ^ 1;
      events[0] = { ...events[0]!, sha384: digest };
    });
    await expectRefusal(() => verifier.verify(evidence(bootRtmrs, flipped), nonce), 'event_log', /^attestation refused: event_log: rtmr0: /);
  });

  it('refuses a log with an event dropped, or reordered', async () => {
    const dropped = edited((events) => events.splice(5, 1));
    await expectRefusal(() => verifier.verify(evidence(bootRtmrs, dropped), nonce), 'event_log', /^attestation refused: event_log: rtmr2: /);
    const reordered = edited((events) => events.splice(0, 2, events[1]!, events[0]!));
    await expectRefusal(() => verifier.verify(evidence(bootRtmrs, reordered), nonce), 'event_log', /^attestation refused: event_log: rtmr0: /);
  });

  it('refuses a log for other registers, and accepts no log-free register', async () => {
    // The same events, each moved one register up: RTMR0 is then unaccounted for.
    const shifted = edited((events) => events.forEach((event, i) => (events[i] = { ...event, mrIndex: event.mrIndex + 1 })));
    await expectRefusal(
      () => verifier.verify(evidence(bootRtmrs, shifted), nonce),
      'event_log',
      `rtmr0: the event log replays to ${'00'.repeat(48)}, the quote has ${bootRtmrs[0]}`,
    );
    // Another TD's genuine log, sent along with this TD's quote.
    await expectRefusal(() => verifier.verify(evidence(bootRtmrs, writeCcel([{ mrIndex: 1, data: 'other TD' }])), nonce), 'event_log', /rtmr0: /);
  });

  it('refuses a truncated or absurd log as malformed (4xx), never a server error', async () => {
    const log = writeCcel(BOOT_EVENTS, { end: 'none' });
    await expectRefusal(
      () => verifier.verify(evidence(bootRtmrs, log.subarray(0, log.length - 3)), nonce),
      'event_log',
      /^attestation refused: event_log: malformed event log: truncated at byte \d+/,
    );
    const digestCount = Buffer.from(log);
    digestCount.writeUInt32LE(0xffffffff, headerRecord().length + 8);
    await expectRefusal(
      () => verifier.verify(evidence(bootRtmrs, digestCount), nonce),
      'event_log',
      /malformed event log: record at byte \d+ has 4294967295 digests/,
    );
    const eventSize = Buffer.from(log);
    eventSize.writeUInt32LE(0x7fffffff, headerRecord().length + 12 + 2 + 48);
    await expectRefusal(
      () => verifier.verify(evidence(bootRtmrs, eventSize), nonce),
      'event_log',
      /malformed event log: truncated at byte \d+ \(event data: 2147483647 bytes/,
    );
    await expectRefusal(() => verifier.verify(evidence(bootRtmrs, Buffer.from('not a log')), nonce), 'event_log', /malformed event log/);
  });

  it('leaves RTMR3 to run-time extensions when the log has no RTMR3 event, and checks it when it has', async () => {
    const extended = [bootRtmrs[0], bootRtmrs[1], bootRtmrs[2], sha384('attestation agent extension').toString('hex')] as [string, string, string, string];
    const verified = await verifier.verify(evidence(extended, writeCcel(BOOT_EVENTS)), nonce);
    expect(verified.claims).toMatchObject({ eventLog: { replayed: true, rtmrs: [0, 1, 2] } });
    const withRtmr3 = [...BOOT_EVENTS, { mrIndex: 4, data: 'container image' }];
    expect((await verifier.verify(evidence(rtmrsOf(withRtmr3), writeCcel(withRtmr3)), nonce)).claims).toMatchObject({ eventLog: { rtmrs: [0, 1, 2, 3] } });
    // An RTMR3 event the TD never measured, added so that a policy finds it: refused.
    await expectRefusal(() => verifier.verify(evidence(extended, writeCcel(withRtmr3)), nonce), 'event_log', /^attestation refused: event_log: rtmr3: /);
  });

  it('passes evidence without a log unless the policy pins event digests', async () => {
    expect((await verifier.verify(evidence(bootRtmrs), nonce)).claims).toMatchObject({ ccEventlogPresent: false, eventLog: { replayed: false } });
    const pinned = createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], eventDigests: [{ rtmr: 1, digest: kernel }] });
    await expectRefusal(
      () => verifier.verifyWithPolicy(evidence(bootRtmrs), nonce, pinned),
      'event_log',
      'the policy requires event digests, but the evidence carries no event log',
    );
  });

  it('requires each pinned event digest among the replayed events of its register', async () => {
    const policy = createTdxPolicy({
      mrTd: [DEFAULT_TD.mrTd],
      eventDigests: [
        { rtmr: 1, digest: kernel },
        { rtmr: 2, digest: sha384('initrd').toString('hex') },
      ],
    });
    await expect(verifier.verifyWithPolicy(evidence(bootRtmrs, writeCcel(BOOT_EVENTS)), nonce, policy)).resolves.toMatchObject({ tee: 'tdx' });
    // A genuine TD with a consistent log, but another kernel.
    const otherBoot = BOOT_EVENTS.map((event, i) => (i === 3 ? { ...event, data: 'vmlinuz-6.9 image' } : event));
    expect(sha384('vmlinuz-6.9 image').toString('hex')).toBe(otherKernel);
    await expectRefusal(
      () => verifier.verifyWithPolicy(evidence(rtmrsOf(otherBoot), writeCcel(otherBoot)), nonce, policy),
      'event_log',
      `rtmr1: the required event ${kernel} is not in the event log`,
    );
    // The right digest, but in another register than the policy names.
    const wrongRegister = createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], eventDigests: [{ rtmr: 2, digest: kernel }] });
    await expectRefusal(
      () => verifier.verifyWithPolicy(evidence(bootRtmrs, writeCcel(BOOT_EVENTS)), nonce, wrongRegister),
      'event_log',
      /rtmr2: the required event/,
    );
  });

  it('does not count EV_NO_ACTION records, which extend nothing, as measured events', async () => {
    // Informational records do not change the replay, so an attacker could add any digest as one.
    const otherBoot = BOOT_EVENTS.map((event, i) => (i === 3 ? { ...event, data: 'vmlinuz-6.9 image' } : event));
    const log = writeCcel([...otherBoot, { mrIndex: 2, eventType: EV_NO_ACTION, data: 'vmlinuz-6.8 image' }]);
    const policy = createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], eventDigests: [{ rtmr: 1, digest: kernel }] });
    await expectRefusal(
      () => verifier.verifyWithPolicy(evidence(rtmrsOf(otherBoot), log), nonce, policy),
      'event_log',
      `rtmr1: the required event ${kernel} is not in the event log`,
    );
  });

  it('pins RTMR3 like RTMR0-2', async () => {
    const rtmr3 = sha384('agent measured init-data').toString('hex');
    const policy = createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd], rtmr3: [rtmr3] });
    const rtmrs = (value: string) => [bootRtmrs[0], bootRtmrs[1], bootRtmrs[2], value] as [string, string, string, string];
    await expect(verifier.verifyWithPolicy(evidence(rtmrs(rtmr3)), nonce, policy)).resolves.toMatchObject({ claims: { rtmr: rtmrs(rtmr3) } });
    await expectRefusal(
      () => verifier.verifyWithPolicy(evidence(rtmrs('00'.repeat(48))), nonce, policy),
      'rtmr_3',
      `${'00'.repeat(48)} is not an allowed value`,
    );
  });
});
