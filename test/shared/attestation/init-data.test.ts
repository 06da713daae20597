// Init-data (Trustee kbs/docs/initdata.md, guest-components Initdata::parse_and_get_digest): the
// digest is the declared algorithm over the exact TOML bytes, fitted to MRCONFIGID's 48 bytes; the
// expected values are computed here with node:crypto, independently of the module under test.
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attesterFromConfig } from '../../../shared/attestation/from-config.js';
import { initDataClaims, initDataDigest, initDataFromKbs, loadInitDataFile, parseInitData } from '../../../shared/attestation/init-data.js';
import { expectKmsError } from '../../support/tdx-helpers.js';

const POLICY_REGO = 'package agent_policy\n\ndefault ExecProcessRequest := false\ndefault ReadStreamRequest := false\n';
const AA_TOML = '[token_configs.kbs]\nurl = "https://tee-kms-sealer:9877"\n';

/** A CoCo init-data document as kata's tooling writes them: literal multi-line strings, comments. */
function document(algorithm: string, extra = ''): string {
  return [
    `algorithm = "${algorithm}"`,
    'version = "0.1.0"',
    '# the digest covers these bytes, comments included',
    '',
    '[data]',
    `"aa.toml" = '''`,
    `${AA_TOML}'''`,
    '',
    `"policy.rego" = '''`,
    `${POLICY_REGO}'''`,
    extra,
  ].join('\n');
}

const hex = (algorithm: string, text: string): string => createHash(algorithm).update(Buffer.from(text, 'utf8')).digest('hex');

describe('the init-data digest (known answers computed with node:crypto)', () => {
  it('sha256: the 32-byte hash of the exact bytes, then 16 zero bytes', () => {
    const toml = document('sha256');
    const parsed = parseInitData(toml);
    expect(parsed.digest).toBe(hex('sha256', toml) + '00'.repeat(16));
    expect(parsed.digest).toMatch(/^[0-9a-f]{96}$/);
    expect(parsed.algorithm).toBe('sha256');
  });

  it('sha384: the 48-byte hash itself', () => {
    const toml = document('sha384');
    expect(parseInitData(toml).digest).toBe(hex('sha384', toml));
  });

  it('sha512: the first 48 bytes of the hash (Trustee truncates to MRCONFIGID)', () => {
    const toml = document('sha512');
    expect(parseInitData(toml).digest).toBe(hex('sha512', toml).slice(0, 96));
  });

  it('is over the bytes, not the meaning: a changed comment or line ending changes it', () => {
    const toml = document('sha384');
    for (const variant of [toml.replace('comments included', 'comments too'), `${toml}\n`, toml.replace(/\n/g, '\r\n')]) {
      const parsed = parseInitData(variant);
      expect(parsed.data['policy.rego']?.replace(/\r\n/g, '\n')).toBe(POLICY_REGO);
      expect(parsed.digest).toBe(hex('sha384', variant));
      expect(parsed.digest).not.toBe(parseInitData(toml).digest);
    }
  });

  it('hashes non-ASCII text as UTF-8', () => {
    const toml = document('sha384').replace('comments included', 'größe ✓');
    expect(initDataDigest(toml, 'sha384')).toBe(hex('sha384', toml));
  });

  it('reads the [data] entries, and records each by its SHA-384 for the token', () => {
    const parsed = parseInitData(document('sha384'));
    expect(parsed.data).toEqual({ 'aa.toml': AA_TOML, 'policy.rego': POLICY_REGO });
    expect(initDataClaims(parsed)).toEqual({
      version: '0.1.0',
      algorithm: 'sha384',
      data_sha384: { 'aa.toml': hex('sha384', AA_TOML), 'policy.rego': hex('sha384', POLICY_REGO) },
    });
  });
});

describe('malformed or unsupported init-data is refused with a clear message', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['not TOML', 'version = "0.1.0"\nalgorithm = \n[data]\n', /^init-data: the body is not valid TOML \(line 2, column \d+\)$/],
    ['a duplicate key', 'version = "0.1.0"\nversion = "0.1.0"\nalgorithm = "sha384"\n[data]\n', /not valid TOML/],
    ['another version', document('sha384').replace('0.1.0', '0.2.0'), /^init-data: unsupported version \(supported: "0\.1\.0"\)$/],
    ['no version', document('sha384').replace('version = "0.1.0"', ''), /unsupported version/],
    ['a version that is a number', document('sha384').replace('"0.1.0"', '1'), /unsupported version/],
    ['md5', document('md5'), /^init-data: unsupported algorithm \(supported: sha256, sha384, sha512\)$/],
    ['an IANA-style name', document('sha-384'), /unsupported algorithm/],
    ['upper case', document('SHA384'), /unsupported algorithm/],
    ['no [data]', 'version = "0.1.0"\nalgorithm = "sha384"\n', /^init-data: a \[data\] table is required$/],
    ['data that is a string', 'version = "0.1.0"\nalgorithm = "sha384"\ndata = "x"\n', /a \[data\] table is required/],
    ['a number in data', document('sha384', 'replicas = 3'), /^init-data: data entry "replicas" must be a string$/],
    ['a date in data', document('sha384', 'when = 2030-01-01'), /data entry "when" must be a string/],
    ['a table in data', document('sha384', '[data.nested]\nx = "y"'), /data entry "nested" must be a string/],
    ['an array in data', document('sha384', 'list = ["a"]'), /data entry "list" must be a string/],
    [
      'too many entries',
      `version = "0.1.0"\nalgorithm = "sha384"\n[data]\n${Array.from({ length: 17 }, (_, i) => `e${i} = "x"`).join('\n')}\n`,
      /more than 16/,
    ],
    ['a very long entry name', document('sha384', `"${'n'.repeat(129)}" = "x"`), /entry name must have 1 to 128 characters/],
    ['a huge body', document('sha384', `big = "${'x'.repeat(256 * 1024)}"`), /longer than 262144 characters/],
  ];
  for (const [name, toml, message] of cases) {
    it(name, async () => {
      const error = await expectKmsError(() => parseInitData(toml), 'BAD_REQUEST', message);
      // The parser's own text stays in `cause`.
      if (/not valid TOML/.test(error.message)) expect(error.cause).toBeInstanceOf(Error);
    });
  }
});

describe('the KBS Attestation member', () => {
  it('absent or null: no init-data', () => {
    expect(initDataFromKbs(undefined)).toBeUndefined();
    expect(initDataFromKbs(null)).toBeUndefined();
  });

  it('{"format": "toml", "body"}: parsed', () => {
    const toml = document('sha384');
    expect(initDataFromKbs({ format: 'toml', body: toml })?.digest).toBe(hex('sha384', toml));
  });

  it('refuses other formats and shapes', async () => {
    const toml = document('sha384');
    await expectKmsError(() => initDataFromKbs({ format: 'json', body: '{}' }), 'BAD_REQUEST', 'init-data: unsupported format (supported: "toml")');
    await expectKmsError(() => initDataFromKbs({ body: toml }), 'BAD_REQUEST', /unsupported format/);
    await expectKmsError(
      () => initDataFromKbs({ format: 'toml', body: { version: '0.1.0' } }),
      'BAD_REQUEST',
      'init-data: body must be a string (the TOML text)',
    );
    await expectKmsError(() => initDataFromKbs(toml), 'BAD_REQUEST', /must be an object/);
    await expectKmsError(() => initDataFromKbs([toml]), 'BAD_REQUEST', /must be an object/);
  });
});

describe('KMS_INIT_DATA_FILE', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  async function file(content: string | Buffer): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-initdata-'));
    dirs.push(dir);
    const path = join(dir, 'initdata.toml');
    await writeFile(path, content);
    return path;
  }

  it('is read byte for byte', async () => {
    const toml = document('sha256').replace(/\n/g, '\r\n');
    const loaded = await loadInitDataFile(await file(toml));
    expect(loaded.toml).toBe(toml);
    expect(loaded.digest).toBe(hex('sha256', toml) + '00'.repeat(16));
  });

  it('refuses a file that cannot be read, is not UTF-8, or is not valid init-data (CONFIG, naming the variable)', async () => {
    await expectKmsError(() => loadInitDataFile('/nonexistent/initdata.toml'), 'CONFIG', /^KMS_INIT_DATA_FILE names a file that cannot be read/);
    const latin1 = Buffer.concat([Buffer.from(document('sha384')), Buffer.from([0xe9])]);
    await expectKmsError(async () => loadInitDataFile(await file(latin1)), 'CONFIG', /is not UTF-8 text$/);
    await expectKmsError(async () => loadInitDataFile(await file(document('md5'))), 'CONFIG', /: init-data: unsupported algorithm/);
  });

  it('makes sample evidence claim its digest, and refuses a KMS_SAMPLE_INIT_DATA that disagrees', async () => {
    const initData = parseInitData(document('sha384'));
    const base = { attester: 'sample' as const, tsmRoot: '', aaUrl: '' };
    const attester = await attesterFromConfig({ ...base, sampleInitData: '', initData }, {});
    const evidence = (await attester.getEvidence(new Uint8Array(64))) as { init_data?: string };
    expect(evidence.init_data).toBe(hex('sha384', document('sha384')));
    // Agreeing is fine; disagreeing is a configuration error, not a silent choice.
    await expect(attesterFromConfig({ ...base, sampleInitData: initData.digest, initData }, {})).resolves.toBeDefined();
    await expectKmsError(
      () => attesterFromConfig({ ...base, sampleInitData: 'ab'.repeat(48), initData }, {}),
      'CONFIG',
      /is not the digest of KMS_INIT_DATA_FILE/,
    );
  });
});
