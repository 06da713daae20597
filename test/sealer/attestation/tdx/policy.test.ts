import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  appraiseTdx,
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
};
const policy = createTdxPolicy({ mrTd: [m('aa'), m('ab')], rtmr0: [m('10')], rtmr1: [m('11')], rtmr2: [m('12')], mrConfigId: [m('cc')] });

describe('createTdxPolicy', () => {
  it('normalizes measurements to lowercase hex and defaults the TCB statuses to UpToDate', () => {
    const parsed = createTdxPolicy({ mrTd: [`0x${'AB'.repeat(48)}`, ` ${'cd'.repeat(48)} `] });
    expect(parsed).toEqual({ mrTd: ['ab'.repeat(48), 'cd'.repeat(48)], allowedTcbStatuses: ['UpToDate'] });
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
