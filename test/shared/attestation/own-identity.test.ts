/**
 * A TEE's own identity, read from its own evidence: the MRCONFIGID of a quote from the attestation
 * agent's REST API (a test quote provider over real HTTP), the identity sample evidence claims.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ownIdentity } from '../../../shared/attestation/own-identity.js';
import { NO_INIT_DATA, SampleAttester } from '../../../shared/attestation/sample.js';
import { AaEvidenceAttester } from '../../../shared/attestation/tdx/aa-attester.js';
import type { Attester } from '../../../shared/attestation/types.js';
import { createTestPki } from '../../support/tdx-quote-builder.js';
import { startTdxQuoteProvider, type TdxQuoteProvider } from '../../support/tdx-quote-provider.js';

const pki = await createTestPki();
const providers: TdxQuoteProvider[] = [];

afterAll(async () => {
  await Promise.all(providers.map((provider) => provider.close()));
});

describe('ownIdentity', () => {
  it("is the MRCONFIGID of the TD's own quote", async () => {
    const mrConfigId = randomBytes(48).toString('hex');
    const provider = await startTdxQuoteProvider(pki, { report: { mrConfigId } });
    providers.push(provider);
    expect(await ownIdentity(new AaEvidenceAttester({ baseUrl: provider.url }))).toBe(mrConfigId);
  });

  it('is the identity sample evidence claims, or none', async () => {
    const claimed = randomBytes(48).toString('hex');
    expect(await ownIdentity(new SampleAttester('1', claimed))).toBe(claimed);
    expect(await ownIdentity(new SampleAttester('1'))).toBe(NO_INIT_DATA);
  });

  it('says so when its own evidence is not a TDX quote (CONFIG)', async () => {
    const garbled: Attester = { tee: 'tdx', getEvidence: async () => ({ quote: Buffer.from('not a quote').toString('base64') }) };
    await expect(ownIdentity(garbled)).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringMatching(/^this TEE's own tdx evidence cannot be used: /),
    });
  });

  it('refuses a recorded quote: its evidence must carry the fresh report data asked for', async () => {
    const provider = await startTdxQuoteProvider(pki, { report: { mrConfigId: randomBytes(48).toString('hex') } });
    providers.push(provider);
    const recorded = await new AaEvidenceAttester({ baseUrl: provider.url }).getEvidence(new Uint8Array(64).fill(7));
    const replaying: Attester = { tee: 'tdx', getEvidence: async () => recorded };
    const recordedSample = await new SampleAttester('1', randomBytes(48).toString('hex')).getEvidence(new Uint8Array(64));
    const replayingSample: Attester = { tee: 'sample', getEvidence: async () => recordedSample };
    for (const attester of [replaying, replayingSample]) {
      await expect(ownIdentity(attester)).rejects.toMatchObject({
        code: 'CONFIG',
        message: expect.stringContaining('does not carry the report data asked for'),
      });
    }
  });
});
