/**
 * Access to the real quotes and Intel collateral in ../shared/tdx-fixtures (reference data, read
 * in place, never copied into the repository). Tests using them skip with a message when absent.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collateralWindows, parseCollateral, type TdxCollateral } from '../../sealer/attestation/tdx/collateral.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES_DIR = resolve(repoRoot, '../shared/tdx-fixtures');
export const fixturesPresent = existsSync(join(FIXTURES_DIR, 'tdx_quote'));
export const FIXTURES_SKIP_NOTE = fixturesPresent ? '' : ` (SKIPPED: real TDX fixtures not found at ${FIXTURES_DIR})`;
if (!fixturesPresent) {
  console.warn(`[tdx tests] real-quote tests skipped: ${FIXTURES_DIR} is absent (reference data is read in place, never copied into the repository)`);
}

export const fixturePath = (name: string): string => join(FIXTURES_DIR, name);
export const fixtureBytes = (name: string): Buffer => readFileSync(fixturePath(name));
export const fixtureCollateral = (name: string): TdxCollateral => parseCollateral(JSON.parse(readFileSync(fixturePath(name), 'utf8')), name);

/** A time inside the collateral's validity window, taken from the collateral itself. */
export function timeInsideCollateral(collateral: TdxCollateral): Date {
  const { overall } = collateralWindows(collateral);
  return new Date((overall.issueDate.getTime() + overall.nextUpdate.getTime()) / 2);
}

const ZERO48 = '00'.repeat(48);

/** Known-answer measurements of the real `tdx_quote` fixture (lowercase hex), as a verifier reports them. */
export const TDX_QUOTE_REPORT = {
  teeTcbSvn: '06010300000000000000000000000000',
  mrSeam: '5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1',
  mrSignerSeam: ZERO48,
  seamAttributes: '0000000000000000',
  tdAttributes: '0000001000000000',
  xfam: 'e702060000000000',
  mrTd: '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
  mrConfigId: ZERO48,
  mrOwner: ZERO48,
  mrOwnerConfig: ZERO48,
  rtmr: [
    '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
    '0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378',
    'd833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132',
    ZERO48,
  ],
  reportData: '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20',
} as const;
