import { describe, expect, it } from 'vitest';
import { createTdxPolicy } from '../../sealer/attestation/tdx/policy.js';
import { describePolicy } from '../../sealer/verifiers.js';

const m = (byte: string) => byte.repeat(48);

describe('describePolicy', () => {
  it('names rtmr3 and the event log constraints only when the policy sets them', () => {
    expect(describePolicy(createTdxPolicy({ mrTd: [m('aa')] }))).toBe(
      'mrTd 1 allowed, rtmr0 any, rtmr1 any, rtmr2 any, mrConfigId any, TCB status UpToDate, DEBUG refused',
    );
    const full = createTdxPolicy({
      mrTd: [m('aa')],
      rtmr3: [m('13'), m('14')],
      eventDigests: [
        { rtmr: 1, digest: m('e1') },
        { rtmr: 2, digest: m('e2') },
      ],
    });
    expect(describePolicy(full)).toBe(
      'mrTd 1 allowed, rtmr0 any, rtmr1 any, rtmr2 any, rtmr3 2 allowed, mrConfigId any, eventDigests 2 required, TCB status UpToDate, DEBUG refused',
    );
  });
});
