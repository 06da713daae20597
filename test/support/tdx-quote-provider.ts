/**
 * A test TDX quote provider over real HTTP: a stand-in for the CoCo attestation agent's REST front
 * end (guest-components api-server-rest), answering
 *
 *   GET /aa/evidence?runtime_data=<base64url, no padding>&encoding=base64
 *
 * as the agent does for a TDX guest: the runtime data (at most 64 bytes) zero-padded to 64 bytes
 * becomes the quote's REPORTDATA, and the answer is the evidence JSON {"quote": base64,
 * "cc_eventlog"?: base64}. The quotes are synthetic, signed by the test PKI (tdx-quote-builder.ts),
 * with the TD's MRTD and DEBUG bit as configured. The CCEL is sent when the profile has one (like
 * an agent that can read /sys/firmware/acpi/tables/data/CCEL); the sealer replays it against the
 * quote's RTMRs, so its events must produce them (or not, to play an attacker).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildTdxQuote, DEFAULT_TD, TD_ATTRIBUTES_DEBUG, TD_ATTRIBUTES_PRODUCTION, type TdReportFields, type TestPki } from './tdx-quote-builder.js';

export interface TdProfile {
  /** MRTD, 96 lowercase hex digits; default DEFAULT_TD.mrTd. */
  readonly mrTd?: string;
  /** TDATTRIBUTES.DEBUG; default false. */
  readonly debug?: boolean;
  /** Any other TD report field (RTMRs, MRCONFIGID…). */
  readonly report?: Partial<Omit<TdReportFields, 'reportData' | 'mrTd' | 'tdAttributes'>>;
  /** The CCEL to send as cc_eventlog (test/support/ccel-writer.ts); default none. */
  readonly ccel?: Uint8Array;
}

export interface TdxQuoteProvider {
  /** Base URL, what KMS_AA_URL takes. */
  readonly url: string;
  /** The REPORTDATA of every quote signed so far, hex. */
  readonly signed: string[];
  /** Request paths with query, as received. */
  readonly requests: string[];
  /** From now on, evidence requests wait (as for a slow quote generation service) until release(). */
  hold(): void;
  /** Answers every held request and stops holding. */
  release(): void;
  /** Evidence requests being answered or held right now, and the most there ever were at once. */
  inFlight(): number;
  maxInFlight(): number;
  close(): Promise<void>;
}

/** The TD report fields a provider with `profile` puts into its quotes (reportData aside). */
export function tdReportOf(profile: TdProfile): Omit<TdReportFields, 'reportData'> {
  return {
    ...DEFAULT_TD,
    ...profile.report,
    mrTd: profile.mrTd ?? DEFAULT_TD.mrTd,
    tdAttributes: profile.debug ? TD_ATTRIBUTES_DEBUG : TD_ATTRIBUTES_PRODUCTION,
  };
}

/** `port`: listen there (an agent coming back where it was); default any free port. */
export async function startTdxQuoteProvider(pki: TestPki, profile: TdProfile = {}, options: { port?: number } = {}): Promise<TdxQuoteProvider> {
  const signed: string[] = [];
  const requests: string[] = [];
  const report = tdReportOf(profile);
  let holding = false;
  const held: (() => void)[] = [];
  let inFlight = 0;
  let maxInFlight = 0;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.on('close', () => inFlight--);
    if (holding) held.push(() => answer(req, res));
    else answer(req, res);
  };

  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://aa');
    if (req.method !== 'GET' || url.pathname !== '/aa/evidence') {
      res.writeHead(404).end();
      return;
    }
    const value = url.searchParams.get('runtime_data');
    // api-server-rest: URL-safe base64 without padding with encoding=base64 (the only form we serve).
    if (value === null || url.searchParams.get('encoding') !== 'base64' || !/^[A-Za-z0-9_-]*$/.test(value)) {
      res.writeHead(400).end('runtime_data must be base64url with encoding=base64');
      return;
    }
    const runtimeData = Buffer.from(value, 'base64url');
    if (runtimeData.length > 64) {
      // The agent's TDX attester refuses longer runtime data.
      res.writeHead(500).end('TDX Attester: Report data must be no more than 64 bytes');
      return;
    }
    const reportData = Buffer.concat([runtimeData, Buffer.alloc(64 - runtimeData.length)]);
    const { quote } = buildTdxQuote(pki, { report: { ...report, reportData } });
    signed.push(reportData.toString('hex'));
    const body = JSON.stringify({
      ...(profile.ccel === undefined ? {} : { cc_eventlog: Buffer.from(profile.ccel).toString('base64') }),
      quote: quote.toString('base64'),
    });
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': Buffer.byteLength(body) }).end(body);
  };

  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    signed,
    requests,
    hold: () => {
      holding = true;
    },
    release: () => {
      holding = false;
      for (const next of held.splice(0)) next();
    },
    inFlight: () => inFlight,
    maxInFlight: () => maxInFlight,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
