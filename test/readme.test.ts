import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { routes } from '../functions/index.js';
import { kmsOptions } from '../shared/config.js';
import { hostOptions } from '../shared/http/host.js';
import { sealerOptions } from '../sealer/options.js';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');

describe('README.md stays true', () => {
  it('documents every configuration option', () => {
    const missing = [kmsOptions, hostOptions, sealerOptions]
      .flatMap((specs) => Object.values(specs).map((spec) => spec.env))
      .filter((env) => !readme.includes(`\`${env}\``) && !readme.includes(env));
    expect(missing).toEqual([]);
  });

  it('documents every function by its target name', () => {
    expect(routes.map((r) => r.name).filter((name) => !readme.includes(`\`${name}\``))).toEqual([]);
  });

  it('gives the two commands, and .ci/run calls the test command', async () => {
    expect(readme).toContain('npm install\nnpm start');
    expect(readme).toContain('npm test');
    expect(await readFile(new URL('../.ci/run', import.meta.url), 'utf8')).toMatch(/^npm test$/m);
  });
});
