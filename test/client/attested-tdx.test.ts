// The client's attested mode against TDX evidence: a function process (lean host) attesting with
// quotes from a test quote provider (as the CoCo attestation agent gives them), behind a sealing
// service in production mode; the client verifies the quotes with DCAP against synthetic
// collateral and the synthetic test root CA, and the TD's reference values.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KmsClient, spkiPin, type AttestOptions } from '../../client/index.js';
import { startLeanHost, type ServerProcess } from '../support/processes.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { buildCollateral, createTestPki, DEFAULT_TD_POLICY, type TestPki } from '../support/tdx-quote-builder.js';
import { startTdxQuoteProvider, type TdxQuoteProvider } from '../support/tdx-quote-provider.js';
import { failure } from '../support/kms-error.js';
import { startFakePccs } from '../support/fake-pccs.js';
import type { TdxCollateral } from '../../sealer/attestation/tdx/collateral.js';

const DAY = 86_400_000;

describe('attested mode with TDX evidence', () => {
  let dir: string;
  let pki: TestPki;
  let collateral: unknown;
  let providers: TdxQuoteProvider[];
  let sealer: SealerProcess;
  let kms: ServerProcess;
  let pin: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-client-tdx-'));
    const now = Date.now();
    pki = await createTestPki({ label: 'CLIENT', notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY) });
    collateral = await buildCollateral(pki, { issueDate: new Date(now - DAY), nextUpdate: new Date(now + 30 * DAY) });
    providers = [await startTdxQuoteProvider(pki, {}), await startTdxQuoteProvider(pki, {})];
    const files = {
      policy: join(dir, 'policy.json'),
      collateral: join(dir, 'collateral.json'),
      rootCa: join(dir, 'root-ca.pem'),
      sealerCa: join(dir, 'sealer-ca.pem'),
    };
    await writeFile(files.policy, JSON.stringify(DEFAULT_TD_POLICY));
    await writeFile(files.collateral, JSON.stringify(collateral));
    await writeFile(files.rootCa, pki.root.pem);
    sealer = await startSealerProcess({
      env: {
        KMS_SEALER_ATTESTER: 'tdx-aa',
        KMS_SEALER_AA_URL: providers[0]!.url,
        KMS_SEALER_INSECURE_DEV_MODE: 'false',
        KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64'),
        KMS_SEALER_TDX_POLICY_FILE: files.policy,
        KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
        KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      },
    });
    await writeFile(files.sealerCa, await sealer.caPem());
    const dataDir = join(dir, 'kms');
    kms = await startLeanHost({
      KMS_DATA_DIR: dataDir,
      KMS_STORE: 'fs',
      KMS_SEALER_URL: sealer.url,
      KMS_SEALER_CA_FILE: files.sealerCa,
      KMS_TRUSTED_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      KMS_ATTESTER: 'tdx-aa',
      KMS_AA_URL: providers[1]!.url,
    });
    pin = spkiPin(await readFile(join(dataDir, 'tls/cert.pem'), 'utf8'));
  });
  afterAll(async () => {
    await kms?.stop();
    await Promise.all((providers ?? []).map((p) => p.close()));
    await sealer?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  const attest = (overrides: Partial<AttestOptions> = {}): AttestOptions => ({
    policy: DEFAULT_TD_POLICY,
    collateral,
    trustedRootCaPem: pki.root.pem,
    ...overrides,
  });

  it("verifies the quote, seals every request over a pinned TLS connection, and reads the plaintext flow's key", async () => {
    const plain = new KmsClient({ url: kms.url, pin });
    const credentials = await plain.enroll('tina');
    const tina = plain.withCredentials(credentials);
    await tina.createPrimaryKey('pk');
    await tina.createDataKey('pk', 'dk');
    const { key } = await tina.getDataKey('pk', 'dk');

    const sealed = new KmsClient({ url: kms.url, pin, ...credentials, attest: attest() });
    const attestation = await sealed.attestation();
    expect(attestation).toMatchObject({ tee: 'tdx', claims: { mrTd: DEFAULT_TD_POLICY.mrTd[0] } });
    expect(attestation.serviceKey.kid).toBe(attestation.rootKeyId);
    expect((await sealed.getDataKey('pk', 'dk')).key).toBe(key);
    expect(await sealed.createDataKey('pk', 'dk2')).toMatchObject({ created: true });
    plain.close();
    sealed.close();
  });

  it('takes collateral from an https PCCS (pccsUrl) vouched for by pccsCa; not by the bundled roots alone', async () => {
    const pccs = await startFakePccs(collateral as TdxCollateral, { https: true });
    try {
      const plain = new KmsClient({ url: kms.url, pin });
      const credentials = await plain.enroll('uma');
      plain.close();
      const withCa = new KmsClient({ url: kms.url, pin, ...credentials, attest: attest({ collateral: undefined, pccsUrl: pccs.url, pccsCa: pccs.tlsCa! }) });
      expect(await withCa.attestation()).toMatchObject({ tee: 'tdx' });
      expect(pccs.requests.some((url) => url.startsWith('/tdx/certification/v4/tcb?fmspc='))).toBe(true);
      withCa.close();
      const fetched = pccs.requests.length;
      // Its certificate is from a private CA that Node's bundled roots do not hold: nothing is asked.
      const bundledOnly = new KmsClient({ url: kms.url, pin, ...credentials, attest: attest({ collateral: undefined, pccsUrl: pccs.url }) });
      const unverified = await failure(bundledOnly.attestation());
      expect(unverified.code).toBe('ATTESTATION');
      // Collateral that could not be fetched refuses nothing: the message does not say "refused".
      expect(unverified.message).toMatch(/^the service key's evidence could not be verified just now: TDX collateral for \S+ could not be fetched from https:/);
      expect(pccs.requests.length).toBe(fetched);
      bundledOnly.close();
      // An empty CA is not "no CA" (Node would take its default store, NODE_EXTRA_CA_CERTS included), nor is a CA that TLS would not load whole.
      for (const pccsCa of ['', `  ${pccs.tlsCa!}`]) {
        const refused = new KmsClient({ url: kms.url, pin, ...credentials, attest: attest({ collateral: undefined, pccsUrl: pccs.url, pccsCa }) });
        expect((await failure(refused.attestation())).code, JSON.stringify(pccsCa)).toBe('CONFIG');
        refused.close();
      }
      expect(pccs.requests.length).toBe(fetched);
    } finally {
      await pccs.close();
    }
  });

  it("refuses a TD that is not the policy's, evidence from an unknown root, and sample-only trust, before any credential", async () => {
    // The access log's reads so far: the first test's two (in the clear, then sealed), once logged.
    const reads = () => (kms.output().match(/"fn":"getDataKey"/g) ?? []).length;
    for (let i = 0; i < 50 && reads() < 2; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    const before = reads();
    const client = (options: AttestOptions) => new KmsClient({ url: kms.url, pin, user: 'tina', token: 'never-sent-0123456789', attest: options });
    const otherTd = await failure(client(attest({ policy: { ...DEFAULT_TD_POLICY, mrTd: ['7e'.repeat(48)] } })).getDataKey('pk', 'dk'));
    expect(otherTd).toMatchObject({ code: 'ATTESTATION', status: 0 });
    expect(otherTd.message).toContain('mr_td');
    const otherRoot = await createTestPki({ label: 'OTHER' });
    expect((await failure(client(attest({ trustedRootCaPem: otherRoot.root.pem })).getDataKey('pk', 'dk'))).code).toBe('ATTESTATION');
    expect((await failure(client({ allowDevelopment: true }).getDataKey('pk', 'dk'))).code).toBe('CONFIG'); // no policy for TDX
    expect((await failure(client(attest({ collateral: undefined })).getDataKey('pk', 'dk'))).code).toBe('CONFIG');

    // None of them reached the route: after one more request that does, the access log holds exactly one more.
    expect(
      await failure(new KmsClient({ url: kms.url, pin }).withCredentials({ user: 'tina', token: 'wrong-token-0123456789' }).getDataKey('pk', 'dk')),
    ).toMatchObject({ code: 'UNAUTHORIZED' });
    for (let i = 0; i < 50 && reads() === before; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(reads()).toBe(before + 1);
  });
});
