/**
 * scripts/init-data-entries.ts run as knative/install.sh runs it (through scripts/run-built.mjs,
 * from its build): each entry's SHA-384 is of the text a TOML parser returns, computed here
 * independently with smol-toml and node:crypto, not of the raw lines.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(join(tmpdir(), 'tee-kms-init-data-entries-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (args: string[], input?: string) =>
  spawnSync(process.execPath, [join(repo, 'scripts/run-built.mjs'), 'dist/scripts/init-data-entries.js', ...args], {
    cwd: repo,
    encoding: 'utf8',
    input,
    timeout: 300_000,
  });
const sha384 = (text: string) => createHash('sha384').update(text, 'utf8').digest('hex');
const write = (name: string, text: string | Buffer) => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};

const DOCUMENT = [
  'version = "0.1.0"',
  'algorithm = "sha384"',
  '',
  '[data]',
  `"policy.rego" = '''`,
  'package agent_policy',
  '',
  'default ExecProcessRequest := false',
  `'''`,
  '"sealer-tdx-policy.json" = "{\\"mrTd\\": [\\"ab\\"], \\"note\\": \\"\\u0027\\"}"',
  '',
].join('\n');

describe('init-data-entries', () => {
  it("prints each entry's name and the SHA-384 of its parsed text, in document order", () => {
    const result = run([write('document.toml', DOCUMENT)]);
    expect(result.status, result.stderr).toBe(0);
    const data = (parse(DOCUMENT) as { data: Record<string, string> }).data;
    expect(result.stdout).toBe(`policy.rego ${sha384(data['policy.rego']!)}\nsealer-tdx-policy.json ${sha384(data['sealer-tdx-policy.json']!)}\n`);
    // A ''' string drops the newline after its opening delimiter: the raw lines hash differently.
    expect(data['policy.rego']!.startsWith('package agent_policy\n')).toBe(true);
    expect(result.stdout).not.toContain(sha384('\npackage agent_policy\n\ndefault ExecProcessRequest := false\n'));
    // A basic string's escapes are resolved before hashing.
    expect(data['sealer-tdx-policy.json']).toBe('{"mrTd": ["ab"], "note": "\'"}');
  });

  it('reads standard input as "-", as install.sh pipes each rendered document', () => {
    const result = run(['-'], DOCUMENT);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toBe(run([write('again.toml', DOCUMENT)]).stdout);
  });

  it('a shipped function document: its policy.rego digest is that of the text smol-toml reads', () => {
    const file = join(repo, 'knative/components/tdx/init-data/welcome.toml');
    const result = run([file]);
    expect(result.status, result.stderr).toBe(0);
    const text = (parse(readFileSync(file, 'utf8')) as { data: Record<string, string> }).data['policy.rego']!;
    expect(result.stdout).toBe(`policy.rego ${sha384(text)}\n`);
  });

  it('refuses what it cannot read: a missing file, not TOML, not init-data, not UTF-8; and bad usage', () => {
    for (const [args, message] of [
      [[join(dir, 'missing.toml')], /missing\.toml: cannot be read/],
      [[write('not-toml.toml', `[data]\n"a" = '''`)], /not-toml\.toml: init-data: the body is not valid TOML/],
      [[write('no-version.toml', '[data]\n"a" = "b"\n')], /no-version\.toml: init-data: unsupported version/],
      [[write('latin1.toml', Buffer.from('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"a" = "\xe9"\n', 'latin1'))], /latin1\.toml: is not UTF-8 text/],
      [[write('space.toml', 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"a b" = "c"\n')], /space\.toml: entry "a b": a name with white space/],
    ] as const) {
      const result = run([...args]);
      expect(result.status, args[0]).toBe(1);
      expect(result.stderr, args[0]).toMatch(message);
      expect(result.stdout).toBe('');
    }
    for (const args of [[], ['a', 'b']]) expect(run(args).status).toBe(2);
  });
});
