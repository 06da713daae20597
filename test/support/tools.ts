/**
 * Programs some tests need from the machine (kubectl, shellcheck, openssl, python3, ps). Outside CI
 * a missing one skips the tests that need it. Where CI is set (`.ci/run` sets CI=true and installs
 * them all), a missing one fails those tests instead, saying what to install: CI never skips them.
 */
import { spawnSync } from 'node:child_process';

export interface Tool {
  readonly name: string;
  readonly present: boolean;
  /** What to install where it is missing. */
  readonly install: string;
}

/** CI is set (to anything but the empty string). */
export const inCi = (process.env.CI ?? '') !== '';

/** A tool is present when `name ...args` runs and exits 0. */
export function findTool(name: string, args: readonly string[], install: string): Tool {
  const present = spawnSync(name, args, { stdio: 'ignore', timeout: 20_000 }).status === 0;
  return { name, present, install };
}

/** For `it.skipIf` / `describe.skipIf`: true where the tool is missing, outside CI only. */
export const skipWithout = (tool: Tool): boolean => !tool.present && !inCi;

/** At the start of a test that needs `tool`: where it is missing (in CI), fails with what to install. */
export function requireTool(tool: Tool): void {
  if (!tool.present) throw new Error(`${tool.name} is not installed (CI must not skip the tests that need it): ${tool.install}. See README.md, "Test it".`);
}
