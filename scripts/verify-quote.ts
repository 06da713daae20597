/**
 * Operator command: inspect a TDX quote, and with collateral verify it, printing one JSON object.
 * Operators use it to compute reference values (mrTd, rtmr, mrConfigId) for their images and to
 * see why a pod's quote is refused.
 *
 *   node dist/scripts/verify-quote.js <quote file> [--collateral <file>] [--at <ISO time>]
 *        [--root-ca <PEM file>] [--allow-tcb-status <status>]...
 *
 * The quote file may hold the raw quote, its base64, or Trustee-shaped evidence JSON
 * ({"quote": base64, ...}). Exit status: 0 parsed (and accepted, with --collateral);
 * 1 rejected (including "not a TDX quote"); 2 bad input or usage (message on stderr).
 * With --collateral the output adds the TCB verdict (sealer/attestation/tdx/tcb.ts): tcbStatus,
 * advisoryIds, tdxModule {identityId, svn, tcbStatus} and tcbEvaluationDataNumber.
 * --root-ca is refused when NODE_ENV=production, as the sealer refuses KMS_SEALER_TDX_ROOT_CA_FILE.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { isKmsError, KmsError } from '../shared/errors.js';
import { loadCollateralFile } from '../sealer/attestation/tdx/collateral.js';
import { checkPlatform, DEFAULT_ALLOWED_TCB_STATUSES, TCB_STATUSES, type TcbStatus } from '../sealer/attestation/tdx/policy.js';
import { parseQuoteHeader, parseTdxQuote, summarizeTdxQuote, teeTypeHex, teeTypeName, TEE_TYPE_TDX } from '../shared/attestation/tdx/quote.js';
import { trustedRootFromPem, verifyTdxQuoteDcap, type DcapResult } from '../sealer/attestation/tdx/verify.js';

const USAGE = 'usage: verify-quote <quote file> [--collateral <file>] [--at <ISO time>] [--root-ca <PEM file>] [--allow-tcb-status <status>]...';

class UsageError extends Error {}

/** Raw bytes, base64 text, or evidence JSON → quote bytes. */
function quoteBytes(content: Buffer): Uint8Array {
  const text = content.toString('latin1').trim();
  if (text.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new UsageError('the quote file looks like JSON but does not parse');
    }
    const quote = (json as { quote?: unknown } | null)?.quote;
    if (typeof quote !== 'string') throw new UsageError('the JSON quote file has no "quote" string (expected TDX evidence)');
    return new Uint8Array(Buffer.from(quote, 'base64'));
  }
  const compact = text.replace(/\s+/g, '');
  if (compact.length >= 64 && /^[A-Za-z0-9+/]+={0,2}$/.test(compact)) return new Uint8Array(Buffer.from(compact, 'base64'));
  return new Uint8Array(content);
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch {
    throw new UsageError(`cannot read ${what} ${path}`);
  }
}

function parseTime(value: string): Date {
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(at.getTime())) throw new UsageError(`--at ${value} is not an ISO 8601 time`);
  return at;
}

function parseStatuses(values: string[] | undefined): TcbStatus[] {
  if (!values || values.length === 0) return [...DEFAULT_ALLOWED_TCB_STATUSES];
  for (const value of values) {
    if (!TCB_STATUSES.includes(value as TcbStatus)) throw new UsageError(`--allow-tcb-status ${value} is not a TCB status (${TCB_STATUSES.join(', ')})`);
  }
  return values as TcbStatus[];
}

/** Builds the output object and the exit status. */
async function run(argv: string[]): Promise<{ output: Record<string, unknown>; status: number }> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        collateral: { type: 'string' },
        at: { type: 'string' },
        'root-ca': { type: 'string' },
        'allow-tcb-status': { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : 'bad arguments');
  }
  const { values, positionals } = parsed;
  if (values.help) throw new UsageError('');
  if (positionals.length !== 1) throw new UsageError('exactly one quote file is required');
  if (values.collateral === undefined && (values.at !== undefined || values['root-ca'] !== undefined || values['allow-tcb-status'] !== undefined)) {
    throw new UsageError('--at, --root-ca and --allow-tcb-status need --collateral');
  }

  if (values['root-ca'] !== undefined && process.env['NODE_ENV'] === 'production') {
    // A replaced trust anchor makes any self-made quote "genuine": never in production.
    throw new UsageError('--root-ca replaces the Intel SGX Root CA and is refused when NODE_ENV=production');
  }

  const raw = quoteBytes(await readInput(positionals[0]!, 'quote file'));
  const header = parseQuoteHeader(raw);
  if (header.teeType !== TEE_TYPE_TDX) {
    const output = {
      tee: teeTypeName(header.teeType),
      quoteVersion: header.version,
      teeType: teeTypeHex(header.teeType),
      verdict: 'rejected',
      reason: `not a TDX quote: tee_type ${teeTypeHex(header.teeType)} (${teeTypeName(header.teeType)}), expected 0x00000081`,
    };
    return { output, status: 1 };
  }
  const quote = parseTdxQuote(raw);
  const output: Record<string, unknown> = { ...summarizeTdxQuote(quote) };
  if (values.collateral === undefined) return { output, status: 0 };

  const collateral = await loadCollateralFile(values.collateral);
  const at = values.at === undefined ? new Date() : parseTime(values.at);
  const allowed = parseStatuses(values['allow-tcb-status']);
  const trustedRootCa = values['root-ca'] === undefined ? undefined : trustedRootFromPem((await readInput(values['root-ca'], 'root CA file')).toString('utf8'));

  let dcap: DcapResult | undefined;
  try {
    dcap = verifyTdxQuoteDcap(raw, quote, collateral, { at, ...(trustedRootCa ? { trustedRootCa } : {}) });
    checkPlatform({ debug: isDebug(output), tcbStatus: dcap.tcbStatus, advisoryIds: dcap.advisoryIds }, allowed);
    Object.assign(output, { ...tcbFields(dcap), evaluatedAt: at.toISOString(), verdict: 'accepted', reason: null });
    return { output, status: 0 };
  } catch (error) {
    if (!isKmsError(error, 'FORBIDDEN')) throw error;
    Object.assign(output, {
      ...tcbFields(dcap),
      evaluatedAt: at.toISOString(),
      verdict: 'rejected',
      reason: error.message,
    });
    return { output, status: 1 };
  }
}

/** The TCB verdict's fields; null (advisories empty) when verification stopped before it. */
function tcbFields(dcap: DcapResult | undefined): Record<string, unknown> {
  return {
    tcbStatus: dcap?.tcbStatus ?? null,
    advisoryIds: dcap ? [...dcap.advisoryIds] : [],
    tdxModule: dcap ? { ...dcap.tdxModule } : null,
    tcbEvaluationDataNumber: dcap ? { ...dcap.tcbEvaluationDataNumber } : null,
  };
}

const isDebug = (output: Record<string, unknown>): boolean => output['debug'] === true;

async function main(): Promise<number> {
  try {
    const { output, status } = await run(process.argv.slice(2));
    process.stdout.write(`${JSON.stringify(output, null, 2)}\n`);
    return status;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(error.message ? `verify-quote: ${error.message}\n${USAGE}\n` : `${USAGE}\n`);
      return 2;
    }
    if (error instanceof KmsError) {
      process.stderr.write(`verify-quote: ${error.message}\n`);
      return 2;
    }
    process.stderr.write(`verify-quote: unexpected error: ${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
}

process.exitCode = await main();
