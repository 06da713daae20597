/**
 * A PCCS stand-in over real HTTP (or HTTPS with a self-signed test certificate) on loopback,
 * serving given collateral on the standard v4 endpoints the way a PCCS does (issuer chains
 * URL-encoded in headers, signed documents wrapped with their signature, root CA CRL as hex text).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TdxCollateral } from '../../sealer/attestation/tdx/collateral.js';
import { writeTlsFiles } from './tls-files.js';

export interface FakePccsOptions {
  /** No rootcacrl endpoint (like Intel PCS); the CRL is then only at /IntelSGXRootCA.der. */
  readonly withoutRootCaCrlEndpoint?: boolean;
  /** Answer every request with this status. */
  readonly failWith?: number;
  /** Never answer (to test timeouts). */
  readonly hang?: boolean;
  /** Pretty-print the signed wrappers (the signed member text must survive verbatim). */
  readonly spacedJson?: boolean;
  /** Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 (its PEM is `tlsCa`). */
  readonly https?: boolean;
}

export interface FakePccs {
  readonly url: string;
  /** The certificate to trust when serving HTTPS. */
  readonly tlsCa: string | undefined;
  /** Request paths in arrival order: what the server saw, whoever the client was. */
  readonly requests: string[];
  setCollateral(collateral: TdxCollateral): void;
  close(): Promise<void>;
}

export async function startFakePccs(initial: TdxCollateral, options: FakePccsOptions = {}): Promise<FakePccs> {
  let collateral = initial;
  const requests: string[] = [];
  const wrap = (member: string, text: string, signature: string) =>
    options.spacedJson ? `{\n  "${member}" : ${text},\n  "signature" : "${signature.toUpperCase()}"\n}` : `{"${member}":${text},"signature":"${signature}"}`;

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    requests.push(req.url ?? '');
    if (options.hang) return;
    if (options.failWith) {
      res.writeHead(options.failWith).end('internal details that must not leak');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://pccs');
    const send = (body: string | Buffer, headers: Record<string, string> = {}) => res.writeHead(200, headers).end(body);
    switch (url.pathname) {
      case '/sgx/certification/v4/pckcrl':
        return send(Buffer.from(collateral.pck_crl, 'hex'), { 'SGX-PCK-CRL-Issuer-Chain': encodeURIComponent(collateral.pck_crl_issuer_chain) });
      case '/tdx/certification/v4/tcb':
        return send(wrap('tcbInfo', collateral.tcb_info, collateral.tcb_info_signature), {
          'Content-Type': 'application/json',
          'TCB-Info-Issuer-Chain': encodeURIComponent(collateral.tcb_info_issuer_chain),
        });
      case '/tdx/certification/v4/qe/identity':
        return send(wrap('enclaveIdentity', collateral.qe_identity, collateral.qe_identity_signature), {
          'Content-Type': 'application/json',
          'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(collateral.qe_identity_issuer_chain),
        });
      case '/sgx/certification/v4/rootcacrl':
        if (options.withoutRootCaCrlEndpoint) break;
        return send(collateral.root_ca_crl);
      case '/IntelSGXRootCA.der':
        return send(Buffer.from(collateral.root_ca_crl, 'hex'));
    }
    res.writeHead(404).end();
  };

  let tlsCa: string | undefined;
  let server;
  if (options.https) {
    const dir = mkdtempSync(join(tmpdir(), 'fake-pccs-'));
    try {
      const files = writeTlsFiles(dir, 'pccs');
      tlsCa = files.certPem;
      server = createHttpsServer({ cert: files.certPem, key: readFileSync(files.keyFile) }, handle);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } else {
    server = createServer(handle);
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${options.https ? 'https' : 'http'}://127.0.0.1:${port}`,
    tlsCa,
    requests,
    setCollateral: (next) => {
      collateral = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
