// The admin policy's grants (sealer/admin-policy.ts): which entry grants a call. The sealing
// service keeps one memory of spent proofs per such entry, so their number is the policy's size.
import { describe, expect, it } from 'vitest';
import { AdminPolicy } from '../../sealer/admin-policy.js';

const OPERATOR = 'a'.repeat(96);
const FUNCTION = 'b'.repeat(96);
const AGENT_POLICY = 'c'.repeat(96);

describe('AdminPolicy.grantFor', () => {
  const policy = AdminPolicy.parse({ rotate: [OPERATOR, `policy.rego:${AGENT_POLICY}`], recover: [`policy.rego:${AGENT_POLICY}`] }, 'test');

  it('names the identity where it is granted, else its agent policy entry, else nothing', () => {
    expect(policy.grantFor('rotate', OPERATOR, AGENT_POLICY)).toBe(OPERATOR);
    expect(policy.grantFor('rotate', FUNCTION, AGENT_POLICY)).toBe(`policy.rego:${AGENT_POLICY}`);
    // Every identity admitted by one agent policy is granted by the same entry.
    expect(policy.grantFor('recover', OPERATOR, AGENT_POLICY)).toBe(policy.grantFor('recover', FUNCTION, AGENT_POLICY));
    expect(policy.grantFor('recover', FUNCTION)).toBeUndefined();
    expect(policy.grantFor('seal', OPERATOR, AGENT_POLICY)).toBeUndefined();
    expect(policy.allows('rotate', FUNCTION, AGENT_POLICY)).toBe(true);
    expect(policy.allows('verify', OPERATOR)).toBe(false);
  });
});
