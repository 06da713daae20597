import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  appraiseTdx,
  checkAgentPolicy,
  checkInitData,
  checkPlatform,
  checkReportDataBinding,
  createTdxPolicy,
  type TdxAppraisalInput,
} from '../../../../sealer/attestation/tdx/policy.js';
import { expectKmsError, expectRefusal } from '../../../support/tdx-helpers.js';

const m = (byte: string) => byte.repeat(48);
const expected = new Uint8Array(64).fill(7);
const good: TdxAppraisalInput = {
  mrTd: m('aa'),
  rtmr: [m('10'), m('11'), m('12'), m('13')],
  mrConfigId: m('cc'),
  debug: false,
  reportData: expected,
  tcbStatus: 'UpToDate',
  advisoryIds: [],
  tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
};
const policy = createTdxPolicy({ mrTd: [m('aa'), m('ab')], rtmr0: [m('10')], rtmr1: [m('11')], rtmr2: [m('12')], mrConfigId: [m('cc')] });

describe('createTdxPolicy', () => {
  it('normalizes measurements to lowercase hex and defaults the TCB statuses to UpToDate', () => {
    const parsed = createTdxPolicy({ mrTd: [`0x${'AB'.repeat(48)}`, ` ${'cd'.repeat(48)} `] });
    expect(parsed).toEqual({
      mrTd: ['ab'.repeat(48), 'cd'.repeat(48)],
      allowedTcbStatuses: ['UpToDate'],
      deniedAdvisoryIds: [],
      minTcbEvaluationDataNumber: 0,
    });
    expect(createTdxPolicy({ mrTd: [m('aa')], allowedTcbStatuses: ['UpToDate', 'SWHardeningNeeded'] }).allowedTcbStatuses).toEqual([
      'UpToDate',
      'SWHardeningNeeded',
    ]);
  });

  it('refuses configurations that would accept any image or nothing at all', async () => {
    await expectKmsError(() => createTdxPolicy(null), 'CONFIG', 'TDX policy must be an object');
    await expectKmsError(() => createTdxPolicy({}), 'CONFIG', 'TDX policy: mrTd must be a non-empty list of 48-byte hex measurements');
    await expectKmsError(() => createTdxPolicy({ mrTd: [] }), 'CONFIG', 'TDX policy: mrTd must be a non-empty list of 48-byte hex measurements');
    await expectKmsError(
      () => createTdxPolicy({ mrTd: [m('aa')], rtmr1: [] }),
      'CONFIG',
      'TDX policy: rtmr1 must be a non-empty list of 48-byte hex measurements',
    );
    await expectKmsError(() => createTdxPolicy({ mrTd: ['abc'] }), 'CONFIG', 'TDX policy: mrTd[0] is not a 48-byte (96 hex digit) measurement');
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa'), 5] }), 'CONFIG', 'TDX policy: mrTd[1] is not a 48-byte (96 hex digit) measurement');
    await expectKmsError(() => createTdxPolicy({ mrtd: [m('aa')] }), 'CONFIG', 'TDX policy: unknown field mrtd');
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], allowedTcbStatuses: ['Fine'] }), 'CONFIG', /unknown or unacceptable status Fine/);
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], allowedTcbStatuses: ['Revoked'] }), 'CONFIG', /unknown or unacceptable status Revoked/);
    await expectKmsError(
      () => createTdxPolicy({ mrTd: [m('aa')], allowedTcbStatuses: [] }),
      'CONFIG',
      'TDX policy: allowedTcbStatuses must be a non-empty list',
    );
  });
});

describe('TCB recency fields of the policy', () => {
  it('validates deniedAdvisoryIds and minTcbEvaluationDataNumber like the other fields', async () => {
    const parsed = createTdxPolicy({ mrTd: [m('aa')], deniedAdvisoryIds: ['INTEL-SA-01036'], minTcbEvaluationDataNumber: 18 });
    expect(parsed).toMatchObject({ deniedAdvisoryIds: ['INTEL-SA-01036'], minTcbEvaluationDataNumber: 18 });
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], deniedAdvisoryIds: 'INTEL-SA-01036' }), 'CONFIG', /deniedAdvisoryIds must be a list/);
    await expectKmsError(
      () => createTdxPolicy({ mrTd: [m('aa')], deniedAdvisoryIds: ['intel-sa-01036'] }),
      'CONFIG',
      /deniedAdvisoryIds\[0\] is not an advisory ID/,
    );
    await expectKmsError(
      () => createTdxPolicy({ mrTd: [m('aa')], minTcbEvaluationDataNumber: -1 }),
      'CONFIG',
      /minTcbEvaluationDataNumber must be a non-negative integer/,
    );
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], minTcbEvaluationDataNumber: '17' }), 'CONFIG', /minTcbEvaluationDataNumber/);
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], minTcbEvaluationDataNumber: 17.5 }), 'CONFIG', /minTcbEvaluationDataNumber/);
  });

  it('refuses a denied advisory, naming it, and collateral older than the minimum evaluation data number', async () => {
    const strict = createTdxPolicy({ mrTd: [m('aa')], deniedAdvisoryIds: ['INTEL-SA-01036', 'INTEL-SA-00999'], minTcbEvaluationDataNumber: 18 });
    const recent = { ...good, tcbEvaluationDataNumber: { tcbInfo: 18, qeIdentity: 19 } };
    expect(appraiseTdx({ ...recent, advisoryIds: ['INTEL-SA-00837'] }, strict, expected)).toBeUndefined();
    await expectRefusal(
      () => appraiseTdx({ ...recent, advisoryIds: ['INTEL-SA-00837', 'INTEL-SA-01036'] }, strict, expected),
      'advisory_ids',
      'the platform is affected by denied advisories: INTEL-SA-01036',
    );
    await expectRefusal(
      () => appraiseTdx({ ...good, tcbEvaluationDataNumber: { tcbInfo: 18, qeIdentity: 17 } }, strict, expected),
      'tcb_evaluation_data_number',
      "the collateral's tcbEvaluationDataNumber (TCB info 18, QE identity 17) is below the required 18",
    );
  });
});

describe('createTdxPolicy: rtmr3 and eventDigests', () => {
  it('takes rtmr3 like rtmr0-2 and normalizes event digests', () => {
    const parsed = createTdxPolicy({
      mrTd: [m('aa')],
      rtmr3: [m('13')],
      eventDigests: [
        { rtmr: 1, digest: `0x${'AB'.repeat(48)}` },
        { rtmr: 3, digest: m('cd') },
      ],
    });
    expect(parsed.rtmr3).toEqual([m('13')]);
    expect(parsed.eventDigests).toEqual([
      { rtmr: 1, digest: m('ab') },
      { rtmr: 3, digest: m('cd') },
    ]);
  });

  it('refuses event digests it cannot apply as written', async () => {
    const withDigests = (eventDigests: unknown) => () => createTdxPolicy({ mrTd: [m('aa')], eventDigests });
    const shape = 'TDX policy: eventDigests must be a non-empty list of {"rtmr": 0-3, "digest": 48-byte hex}';
    await expectKmsError(withDigests([]), 'CONFIG', shape);
    await expectKmsError(withDigests({ rtmr: 1, digest: m('ab') }), 'CONFIG', shape);
    await expectKmsError(withDigests([m('ab')]), 'CONFIG', 'TDX policy: eventDigests[0] must be an object {"rtmr": 0-3, "digest": 48-byte hex}');
    await expectKmsError(withDigests([{ rtmr: 4, digest: m('ab') }]), 'CONFIG', 'TDX policy: eventDigests[0].rtmr must be 0, 1, 2 or 3');
    await expectKmsError(withDigests([{ rtmr: '1', digest: m('ab') }]), 'CONFIG', 'TDX policy: eventDigests[0].rtmr must be 0, 1, 2 or 3');
    await expectKmsError(withDigests([{ digest: m('ab') }]), 'CONFIG', 'TDX policy: eventDigests[0].rtmr must be 0, 1, 2 or 3');
    await expectKmsError(
      withDigests([
        { rtmr: 1, digest: m('ab') },
        { rtmr: 2, digest: 'ab'.repeat(32) },
      ]),
      'CONFIG',
      'TDX policy: eventDigests[1].digest is not a 48-byte (96 hex digit) SHA-384 digest',
    );
    await expectKmsError(withDigests([{ rtmr: 1, digset: m('ab') }]), 'CONFIG', 'TDX policy: eventDigests[0]: unknown field digset');
    await expectKmsError(
      () => createTdxPolicy({ mrTd: [m('aa')], rtmr3: [] }),
      'CONFIG',
      'TDX policy: rtmr3 must be a non-empty list of 48-byte hex measurements',
    );
  });
});

describe('appraiseTdx', () => {
  it('accepts claims that match every reference value', () => {
    expect(appraiseTdx(good, policy, expected)).toBeUndefined();
    expect(appraiseTdx({ ...good, mrTd: m('ab') }, policy, expected)).toBeUndefined();
  });

  it('leaves registers without a reference list unconstrained', () => {
    const mrTdOnly = createTdxPolicy({ mrTd: [m('aa')] });
    expect(appraiseTdx({ ...good, rtmr: [m('00'), m('00'), m('00'), m('00')], mrConfigId: m('00') }, mrTdOnly, expected)).toBeUndefined();
  });

  it('names each failing claim', async () => {
    await expectRefusal(() => appraiseTdx({ ...good, mrTd: m('ac') }, policy, expected), 'mr_td', `${m('ac')} is not an allowed value`);
    await expectRefusal(
      () => appraiseTdx({ ...good, rtmr: [m('00'), m('11'), m('12'), m('13')] }, policy, expected),
      'rtmr_0',
      `${m('00')} is not an allowed value`,
    );
    await expectRefusal(() => appraiseTdx({ ...good, rtmr: [m('10'), m('00'), m('12'), m('13')] }, policy, expected), 'rtmr_1');
    await expectRefusal(() => appraiseTdx({ ...good, rtmr: [m('10'), m('11'), m('00'), m('13')] }, policy, expected), 'rtmr_2');
    await expectRefusal(() => appraiseTdx({ ...good, mrConfigId: m('00') }, policy, expected), 'mr_config_id', `${m('00')} is not an allowed value`);
    await expectRefusal(
      () => appraiseTdx({ ...good, debug: true }, policy, expected),
      'debug',
      'the TD is debuggable (TDATTRIBUTES.DEBUG is set): the host can read its memory',
    );
    await expectRefusal(
      () => appraiseTdx({ ...good, tcbStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-00837'] }, policy, expected),
      'tcb_status',
      'OutOfDate is not allowed (allowed: UpToDate) (advisories: INTEL-SA-00837)',
    );
    await expectRefusal(() => appraiseTdx({ ...good, reportData: new Uint8Array(64) }, policy, expected), 'report_data', /does not bind this session/);
  });

  it('pins RTMR3 when the policy lists it', async () => {
    const pinned = createTdxPolicy({ mrTd: [m('aa')], rtmr3: [m('13')] });
    expect(appraiseTdx(good, pinned, expected)).toBeUndefined();
    await expectRefusal(
      () => appraiseTdx({ ...good, rtmr: [m('10'), m('11'), m('12'), m('00')] }, pinned, expected),
      'rtmr_3',
      `${m('00')} is not an allowed value`,
    );
  });

  it('requires each pinned event among the verified events of its RTMR, and a log at all', async () => {
    const pinned = createTdxPolicy({ mrTd: [m('aa')], eventDigests: [{ rtmr: 2, digest: m('e2') }] });
    const eventLog = { digests: [[m('e0')], [m('e1')], [m('e9'), m('e2')], []] };
    expect(appraiseTdx({ ...good, eventLog }, pinned, expected)).toBeUndefined();
    await expectRefusal(() => appraiseTdx(good, pinned, expected), 'event_log', 'the policy requires event digests, but the evidence carries no event log');
    await expectRefusal(
      () => appraiseTdx({ ...good, eventLog: { digests: [[m('e2')], [m('e1')], [m('e9')], []] } }, pinned, expected),
      'event_log',
      `rtmr2: the required event ${m('e2')} is not in the event log`,
    );
    // A policy without eventDigests does not look at the log.
    expect(appraiseTdx({ ...good, eventLog: { digests: [[], [], [], []] } }, policy, expected)).toBeUndefined();
  });

  it('checks the session binding before anything else', async () => {
    await expectRefusal(() => appraiseTdx({ ...good, mrTd: m('00'), debug: true, reportData: new Uint8Array(64) }, policy, expected), 'report_data');
  });

  it('accepts the TCB statuses the policy allows', () => {
    expect(checkPlatform({ debug: false, tcbStatus: 'SWHardeningNeeded', advisoryIds: [] }, ['UpToDate', 'SWHardeningNeeded'])).toBeUndefined();
  });

  it('treats a wrong-sized expected report_data as a caller bug', async () => {
    await expectKmsError(() => checkReportDataBinding(new Uint8Array(64), new Uint8Array(32)), 'INTERNAL', 'expected report_data must be 64 bytes');
    await expectRefusal(() => checkReportDataBinding(new Uint8Array(32), new Uint8Array(64)), 'report_data');
  });
});

describe("initData in the policy (what a workload's init-data must hold)", () => {
  const rego = 'package agent_policy\ndefault ExecProcessRequest := false\n';
  const regoDigest = createHash('sha384').update(rego, 'utf8').digest('hex');
  const requiring = (initData: unknown) => createTdxPolicy({ mrTd: [m('aa')], initData }, { initData: true });

  it('parses {"required", "data"}: digests normalized, one or a list per entry', () => {
    const parsed = requiring({ required: true, data: { 'policy.rego': `0x${regoDigest.toUpperCase()}`, 'aa.toml': [m('01'), m('02')] } });
    expect(parsed.initData).toEqual({ required: true, data: { 'policy.rego': [regoDigest], 'aa.toml': [m('01'), m('02')] } });
    expect(requiring({ required: true }).initData).toEqual({ required: true, data: {} });
    expect(createTdxPolicy({ mrTd: [m('aa')] }, { initData: true }).initData).toBeUndefined();
  });

  it("is refused outside the sealing service's policy for workloads, where nothing could apply it", async () => {
    await expectKmsError(
      () => createTdxPolicy({ mrTd: [m('aa')], initData: { required: true } }),
      'CONFIG',
      /initData applies only to .*KMS_SEALER_TDX_POLICY_FILE/,
    );
  });

  it('refuses shapes that would drop or garble a constraint', async () => {
    for (const bad of [true, [], { required: 'yes' }, { data: {} }, { required: true, data: [] }, { required: true, extra: 1 }]) {
      await expectKmsError(() => requiring(bad), 'CONFIG', /initData must be/);
    }
    await expectKmsError(() => requiring({ required: false, data: { 'policy.rego': regoDigest } }), 'CONFIG', /initData.data needs "required": true/);
    await expectKmsError(() => requiring({ required: true, data: { 'policy.rego': [] } }), 'CONFIG', /must not be an empty list/);
    await expectKmsError(() => requiring({ required: true, data: { 'policy.rego': 'ab'.repeat(32) } }), 'CONFIG', /SHA-384 digests/);
  });

  it('keeps an entry named __proto__ an entry', () => {
    const parsed = requiring(JSON.parse(`{"required": true, "data": {"__proto__": "${regoDigest}"}}`));
    expect(Object.keys(parsed.initData!.data)).toEqual(['__proto__']);
    expect(() => checkInitData({ data: {} }, parsed.initData)).toThrow(/entry "__proto__" is missing/);
  });

  it('checkInitData: required means present; each pinned entry must have an allowed text', async () => {
    const pinned = requiring({ required: true, data: { 'policy.rego': regoDigest } }).initData;
    expect(() => checkInitData({ data: { 'policy.rego': rego, 'aa.toml': 'x' } }, pinned)).not.toThrow();
    await expectRefusal(() => checkInitData(undefined, pinned), 'init_data', /requires init-data/);
    await expectRefusal(() => checkInitData({ data: { 'aa.toml': 'x' } }, pinned), 'init_data', 'entry "policy.rego" is missing from the init-data');
    const other = `${rego}default ReadStreamRequest := true\n`;
    const otherDigest = createHash('sha384').update(other, 'utf8').digest('hex');
    await expectRefusal(
      () => checkInitData({ data: { 'policy.rego': other } }, pinned),
      'init_data',
      `entry "policy.rego" has SHA-384 ${otherDigest}, which is not an allowed value`,
    );
    // Not required, or no requirement: nothing is demanded.
    expect(() => checkInitData(undefined, requiring({ required: false }).initData)).not.toThrow();
    expect(() => checkInitData(undefined, undefined)).not.toThrow();
  });
});

describe('agentPolicies in the policy (workloads admitted by their agent policy)', () => {
  const rego = 'package agent_policy\ndefault ExecProcessRequest := false\n';
  const regoDigest = createHash('sha384').update(rego, 'utf8').digest('hex');
  const admitting = createTdxPolicy({ mrTd: [m('aa')], mrConfigId: [m('cc')], agentPolicies: [regoDigest] }, { initData: true });

  it("is refused outside the sealing service's policy for workloads", async () => {
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], agentPolicies: [regoDigest] }), 'CONFIG', /agentPolicies applies only to/);
    await expectKmsError(() => createTdxPolicy({ mrTd: [m('aa')], agentPolicies: [] }, { initData: true }), 'CONFIG', /agentPolicies/);
  });

  it('leaves MRCONFIGID to the init-data check: the quote alone passes the reference values', () => {
    expect(() => appraiseTdx({ ...good, mrConfigId: m('dd') }, admitting, expected)).not.toThrow();
  });

  it("checkAgentPolicy: an identity in mrConfigId, or a function's init-data that trusts this sealer alone, with an allowed agent policy", async () => {
    const self = m('5e');
    const trusting = JSON.stringify({ mrTd: [m('aa')], mrConfigId: [self] });
    const fn = (entries: Record<string, string>) => ({ data: entries });
    expect(() => checkAgentPolicy(undefined, admitting, m('cc'), self)).not.toThrow();
    expect(() => checkAgentPolicy(fn({ 'policy.rego': rego, 'sealer-tdx-policy.json': trusting }), admitting, m('dd'), self)).not.toThrow();
    expect(() =>
      checkAgentPolicy(
        fn({ 'policy.rego': rego, 'sealer-tdx-policy.json': JSON.stringify({ mrTd: [m('aa')], mrConfigId: [`0x${self.toUpperCase()}`] }) }),
        admitting,
        m('dd'),
        self,
      ),
    ).not.toThrow();
    await expectRefusal(
      () => checkAgentPolicy(undefined, admitting, m('dd'), self),
      'mr_config_id',
      /is not an allowed value, and the attestation carried no init-data/,
    );
    const refusals: Array<[Record<string, string>, RegExp]> = [
      [{ 'policy.rego': rego, 'sealer-tdx-policy.json': trusting, 'cdh.toml': 'x' }, /entry "cdh\.toml" is not one a function's init-data has/],
      [{ 'sealer-tdx-policy.json': trusting }, /entry "policy\.rego" is missing/],
      [{ 'policy.rego': rego }, /entry "sealer-tdx-policy\.json" is missing/],
      [{ 'policy.rego': `${rego}\n`, 'sealer-tdx-policy.json': trusting }, /which is not an allowed value/],
      // A function that would trust another sealer, or any: shares and sealed requests could go there.
      [{ 'policy.rego': rego, 'sealer-tdx-policy.json': JSON.stringify({ mrTd: [m('aa')] }) }, /does not pin mrConfigId to this one's alone/],
      [{ 'policy.rego': rego, 'sealer-tdx-policy.json': JSON.stringify({ mrTd: [m('aa')], mrConfigId: [self, m('ee')] }) }, /does not pin mrConfigId/],
      [{ 'policy.rego': rego, 'sealer-tdx-policy.json': JSON.stringify({ mrTd: [m('aa')], mrConfigId: [m('ee')] }) }, /does not pin mrConfigId/],
      [{ 'policy.rego': rego, 'sealer-tdx-policy.json': 'not json' }, /is not a TDX policy a function can apply/],
    ];
    for (const [entries, message] of refusals) await expectRefusal(() => checkAgentPolicy(fn(entries), admitting, m('dd'), self), 'init_data', message);
    // No wider than this sealer's own policy: a TD the host made with this MRCONFIGID but another
    // kernel, firmware or TCB would pass a function whose policy left them open.
    const reference = createTdxPolicy(
      {
        mrTd: [m('aa')],
        rtmr1: [m('11')],
        deniedAdvisoryIds: ['INTEL-SA-00837'],
        minTcbEvaluationDataNumber: 17,
        eventDigests: [{ rtmr: 2, digest: m('e2') }],
      },
      { initData: true },
    );
    const strict = {
      mrTd: [m('aa')],
      rtmr1: [m('11')],
      mrConfigId: [self],
      deniedAdvisoryIds: ['INTEL-SA-00837'],
      minTcbEvaluationDataNumber: 17,
      eventDigests: [{ rtmr: 2, digest: m('e2') }],
    };
    const withReference = { ...admitting, reference };
    const trustingWith = (policy: object) => fn({ 'policy.rego': rego, 'sealer-tdx-policy.json': JSON.stringify(policy) });
    expect(() => checkAgentPolicy(trustingWith(strict), withReference, m('dd'), self)).not.toThrow();
    expect(() =>
      checkAgentPolicy(trustingWith({ ...strict, rtmr2: [m('12')], deniedAdvisoryIds: ['INTEL-SA-00837', 'INTEL-SA-01036'] }), withReference, m('dd'), self),
    ).not.toThrow();
    const wider: Array<[object, RegExp]> = [
      [(({ rtmr1: _open, ...rest }) => rest)(strict), /leaves rtmr1 open/],
      [{ ...strict, rtmr1: [m('11'), m('1f')] }, new RegExp(`admits rtmr1 ${m('1f')}`)],
      [{ ...strict, mrTd: [m('aa'), m('ab')] }, new RegExp(`admits mrTd ${m('ab')}`)],
      [{ ...strict, allowedTcbStatuses: ['UpToDate', 'OutOfDate'] }, /admits TCB status OutOfDate/],
      [{ ...strict, deniedAdvisoryIds: [] }, /does not deny INTEL-SA-00837/],
      [{ ...strict, minTcbEvaluationDataNumber: 16 }, /admits tcbEvaluationDataNumber below 17/],
      [(({ eventDigests: _none, ...rest }) => rest)(strict), /does not require event/],
      [{ ...strict, rtmr0: 'not a list' }, /is not a TDX policy a function can apply/],
    ];
    for (const [policy, message] of wider)
      await expectRefusal(() => checkAgentPolicy(trustingWith(policy), withReference, m('dd'), self), 'init_data', message);
    // Without its own measured identity a sealer cannot tell: nothing is admitted by agent policy.
    await expectRefusal(
      () => checkAgentPolicy(fn({ 'policy.rego': rego, 'sealer-tdx-policy.json': trusting }), admitting, m('dd'), undefined),
      'init_data',
      /own identity is unknown/,
    );
  });
});
