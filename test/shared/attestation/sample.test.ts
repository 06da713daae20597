import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SampleAttester, SampleVerifier } from '../../../shared/attestation/sample.js';

describe('sample attester and verifier', () => {
  const reportData = Buffer.alloc(64);
  reportData.set(createHash('sha384').update('x').digest());

  it('makes Trustee sample evidence {"svn": string, "report_data": base64}', async () => {
    const evidence = await new SampleAttester().getEvidence(reportData);
    expect(evidence).toEqual({ svn: '1', report_data: reportData.toString('base64') });
  });

  it("verifies the report data binding, padded or as the 48-byte digest Trustee's client sends", async () => {
    const verifier = new SampleVerifier();
    const claims = await verifier.verify(await new SampleAttester().getEvidence(reportData), reportData);
    expect(claims).toMatchObject({ tee: 'sample', claims: { svn: '1' } });
    await expect(verifier.verify({ svn: '1', report_data: reportData.subarray(0, 48).toString('base64') }, reportData)).resolves.toMatchObject({
      tee: 'sample',
    });
  });

  it.each([
    ['another report data', { svn: '1', report_data: Buffer.alloc(64, 1).toString('base64') }],
    ['a 32-byte report data', { svn: '1', report_data: Buffer.alloc(32).toString('base64') }],
    ['a numeric svn', { svn: 1, report_data: Buffer.alloc(64).toString('base64') }],
    ['no report data', { svn: '1' }],
    ['a string', 'evidence'],
  ])('refuses %s with FORBIDDEN', async (_label, evidence) => {
    await expect(new SampleVerifier().verify(evidence, reportData)).rejects.toMatchObject({ code: 'FORBIDDEN' });
  });
});
