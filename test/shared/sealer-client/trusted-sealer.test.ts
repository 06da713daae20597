/**
 * The functions' check of the sealing service takes its DCAP collateral options through the
 * KMS_TRUSTED_SEALER_ prefix: the PCCS transport rule (https only; http only when
 * KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP is set, and never in production) holds there too. Options are
 * parsed from an environment as a function process parses its own.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKmsConfig } from '../../../shared/config.js';
import { trustedSealerVerifier } from '../../../shared/sealer-client/trusted-sealer.js';
import { DEFAULT_TD } from '../../support/tdx-quote-builder.js';
import { expectKmsError } from '../../support/tdx-helpers.js';

let dir: string;
let policy: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'trusted-sealer-'));
  policy = join(dir, 'sealer-policy.json');
  await writeFile(policy, JSON.stringify({ mrTd: [DEFAULT_TD.mrTd] }));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const verifierFor = (env: Record<string, string>) => trustedSealerVerifier(loadKmsConfig(env), env);

describe('KMS_TRUSTED_SEALER_PCCS_URL transport', () => {
  it('accepts an https PCCS', async () => {
    const verifier = await verifierFor({ KMS_TRUSTED_SEALER_TDX_POLICY_FILE: policy, KMS_TRUSTED_SEALER_PCCS_URL: 'https://pccs.invalid:8081' });
    expect(verifier.tee).toBe('tdx');
  });

  it('refuses an http PCCS unless KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP is set outside production', async () => {
    const http = { KMS_TRUSTED_SEALER_TDX_POLICY_FILE: policy, KMS_TRUSTED_SEALER_PCCS_URL: 'http://pccs.invalid:8081' };
    await expectKmsError(
      () => verifierFor(http),
      'CONFIG',
      'KMS_TRUSTED_SEALER_PCCS_URL must be https (an http PCCS can be made to serve older collateral); KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP=true permits http in tests',
    );
    expect((await verifierFor({ ...http, KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP: 'true' })).tee).toBe('tdx');
    await expectKmsError(
      () => verifierFor({ ...http, KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP: 'true', NODE_ENV: 'production' }),
      'CONFIG',
      'KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP permits an http PCCS and is refused when NODE_ENV=production',
    );
  });

  it('refuses the allowance where it has no effect', async () => {
    await expectKmsError(
      () => verifierFor({ KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP: 'true' }),
      'CONFIG',
      'KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP has no effect without KMS_TRUSTED_SEALER_TDX_POLICY_FILE (the TDX reference values)',
    );
    // Unset, it changes nothing: without a policy, development accepts sample evidence as before.
    expect((await verifierFor({ KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP: 'false' })).tee).toBe('sample');
  });
});

describe('KMS_TRUSTED_SEALER_TDX_POLICY_FILE', () => {
  it('refuses initData: the sealing service sends no init-data, so the demand would never apply', async () => {
    const withInitData = join(dir, 'sealer-policy-init-data.json');
    await writeFile(withInitData, JSON.stringify({ mrTd: [DEFAULT_TD.mrTd], initData: { required: true } }));
    await expectKmsError(
      () => verifierFor({ KMS_TRUSTED_SEALER_TDX_POLICY_FILE: withInitData, KMS_TRUSTED_SEALER_PCCS_URL: 'https://pccs.invalid:8081' }),
      'CONFIG',
      /KMS_TRUSTED_SEALER_TDX_POLICY_FILE .*initData applies only to the sealing service's policy for workloads/,
    );
  });
});
