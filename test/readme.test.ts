import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { routes } from '../functions/index.js';
import { kmsOptions } from '../shared/config.js';
import { hostOptions } from '../shared/http/host.js';
import { sealerOptions } from '../sealer/options.js';
import { startOptions } from '../scripts/start-options.js';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');

/**
 * Whether `name` stands in the README as a whole name: not inside a longer one (a letter, digit or
 * `_` on either side), so that KMS_S3_BUCKET does not pass for KMS_S3_BUCKET_PREFIX.
 */
function mentionsWholeName(text: string, name: string): boolean {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![A-Za-z0-9_])${escaped}(?![A-Za-z0-9_])`).test(text);
}

describe('README.md stays true', () => {
  it('documents every configuration option', () => {
    const missing = [kmsOptions, hostOptions, sealerOptions, startOptions]
      .flatMap((specs) => Object.values(specs).map((spec) => spec.env))
      .filter((env) => !mentionsWholeName(readme, env));
    expect(missing).toEqual([]);
  });

  it('matches option names whole, not inside longer names', () => {
    expect(mentionsWholeName('set `KMS_S3_BUCKET_PREFIX` here', 'KMS_S3_BUCKET')).toBe(false);
    expect(mentionsWholeName('set `XKMS_S3_BUCKET` here', 'KMS_S3_BUCKET')).toBe(false);
    expect(mentionsWholeName('set `KMS_S3_BUCKET` here', 'KMS_S3_BUCKET')).toBe(true);
    expect(mentionsWholeName('KMS_S3_BUCKET=kms (the bucket)', 'KMS_S3_BUCKET')).toBe(true);
  });

  it('documents every function by its target name', () => {
    expect(routes.map((r) => r.name).filter((name) => !readme.includes(`\`${name}\``))).toEqual([]);
  });

  it('gives the two commands, and .ci/run calls the test command', async () => {
    expect(readme).toContain('npm install\nnpm start');
    expect(readme).toContain('npm test');
    // A command line (not a comment) that runs it: .ci/run runs it under a timeout (a stalled run once more).
    expect(await readFile(new URL('../.ci/run', import.meta.url), 'utf8')).toMatch(/^(?!\s*#)[^\n]*\bnpm test\b/m);
  });
});
