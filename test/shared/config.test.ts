import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kmsOptions, loadKmsConfig } from '../../shared/config.js';
import { loadSealerOptions, sealerOptions } from '../../sealer/options.js';

describe('configuration', () => {
  it('has working defaults', () => {
    const config = loadKmsConfig({});
    expect(config).toMatchObject({ store: 'fs', dataDir: '.kms', s3Bucket: 'tee-kms', s3ForcePathStyle: true, rootKey: undefined });
  });

  it('reads the root key from the environment or a mounted file (trailing newline ignored)', async () => {
    const key = Buffer.alloc(32, 3);
    expect(loadKmsConfig({ KMS_ROOT_KEY: key.toString('base64') }).rootKey).toEqual(key);
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-config-'));
    await writeFile(join(dir, 'root-key'), `${key.toString('base64')}\n`);
    expect(loadKmsConfig({ KMS_ROOT_KEY_FILE: join(dir, 'root-key') }).rootKey).toEqual(key);
  });

  it('refuses a secret set both directly and as <VAR>_FILE, for every secret option of the functions and the sealing service', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-config-'));
    const file = join(dir, 'secret');
    const key = Buffer.alloc(32, 7).toString('base64');
    await writeFile(file, key);
    const secrets = [...Object.values(kmsOptions), ...Object.values(sealerOptions)].filter((spec) => spec.secret === true).map((spec) => spec.env);
    expect(secrets).toEqual(
      expect.arrayContaining(['KMS_ROOT_KEY', 'KMS_ADMIN_TOKEN', 'KMS_S3_ACCESS_KEY_ID', 'KMS_S3_SECRET_ACCESS_KEY', 'KMS_SEALER_ROOT_KEY']),
    );
    for (const name of secrets) {
      const load = (env: NodeJS.ProcessEnv) => (name.startsWith('KMS_SEALER_') ? loadSealerOptions(env) : loadKmsConfig(env));
      expect(() => load({ [name]: key, [`${name}_FILE`]: file }), name).toThrow(
        expect.objectContaining({
          code: 'CONFIG',
          message: `${name} and ${name}_FILE are both set: set only one of them (the value, or the file holding it) and unset the other`,
        }),
      );
      // Either alone, or the other empty (unset), is taken.
      expect(() => load({ [name]: key, [`${name}_FILE`]: '' }), name).not.toThrow();
      expect(() => load({ [name]: '', [`${name}_FILE`]: file }), name).not.toThrow();
    }
  });

  it('names the variable and never echoes a secret value', () => {
    const bad = Buffer.alloc(16, 5).toString('base64');
    expect(() => loadKmsConfig({ KMS_ROOT_KEY: bad })).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: 'KMS_ROOT_KEY must be a base64-encoded 256-bit (32-byte) key' }),
    );
    expect(() => loadKmsConfig({ KMS_ROOT_KEY_FILE: '/nonexistent/root-key' })).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('KMS_ROOT_KEY_FILE') }),
    );
  });

  it('refuses a KMS_THRESHOLD above KMS_SHARES, naming both and what to do', () => {
    expect(loadKmsConfig({ KMS_SHARES: '5', KMS_THRESHOLD: '5' })).toMatchObject({ shares: 5, threshold: 5 });
    expect(() => loadKmsConfig({ KMS_SHARES: '5', KMS_THRESHOLD: '6' })).toThrow(
      expect.objectContaining({
        code: 'CONFIG',
        message:
          'KMS_THRESHOLD (6) exceeds KMS_SHARES (5): a root key split into 5 shares cannot need 6 to recover; set KMS_THRESHOLD to at most KMS_SHARES, or raise KMS_SHARES',
      }),
    );
    // The default threshold (3) against a smaller KMS_SHARES.
    expect(() => loadKmsConfig({ KMS_SHARES: '2' })).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: expect.stringMatching(/^KMS_THRESHOLD \(3\) exceeds KMS_SHARES \(2\)/) }),
    );
  });

  it('validates enumerations, integers, booleans and URLs', () => {
    expect(() => loadKmsConfig({ KMS_STORE: 'ftp' })).toThrow(expect.objectContaining({ message: 'KMS_STORE must be one of fs, s3, got "ftp"' }));
    expect(() => loadKmsConfig({ KMS_KEY_CACHE_TTL_SECONDS: '-1' })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    expect(() => loadKmsConfig({ KMS_S3_FORCE_PATH_STYLE: 'maybe' })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    expect(() => loadKmsConfig({ KMS_S3_ENDPOINT: 'not a url' })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    expect(loadKmsConfig({ KMS_S3_ENDPOINT: 'http://127.0.0.1:9000/' }).s3Endpoint).toBe('http://127.0.0.1:9000');
    expect(loadKmsConfig({}).sealedReplayEntries).toBe(200_000);
    for (const entries of ['99', '5000001', '1e5']) {
      expect(() => loadKmsConfig({ KMS_SEALED_REPLAY_ENTRIES: entries })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    }
  });

  it('takes a KMS_S3_PREFIX of safe segments ending with /, and names the variable otherwise', () => {
    expect(loadKmsConfig({ KMS_S3_PREFIX: 'tenant-a/kms/' }).s3Prefix).toBe('tenant-a/kms/');
    for (const prefix of ['tenant-a', '../x/', '/abs/', 'a//b/', '.hidden/']) {
      expect(() => loadKmsConfig({ KMS_S3_PREFIX: prefix }), prefix).toThrow(
        expect.objectContaining({ code: 'CONFIG', message: expect.stringMatching(/^KMS_S3_PREFIX must be path segments /) }),
      );
    }
  });

  it('reads KMS_SEALER_URL as one URL or a comma-separated list, and the grace period', () => {
    expect(loadKmsConfig({})).toMatchObject({ sealerUrls: [], rootKeyGraceSeconds: 600 });
    expect(loadKmsConfig({ KMS_SEALER_URL: 'https://a:9877/' }).sealerUrls).toEqual(['https://a:9877']);
    expect(loadKmsConfig({ KMS_SEALER_URL: 'https://a:9877, https://b:9877' }).sealerUrls).toEqual(['https://a:9877', 'https://b:9877']);
    for (const bad of [
      'https://a:9877,',
      'https://a:9877,https://a:9877',
      'https://a,not a url',
      Array.from({ length: 17 }, (_, i) => `https://s${i}`).join(','),
    ]) {
      expect(() => loadKmsConfig({ KMS_SEALER_URL: bad }), bad).toThrow(
        expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('KMS_SEALER_URL') }),
      );
    }
    expect(loadKmsConfig({ KMS_ROOT_KEY_GRACE_SECONDS: '0' }).rootKeyGraceSeconds).toBe(0);
    expect(() => loadKmsConfig({ KMS_ROOT_KEY_GRACE_SECONDS: '-5' })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
  });
});
