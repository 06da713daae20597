/**
 * AaEvidenceAttester against a stand-in for guest-components' api-server-rest over real HTTP.
 * The stand-in decodes runtime_data exactly as api-server-rest does (utils.rs decode_runtime_data:
 * URL-safe base64 without padding when encoding=base64, else the raw UTF-8 bytes of the value),
 * pads it to 64 bytes like the TDX attester, and answers with the agent's TDX evidence JSON.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { AaEvidenceAttester, DEFAULT_AA_BASE_URL } from '../../../../shared/attestation/tdx/aa-attester.js';
import { parseCollateral, StaticCollateralSource } from '../../../../sealer/attestation/tdx/collateral.js';
import { createTdxPolicy } from '../../../../sealer/attestation/tdx/policy.js';
import { TdxVerifier } from '../../../../sealer/attestation/tdx/verifier.js';
import { buildCollateral, buildTdxQuote, createTestPki, DEFAULT_TD, reportDataFrom, TEST_TIME } from '../../../support/tdx-quote-builder.js';
import { expectKmsError } from '../../../support/tdx-helpers.js';
import { BOOT_EVENTS, rtmrsOf, writeCcel } from '../../../support/ccel-writer.js';

type Mode = 'current' | 'legacy' | 'not-tdx' | 'not-json' | 'hang' | 'failing';

const pki = await createTestPki();
const requests: string[] = [];
let mode: Mode = 'current';

function decodeRuntimeData(value: string, encoding: string | null): Buffer {
  if (encoding === null) return Buffer.from(value, 'utf8');
  if (encoding !== 'base64' || !/^[A-Za-z0-9_-]*$/.test(value)) throw new Error('bad runtime_data');
  return Buffer.from(value, 'base64url');
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests.push(req.url ?? '');
  if (mode === 'hang') return;
  if (mode === 'failing') {
    // What the agent answers when quote generation fails (its QGS unreachable, say).
    res.writeHead(500).end('Get evidence failed: tdx: get quote: QGS connection refused');
    return;
  }
  const url = new URL(req.url ?? '/', 'http://aa');
  if (url.pathname !== '/prefix/aa/evidence' && url.pathname !== '/aa/evidence') {
    res.writeHead(404).end();
    return;
  }
  const value = url.searchParams.get('runtime_data');
  if (value === null) {
    res.writeHead(400).end();
    return;
  }
  let runtimeData: Buffer;
  try {
    // The legacy server ignores `encoding` altogether.
    runtimeData = decodeRuntimeData(value, mode === 'legacy' ? null : url.searchParams.get('encoding'));
  } catch {
    res.writeHead(400).end();
    return;
  }
  if (runtimeData.length > 64) {
    res.writeHead(500).end('TDX Attester: Report data must be no more than 64 bytes');
    return;
  }
  const reportData = Buffer.concat([runtimeData, Buffer.alloc(64 - runtimeData.length)]);
  // Like a TD's agent: the firmware's event log, and a quote whose RTMRs it accounts for.
  const quote = buildTdxQuote(pki, { report: { reportData, rtmr: rtmrsOf(BOOT_EVENTS) } }).quote.toString('base64');
  const body =
    mode === 'not-tdx'
      ? JSON.stringify({ svn: '1', report_data: runtimeData.toString('base64') })
      : mode === 'not-json'
        ? 'evidence?'
        : JSON.stringify({ cc_eventlog: writeCcel(BOOT_EVENTS).toString('base64'), quote });
  res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(body);
}

const server = createServer(handle);
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
afterAll(
  () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
);

describe('AaEvidenceAttester', () => {
  const nonce = reportDataFrom('kbs-binding');

  it('defaults to the local api-server-rest', () => {
    expect(DEFAULT_AA_BASE_URL).toBe('http://127.0.0.1:8006');
    expect(new AaEvidenceAttester().evidenceUrl(new Uint8Array(64).fill(0xff))).toBe(
      `http://127.0.0.1:8006/aa/evidence?runtime_data=${'_'.repeat(85)}w&encoding=base64`,
    );
  });

  it('sends runtime_data as unpadded base64url with encoding=base64 and returns verifiable evidence', async () => {
    mode = 'current';
    requests.length = 0;
    const evidence = await new AaEvidenceAttester({ baseUrl: `${baseUrl}/` }).getEvidence(nonce);
    expect(requests).toEqual([`/aa/evidence?runtime_data=${Buffer.from(nonce).toString('base64url')}&encoding=base64`]);
    expect(requests[0]).not.toContain('=&');
    expect(evidence.cc_eventlog).toBe(writeCcel(BOOT_EVENTS).toString('base64'));
    const verifier = new TdxVerifier({
      policy: createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd] }),
      collateral: new StaticCollateralSource(parseCollateral(await buildCollateral(pki), 'test')),
      trustedRootCaPem: pki.root.pem,
      now: () => TEST_TIME,
    });
    const verified = await verifier.verify(evidence, nonce);
    expect(verified.claims).toMatchObject({
      mrTd: DEFAULT_TD.mrTd,
      ccEventlogPresent: true,
      eventLog: { replayed: true, events: BOOT_EVENTS.length },
      tcbStatus: 'UpToDate',
    });
  });

  it('works behind a path prefix', async () => {
    mode = 'current';
    const evidence = await new AaEvidenceAttester({ baseUrl: `${baseUrl}/prefix` }).getEvidence(nonce);
    expect(typeof evidence.quote).toBe('string');
  });

  it('fails closed against a legacy server that ignores encoding=base64', async () => {
    mode = 'legacy';
    // 86 characters of base64url are more than the 64 bytes the TDX attester takes. Its 500 is told
    // from a failing agent's by neither status nor (unshown) text: a 503 as well, and no evidence.
    await expectKmsError(
      () => new AaEvidenceAttester({ baseUrl }).getEvidence(nonce),
      'ATTESTATION_UNAVAILABLE',
      'the attestation agent answered HTTP 500 to the evidence request',
    );
  });

  it('refuses a quote that does not bind the requested report_data', async () => {
    mode = 'legacy';
    // Short enough for a legacy server to accept its base64url text as runtime data.
    const impostorFetch: typeof fetch = (input, init) => fetch(String(input).replace(/runtime_data=[^&]+/, 'runtime_data=abc'), init);
    await expectKmsError(
      () => new AaEvidenceAttester({ baseUrl, fetch: impostorFetch }).getEvidence(nonce),
      'INTERNAL',
      'the attestation agent returned a quote that does not bind the requested report_data (api-server-rest without encoding=base64 support?)',
    );
  });

  it('reports non-TDX and non-JSON evidence', async () => {
    mode = 'not-tdx';
    await expectKmsError(
      () => new AaEvidenceAttester({ baseUrl }).getEvidence(nonce),
      'CONFIG',
      'the attestation agent returned no TDX evidence (is this pod a TDX guest?)',
    );
    mode = 'not-json';
    await expectKmsError(() => new AaEvidenceAttester({ baseUrl }).getEvidence(nonce), 'INTERNAL', 'the attestation agent returned evidence that is not JSON');
  });

  it('reports an unreachable, silent or failing agent as ATTESTATION_UNAVAILABLE (a 503, retried)', async () => {
    mode = 'hang';
    await expectKmsError(
      () => new AaEvidenceAttester({ baseUrl, timeoutMs: 200 }).getEvidence(nonce),
      'ATTESTATION_UNAVAILABLE',
      `the attestation agent at ${baseUrl} cannot be reached`,
    );
    const closedUrl = 'http://127.0.0.1:1'; // nothing listens on port 1 (a released free port may be taken meanwhile)
    await expectKmsError(
      () => new AaEvidenceAttester({ baseUrl: closedUrl }).getEvidence(nonce),
      'ATTESTATION_UNAVAILABLE',
      `the attestation agent at ${closedUrl} cannot be reached`,
    );
    mode = 'failing';
    const error = await expectKmsError(
      () => new AaEvidenceAttester({ baseUrl }).getEvidence(nonce),
      'ATTESTATION_UNAVAILABLE',
      'the attestation agent answered HTTP 500 to the evidence request',
    );
    // The agent's own text is not passed on.
    expect(error.message).not.toContain('QGS');
  });

  it('validates its configuration and input', async () => {
    await expectKmsError(() => new AaEvidenceAttester({ baseUrl: 'unix:/run/aa.sock' }), 'CONFIG', 'attestation agent base URL must be an http(s) URL');
    await expectKmsError(() => new AaEvidenceAttester({ baseUrl }).getEvidence(new Uint8Array(63)), 'BAD_REQUEST', 'TDX report_data must be exactly 64 bytes');
  });
});
