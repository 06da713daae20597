/**
 * A CA bundle is accepted exactly when TLS would trust every certificate it shows: each shape is
 * also given to node:https as `ca` against a server holding each certificate (real TLS, loopback).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { pemBundle } from '../../../shared/crypto/pem-bundle.js';
import { writeTlsFiles } from '../../support/tls-files.js';

const dir = mkdtempSync(join(tmpdir(), 'tee-kms-pem-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const [a, b] = ['a', 'b'].map((name) => writeTlsFiles(dir, name));
const pemA = a!.certPem.trimEnd();
const pemB = b!.certPem.trimEnd();

/** Whether TLS with `ca` reaches a server holding `files`' certificate. */
async function tlsTrusts(ca: string, files: { certFile: string; keyFile: string }): Promise<boolean> {
  const server = createServer({ cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) }, (_, res) => res.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    return await new Promise<boolean>((resolve) => {
      get({ host: '127.0.0.1', port, servername: 'localhost', ca, agent: false }, (res) => {
        res.resume();
        resolve(true);
      }).on('error', () => resolve(false));
    });
  } finally {
    server.close();
  }
}

describe('pemBundle', () => {
  const accepted: [string, string, number][] = [
    ['one certificate', pemA, 1],
    ['with a trailing newline', `${pemA}\n`, 1],
    ['two, one after the other', `${pemA}\n${pemB}\n`, 2],
    ['two with a blank line between', `${pemA}\n\n${pemB}`, 2],
    ['two with CRLF line ends', `${pemA}\n${pemB}\n`.replace(/\n/g, '\r\n'), 2],
  ];
  for (const [name, text, count] of accepted) {
    it(`accepts ${name}, which TLS loads whole`, async () => {
      expect(pemBundle(text)?.match(/-----BEGIN CERTIFICATE-----\n/g)).toHaveLength(count);
      expect(pemBundle(text)).toBe(text.replace(/\r\n/g, '\n').trimEnd());
      expect(await tlsTrusts(text, a!)).toBe(true);
      if (count === 2) expect(await tlsTrusts(text, b!)).toBe(true);
    });
  }

  const refused: [string, unknown][] = [
    ['two with no line break between (TLS skips the second)', `${pemA}${pemB}`],
    ['an indented BEGIN line (TLS skips it)', `  ${pemA}`],
    ['a second certificate indented', `${pemA}\n ${pemB}`],
    ['text before', `CA:\n${pemA}`],
    ['text after', `${pemA}\ntrust me`],
    ['a private key beside it', `${pemA}\n${readFileSync(a!.keyFile, 'utf8')}`],
    ['a damaged certificate', pemA.replace(/\n[A-Za-z0-9+/]{8}/, '\nAAAAAAAA')],
    ['nothing', ''],
    ['white space', ' \n'],
    ['a file name', a!.certFile],
    ['not a string', 0],
  ];
  for (const [name, text] of refused) it(`refuses ${name}`, () => expect(pemBundle(text)).toBeUndefined());

  it('the refused shapes that hold whole blocks are ones TLS does not load as shown', async () => {
    expect(await tlsTrusts(`${pemA}${pemB}`, b!)).toBe(false);
    expect(await tlsTrusts(`  ${pemA}`, a!)).toBe(false);
  });
});
