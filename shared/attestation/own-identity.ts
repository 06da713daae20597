/**
 * This TEE's own workload identity, read from its own evidence: TDX's MRCONFIGID (which the host
 * set from the pod's init-data at TD creation), or the identity sample evidence claims.
 *
 * The evidence must come from inside this TEE (configfs-tsm, or the attestation agent on the TD's
 * own loopback: the deployment keeps the host from naming another source). Its signature is not
 * checked here, but it must carry the fresh report data asked for, so that a recorded quote (of
 * another TD, with other init-data) cannot stand in for it.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { InitData } from './init-data.js';
import { NO_INIT_DATA, type SampleEvidence } from './sample.js';
import type { Attester } from './types.js';

export async function ownIdentity(attester: Attester): Promise<string> {
  const reportData = randomBytes(64);
  const evidence = await attester.getEvidence(reportData);
  let found: { identity: string; reportData: Buffer };
  try {
    found = attester.tee === 'sample' ? fromSample(evidence as SampleEvidence) : await fromTdx(evidence);
  } catch (error) {
    throw unreadable(attester, error instanceof KmsError ? error.message : 'malformed', error);
  }
  if (found.reportData.length !== reportData.length || !timingSafeEqual(found.reportData, reportData)) {
    throw unreadable(attester, 'it does not carry the report data asked for (not this TEE’s, or recorded)');
  }
  return found.identity;
}

function fromSample(evidence: SampleEvidence): { identity: string; reportData: Buffer } {
  return { identity: evidence.init_data ?? NO_INIT_DATA, reportData: Buffer.from(String(evidence.report_data), 'base64') };
}

async function fromTdx(evidence: unknown): Promise<{ identity: string; reportData: Buffer }> {
  const [{ decodeTdxEvidence }, { parseTdxQuote }] = await Promise.all([import('./tdx/evidence.js'), import('./tdx/quote.js')]);
  const { report } = parseTdxQuote(decodeTdxEvidence(evidence).quote);
  return { identity: report.mrConfigId.toLowerCase(), reportData: Buffer.from(report.reportData, 'hex') };
}

const unreadable = (attester: Attester, detail: string, cause?: unknown): KmsError =>
  new KmsError('CONFIG', `this TEE's own ${attester.tee} evidence cannot be used: ${detail}`, cause === undefined ? undefined : { cause });

/**
 * Resolves to this TEE's identity once `initData` (read from `variable`'s file, which the host
 * wrote) is shown to be the document this TEE was created with: its digest is the identity of a
 * fresh quote of its own. Otherwise KmsError('CONFIG'), and nothing in the file may be used.
 * `sampleVariable` names where sample evidence took the identity it claims.
 */
export async function ownInitData(initData: InitData, attester: Attester, where: { variable: string; path: string; sampleVariable: string }): Promise<string> {
  const identity = await ownIdentity(attester);
  if (identity === initData.digest) return identity;
  const field = attester.tee === 'tdx' ? 'MRCONFIGID' : `identity (${where.sampleVariable})`;
  throw new KmsError(
    'CONFIG',
    `${where.variable} ${where.path} is not this TD's init-data: its digest ${initData.digest} is not this TD's own ${field} ${identity}, so nothing in it is trusted`,
  );
}
