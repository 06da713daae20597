/**
 * The sealing service's TDX configuration (KMS_SEALER_TDX_POLICY_FILE, KMS_SEALER_TDX_COLLATERAL_FILE,
 * KMS_SEALER_PCCS_URL, KMS_SEALER_TDX_ROOT_CA_FILE), on real processes: what starts, what refuses
 * to start and with which message. Attestation itself is covered end to end in
 * test/functions/tdx-attestation.test.ts.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KmsError } from '../../shared/errors.js';
import { startSealerProcess } from '../support/sealer.js';
import { buildCollateral, createTestPki, DEFAULT_TD } from '../support/tdx-quote-builder.js';

let dir: string;
const files = {
  policy: '',
  collateral: '',
  expired: '',
  rootCa: '',
  leafCert: '',
  typo: '',
  empty: '',
  notJson: '',
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-tdx-config-'));
  const pki = await createTestPki();
  const write = async (name: string, content: string) => {
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  };
  files.policy = await write('policy.json', JSON.stringify({ mrTd: [DEFAULT_TD.mrTd] }));
  // The builder's default collateral is valid in 2030: "not yet valid" at the wall clock.
  files.collateral = await write('collateral.json', JSON.stringify(await buildCollateral(pki)));
  files.expired = await write(
    'expired.json',
    JSON.stringify(await buildCollateral(pki, { issueDate: new Date('2020-01-01T00:00:00Z'), nextUpdate: new Date('2020-02-01T00:00:00Z') })),
  );
  files.rootCa = await write('root.pem', pki.root.pem);
  files.leafCert = await write('leaf.pem', pki.pckLeaf.pem);
  files.typo = await write('typo.json', JSON.stringify({ mrtd: [DEFAULT_TD.mrTd] }));
  files.empty = await write('empty.json', JSON.stringify({ mrTd: [] }));
  files.notJson = await write('not-json.json', 'mrTd: 7d7d');
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Starts a production-mode sealer with `env`; returns its logs, or the start failure's text. */
async function start(env: Record<string, string>): Promise<{ started: boolean; logs: string; stderr: string; messages: string[] }> {
  const dataDir = await mkdtemp(join(dir, 'sealer-'));
  try {
    const sealer = await startSealerProcess({ dataDir, env: { KMS_SEALER_INSECURE_DEV_MODE: 'false', ...env } });
    await sealer.settle();
    const result = { started: true, logs: sealer.logs(), stderr: sealer.stderr(), messages: sealer.messages() };
    await sealer.cleanup();
    return result;
  } catch (error) {
    return { started: false, logs: error instanceof Error ? error.message : String(error), stderr: '', messages: [] };
  }
}

describe('sealer TDX configuration', () => {
  it('without a policy: no verifier, so no TEE can attest (and sample is refused)', async () => {
    const dataDir = await mkdtemp(join(dir, 'sealer-'));
    const sealer = await startSealerProcess({ dataDir, env: { KMS_SEALER_INSECURE_DEV_MODE: 'false' } });
    try {
      expect(sealer.messages()).toContain('verifiers: none (no TEE can attest)');
      const client = await sealer.client();
      const error = await client.rootKey().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(KmsError);
      expect((error as KmsError).code).toBe('ROOT_KEY_UNAVAILABLE');
      expect((error as KmsError).message).toContain('sample evidence proves nothing');
    } finally {
      await sealer.cleanup();
    }
  });

  it('with a PCCS URL and NODE_ENV=production: the TDX verifier trusts the pinned Intel root', async () => {
    const result = await start({
      NODE_ENV: 'production',
      KMS_SEALER_ATTESTER: 'tdx-configfs',
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_PCCS_URL: 'https://pccs.invalid:8081/',
    });
    expect(result.started, result.logs).toBe(true);
    expect(result.messages).toContain('verifiers: tdx');
    expect(result.logs).toContain('(mrTd 1 allowed, rtmr0 any, rtmr1 any, rtmr2 any, mrConfigId any, TCB status UpToDate, DEBUG refused)');
    expect(result.logs).toContain(
      "collateral from https://pccs.invalid:8081 (cached per platform; its TLS certificate checked against Node's bundled root certificates); trust anchor the pinned Intel SGX Root CA",
    );
    expect(result.stderr).not.toContain('NON-INTEL ROOT CA');
    expect(result.messages).toContain('proves itself with tdx evidence (KMS_SEALER_ATTESTER)');
  });

  it('with KMS_SEALER_PCCS_ALLOW_HTTP outside production: starts with an http PCCS, and warns on stderr', async () => {
    const result = await start({
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_PCCS_URL: 'http://pccs.invalid:8081',
      KMS_SEALER_PCCS_ALLOW_HTTP: 'true',
    });
    expect(result.started, result.logs).toBe(true);
    expect(result.logs).toContain('collateral from http://pccs.invalid:8081 (cached per platform)');
    expect(result.stderr).toContain(
      '"level":"warn","component":"sealer","message":"KMS_SEALER_PCCS_ALLOW_HTTP: DCAP collateral comes from http://pccs.invalid:8081 over http; whoever controls that connection can serve older, still valid collateral"',
    );
  });

  it('with NODE_ENV=production it will not prove itself with sample evidence', async () => {
    const result = await start({ NODE_ENV: 'production', KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_PCCS_URL: 'https://pccs.invalid:8081/' });
    expect(result.started).toBe(false);
    expect(result.logs).toMatch(/cannot start: CONFIG: KMS_SEALER_ATTESTER=sample proves nothing and is refused when NODE_ENV=production/);
  });

  // The cluster administrator sets the sealer's environment from a ConfigMap that its agent policy
  // does not pin, beyond NODE_ENV: development mode must not be reachable from there.
  it('with NODE_ENV=production it will not accept sample evidence either (KMS_SEALER_INSECURE_DEV_MODE)', async () => {
    const result = await start({
      NODE_ENV: 'production',
      KMS_SEALER_INSECURE_DEV_MODE: 'true',
      KMS_SEALER_ATTESTER: 'tdx-configfs',
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_PCCS_URL: 'https://pccs.invalid:8081/',
    });
    expect(result.started, result.logs).toBe(false);
    expect(result.logs).toMatch(
      /cannot start: CONFIG: KMS_SEALER_INSECURE_DEV_MODE=true accepts sample evidence, which proves nothing, and is refused when NODE_ENV=production/,
    );
  });

  // The same ConfigMap could switch plaintext shares on: every hop between the TD and a custodian
  // (the ingress, a relay, the administrator's port-forward) would read them.
  it('with NODE_ENV=production it will not let shares travel in plaintext (KMS_SEALER_PLAINTEXT_SHARES=allow)', async () => {
    const production = {
      NODE_ENV: 'production',
      KMS_SEALER_ATTESTER: 'tdx-configfs',
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_PCCS_URL: 'https://pccs.invalid:8081/',
    };
    const allowed = await start({ ...production, KMS_SEALER_PLAINTEXT_SHARES: 'allow' });
    expect(allowed.started, allowed.logs).toBe(false);
    expect(allowed.logs).toMatch(
      /cannot start: CONFIG: KMS_SEALER_PLAINTEXT_SHARES=allow lets shares leave and enter unencrypted, readable by every hop on the way, and is refused when NODE_ENV=production/,
    );
    // `refuse`, as the default there, starts.
    const refused = await start({ ...production, KMS_SEALER_PLAINTEXT_SHARES: 'refuse' });
    expect(refused.started, refused.logs).toBe(true);
    expect(refused.messages).toContain('shares: only encrypted to custodians and to the recovery key');
  });

  it('with a collateral file that is not current: starts, and warns on stderr', async () => {
    const expired = await start({
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_TDX_COLLATERAL_FILE: files.expired,
      KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
    });
    expect(expired.started, expired.logs).toBe(true);
    expect(expired.stderr).toContain(
      `"level":"warn","component":"sealer","message":"the TDX collateral in ${files.expired} expired at 2020-02-01T00:00:00.000Z`,
    );
    expect(expired.stderr).toContain('TDX QUOTES ARE VERIFIED AGAINST A NON-INTEL ROOT CA');
    const future = await start({
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
    });
    expect(future.started, future.logs).toBe(true);
    expect(future.stderr).toContain(
      `"level":"warn","component":"sealer","message":"the TDX collateral in ${files.collateral} is not valid before 2030-01-01T00:00:00.000Z`,
    );
  });

  const refusals: Array<[string, () => Record<string, string>, RegExp]> = [
    [
      'a non-Intel root CA with NODE_ENV=production',
      () => ({
        NODE_ENV: 'production',
        KMS_SEALER_TDX_POLICY_FILE: files.policy,
        KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
        KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      }),
      /CONFIG: KMS_SEALER_TDX_ROOT_CA_FILE replaces the Intel SGX Root CA and is refused when NODE_ENV=production/,
    ],
    [
      'a policy without collateral',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy }),
      /CONFIG: KMS_SEALER_TDX_POLICY_FILE needs DCAP collateral: set KMS_SEALER_TDX_COLLATERAL_FILE or KMS_SEALER_PCCS_URL/,
    ],
    [
      'collateral without a policy',
      () => ({ KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral, KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa }),
      /CONFIG: KMS_SEALER_TDX_COLLATERAL_FILE and KMS_SEALER_TDX_ROOT_CA_FILE have no effect without KMS_SEALER_TDX_POLICY_FILE/,
    ],
    [
      'both a collateral file and a PCCS URL',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral, KMS_SEALER_PCCS_URL: 'https://pccs.invalid' }),
      /CONFIG: set either KMS_SEALER_TDX_COLLATERAL_FILE or KMS_SEALER_PCCS_URL, not both/,
    ],
    [
      'a misspelt policy field (a constraint must never be dropped silently)',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.typo, KMS_SEALER_PCCS_URL: 'https://pccs.invalid' }),
      /CONFIG: KMS_SEALER_TDX_POLICY_FILE .*typo\.json: TDX policy: unknown field mrtd/,
    ],
    [
      'an empty MRTD list',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.empty, KMS_SEALER_PCCS_URL: 'https://pccs.invalid' }),
      /CONFIG: KMS_SEALER_TDX_POLICY_FILE .*: TDX policy: mrTd must be a non-empty list/,
    ],
    [
      'a policy that is not JSON',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.notJson, KMS_SEALER_PCCS_URL: 'https://pccs.invalid' }),
      /CONFIG: KMS_SEALER_TDX_POLICY_FILE .*not-json\.json is not JSON/,
    ],
    [
      'a missing policy file',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: join(dir, 'missing.json'), KMS_SEALER_PCCS_URL: 'https://pccs.invalid' }),
      /CONFIG: KMS_SEALER_TDX_POLICY_FILE names a file that cannot be read: .*missing\.json/,
    ],
    [
      'a collateral file that is not collateral',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_TDX_COLLATERAL_FILE: files.policy }),
      /CONFIG: KMS_SEALER_TDX_COLLATERAL_FILE: TDX collateral from .*policy\.json: pck_crl_issuer_chain is missing/,
    ],
    [
      'a root CA file holding a leaf certificate',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral, KMS_SEALER_TDX_ROOT_CA_FILE: files.leafCert }),
      /CONFIG: KMS_SEALER_TDX_ROOT_CA_FILE .*leaf\.pem: the trusted root CA must be a self-signed CA certificate in PEM/,
    ],
    [
      'a PCCS URL that is not http(s)',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_PCCS_URL: 'ftp://pccs' }),
      /CONFIG: KMS_SEALER_PCCS_URL must be an http\(s\) URL/,
    ],
    [
      'an http PCCS URL without KMS_SEALER_PCCS_ALLOW_HTTP',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_PCCS_URL: 'http://pccs.invalid:8081' }),
      /CONFIG: KMS_SEALER_PCCS_URL must be https \(an http PCCS can be made to serve older collateral\); KMS_SEALER_PCCS_ALLOW_HTTP=true permits http in tests/,
    ],
    [
      'KMS_SEALER_PCCS_ALLOW_HTTP under NODE_ENV=production',
      () => ({
        NODE_ENV: 'production',
        KMS_SEALER_ATTESTER: 'tdx-configfs',
        KMS_SEALER_TDX_POLICY_FILE: files.policy,
        KMS_SEALER_PCCS_URL: 'http://pccs.invalid:8081',
        KMS_SEALER_PCCS_ALLOW_HTTP: 'true',
      }),
      /CONFIG: KMS_SEALER_PCCS_ALLOW_HTTP permits an http PCCS and is refused when NODE_ENV=production/,
    ],
    [
      'KMS_SEALER_PCCS_CA without a PCCS URL',
      () => ({
        KMS_SEALER_TDX_POLICY_FILE: files.policy,
        KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
        KMS_SEALER_PCCS_CA: readFileSync(files.leafCert, 'utf8'),
      }),
      /CONFIG: KMS_SEALER_PCCS_CA has no effect without KMS_SEALER_PCCS_URL/,
    ],
    [
      'KMS_SEALER_PCCS_CA that is a file name, not PEM (the PCCS connection trusts nothing else)',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_PCCS_URL: 'https://pccs.invalid', KMS_SEALER_PCCS_CA: files.leafCert }),
      /CONFIG: KMS_SEALER_PCCS_CA must be PEM certificates \(BEGIN CERTIFICATE\), one or more, each marker on a line of its own, and nothing else/,
    ],
    [
      'KMS_SEALER_PCCS_CA with a damaged certificate',
      () => ({
        KMS_SEALER_TDX_POLICY_FILE: files.policy,
        KMS_SEALER_PCCS_URL: 'https://pccs.invalid',
        KMS_SEALER_PCCS_CA: readFileSync(files.leafCert, 'utf8').replace(/\n[A-Za-z0-9+/]{8}/, '\nAAAAAAAA'),
      }),
      /CONFIG: KMS_SEALER_PCCS_CA must be PEM certificates/,
    ],
    [
      'KMS_SEALER_PCCS_ALLOW_HTTP without a PCCS URL',
      () => ({ KMS_SEALER_TDX_POLICY_FILE: files.policy, KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral, KMS_SEALER_PCCS_ALLOW_HTTP: 'true' }),
      /CONFIG: KMS_SEALER_PCCS_ALLOW_HTTP has no effect without KMS_SEALER_PCCS_URL/,
    ],
    [
      'KMS_SEALER_PCCS_ALLOW_HTTP without a policy',
      () => ({ KMS_SEALER_PCCS_ALLOW_HTTP: 'true' }),
      /CONFIG: KMS_SEALER_PCCS_ALLOW_HTTP has no effect without KMS_SEALER_TDX_POLICY_FILE/,
    ],
  ];

  it.each(refusals)('refuses to start with %s', async (_name, env, message) => {
    const result = await start(env());
    expect(result.started, result.logs).toBe(false);
    expect(result.logs).toMatch(/"level":"error","component":"sealer","message":"cannot start: /);
    expect(result.logs).toMatch(message);
  });
});
