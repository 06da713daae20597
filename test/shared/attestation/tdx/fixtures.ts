/**
 * Access to the real quotes and Intel collateral in ../shared/tdx-fixtures (reference data, read
 * in place, never copied into the repository). Tests using them skip with a message when absent.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collateralWindows, parseCollateral, type TdxCollateral } from '../../../../shared/attestation/tdx/collateral.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const FIXTURES_DIR = resolve(repoRoot, '../shared/tdx-fixtures');
export const fixturesPresent = existsSync(join(FIXTURES_DIR, 'tdx_quote'));
export const FIXTURES_SKIP_NOTE = fixturesPresent ? '' : ` (SKIPPED: real TDX fixtures not found at ${FIXTURES_DIR})`;
if (!fixturesPresent) {
  console.warn(`[tdx tests] real-quote tests skipped: ${FIXTURES_DIR} is absent (see issue 4: reference data is read in place)`);
}

export const fixturePath = (name: string): string => join(FIXTURES_DIR, name);
export const fixtureBytes = (name: string): Buffer => readFileSync(fixturePath(name));
export const fixtureCollateral = (name: string): TdxCollateral => parseCollateral(JSON.parse(readFileSync(fixturePath(name), 'utf8')), name);

/** A time inside the collateral's validity window, taken from the collateral itself. */
export function timeInsideCollateral(collateral: TdxCollateral): Date {
  const { overall } = collateralWindows(collateral);
  return new Date((overall.issueDate.getTime() + overall.nextUpdate.getTime()) / 2);
}
