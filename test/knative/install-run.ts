import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { KNATIVE, KUBECTL } from './support.js';

export const INSTALL = join(KNATIVE, 'install.sh');
/** The recording kubectl stand-in (test/knative/fake/kubectl). */
export const FAKE_BIN = join(dirname(new URL(import.meta.url).pathname), 'fake');
const REAL_KUBECTL = KUBECTL.present ? spawnSync('bash', ['-c', 'command -v kubectl'], { encoding: 'utf8' }).stdout.trim() : '';

export interface InstallRun {
  readonly log: string;
  readonly status: number | null;
  readonly stderr: string;
  /** Every kubectl call install.sh made, one line each, as the stand-in recorded it. */
  readonly calls: string[];
}

/** Runs knative/install.sh with `args` against the recording kubectl, HOME and TMPDIR in `dir`. */
export function runInstall(dir: string, secrets: string, args: readonly string[], fake: Record<string, string> = {}): InstallRun {
  const log = join(dir, 'kubectl.log');
  writeFileSync(log, '');
  const result = spawnSync('bash', [INSTALL, ...args], {
    env: {
      PATH: `${FAKE_BIN}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      HOME: dir,
      TMPDIR: dir,
      KMS_SECRETS_DIR: secrets,
      FAKE_KUBECTL_LOG: log,
      REAL_KUBECTL,
      ...fake,
    },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { log, status: result.status, stderr: result.stderr, calls: readFileSync(log, 'utf8').split('\n').filter(Boolean) };
}
