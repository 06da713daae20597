// The custodian ceremony end to end, as docs/custodians.md tells it, through `npm start` and the
// custodians' own command (dist/scripts/custodian.js): shares leave only encrypted to custodians,
// come back only encrypted to the sealing service's recovery key, and plaintext is refused.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { freePort, repoRoot, startNpmStart, type ServerProcess } from '../support/processes.js';
import { findSecrets } from '../support/storage-snapshot.js';

const ADMIN = 'custody-admin-token';
const USER = 'user=carol&token=carols-token';
const cli = join(repoRoot, 'dist/scripts/custodian.js');

function custodian(...args: string[]): string {
  return custodianWithInput('', ...args);
}

function custodianWithInput(input: string, ...args: string[]): string {
  const run = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000, input });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout.trim();
}

describe('custodian ceremony through npm start (plaintext shares refused)', () => {
  let dir: string;
  let port: number;
  let kms: ServerProcess | undefined;
  const start = async () =>
    (kms = await startNpmStart({ KMS_DATA_DIR: join(dir, 'kms'), PORT: String(port), KMS_ADMIN_TOKEN: ADMIN, KMS_SEALER_PLAINTEXT_SHARES: 'refuse' }));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-custody-'));
    port = await freePort();
  });
  afterAll(async () => {
    await kms?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** Each share sealed to the recovery key of the running sealing service, after checking its evidence. */
  async function sealToRecoveryKey(server: ServerProcess, shares: readonly Share[]): Promise<string[]> {
    const nonce = randomBytes(32).toString('base64url');
    const answer = await server.request(`/rootKey/recover?nonce=${nonce}`, { headers: { accept: 'application/json' } });
    expect(answer.status, answer.body).toBe(200);
    const file = join(dir, `recovery-${nonce.slice(0, 8)}.json`);
    await writeFile(file, answer.body);
    return shares.map((share) => custodianWithInput(JSON.stringify(share), 'seal-share', file, String(share.index), '-', `--nonce=${nonce}`, '--allow-sample'));
  }

  it('rotate to custodians, restart, recover with shares sealed to the recovery key: same keys; the next rotation reuses the custodians', async () => {
    let server = await start();
    const refused = await server.request('/rootKey/rotate');
    expect(refused.status, refused.body).toBe(400);
    expect(refused.body).toContain('only encrypted to their custodians');
    expect((await server.request('/')).body).toContain('state: uninitialized');

    const publicKeys = [1, 2, 3, 4, 5].map((i) => JSON.parse(custodian('keygen', join(dir, `custodian-${i}`))) as Record<string, string>);
    const rotated = await server.request('/rootKey/rotate', { method: 'POST', body: JSON.stringify({ custodians: publicKeys }) });
    expect(rotated.status, rotated.body).toBe(200);
    expect(rotated.headers['x-kms-shares-encrypted']).toBe('custodians');
    const sealed = JSON.parse(rotated.body) as Share[];
    expect(sealed.map((share) => share.content.split('.').length)).toEqual([5, 5, 5, 5, 5]);
    // Each custodian opens their own share, and only theirs.
    const shares = sealed.map(
      (share, i) => JSON.parse(custodian('decrypt', join(dir, `custodian-${i + 1}`, 'custodian-key.json'), JSON.stringify(share))) as Share,
    );
    expect(shares.map((share) => share.index)).toEqual(sealed.map((share) => share.index));
    const wrong = spawnSync(process.execPath, [cli, 'decrypt', join(dir, 'custodian-2', 'custodian-key.json'), JSON.stringify(sealed[0])], {
      encoding: 'utf8',
    });
    expect(wrong.status).not.toBe(0);

    expect((await server.request(`/user/carol?token=carols-token`, { method: 'POST' })).status).toBe(201);
    expect((await server.request(`/primaryKey/pk?${USER}`, { method: 'POST' })).status).toBe(201);
    expect((await server.request(`/dataKey/dk?${USER}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
    const dataKey = (await server.request(`/dataKey/dk?${USER}&primaryKeyName=pk`)).body;

    await server.stop();
    server = await start();
    expect((await server.request(`/dataKey/dk?${USER}&primaryKeyName=pk`)).status).toBe(503);
    const plain = await server.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(shares[0]) });
    expect(plain.status, plain.body).toBe(400);
    expect(plain.body).toContain('plaintext shares are refused');
    const bodies = await sealToRecoveryKey(server, [shares[4]!, shares[1]!, shares[2]!]);
    for (const [i, body] of bodies.entries()) {
      const answer = await server.request('/rootKey/recover', { method: 'PUT', body });
      expect(answer.status, answer.body).toBe(200);
      if (i === 2) expect(answer.body).toMatch(/^root key recovered/);
    }
    expect((await server.request(`/dataKey/dk?${USER}&primaryKeyName=pk`)).body).toBe(dataKey);

    // The next rotation needs no keys: the custodians stored (authenticated) with the current key are reused.
    const next = await server.request('/rootKey/rotate', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } });
    expect(next.status, next.body).toBe(200);
    const nextShares = (JSON.parse(next.body) as Share[]).map(
      (share, i) => JSON.parse(custodian('decrypt', join(dir, `custodian-${i + 1}`, 'custodian-key.json'), JSON.stringify(share))) as Share,
    );
    const verifyShares = (await sealToRecoveryKey(server, nextShares.slice(0, 3))).map((body) => JSON.parse(body) as Share);
    const verified = await server.request('/rootKey/verify', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, accept: 'application/json' },
      body: JSON.stringify({ shares: verifyShares }),
    });
    expect(verified.status, verified.body).toBe(200);
    expect(JSON.parse(verified.body)).toMatchObject({ verified: true, promoted: true, rewrapped: 1 });
    expect((await server.request(`/dataKey/dk?${USER}&primaryKeyName=pk`)).body).toBe(dataKey);

    // The admin token alone cannot redirect the shares to custodians of its choosing: that takes the current shares.
    const mine = [6, 7, 8, 9, 10].map((i) => JSON.parse(custodian('keygen', join(dir, `custodian-${i}`))) as Record<string, string>);
    const statusBefore = (await server.request('/rootKey/status')).body;
    const hijack = await server.request('/rootKey/rotate', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ custodians: mine }),
    });
    expect(hijack.status, hijack.body).toBe(400);
    expect(hijack.body).toContain('naming new custodians needs 3 shares of the current root key');
    expect((await server.request('/rootKey/status')).body).toBe(statusBefore);
    const proof = (await sealToRecoveryKey(server, nextShares.slice(2, 5))).map((body) => JSON.parse(body) as Share);
    const handedOver = await server.request('/rootKey/rotate', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ custodians: mine, shares: proof }),
    });
    expect(handedOver.status, handedOver.body).toBe(200);
    const first = (JSON.parse(handedOver.body) as Share[])[0]!;
    expect(JSON.parse(custodian('decrypt', join(dir, 'custodian-6', 'custodian-key.json'), JSON.stringify(first)))).toMatchObject({ index: first.index });

    const secrets = [...shares, ...nextShares].map((share) => Buffer.from(share.content, 'base64'));
    expect(findSecrets(await server.settledOutput(), [...secrets, Buffer.from(dataKey.trim(), 'base64'), 'carols-token', ADMIN])).toEqual([]);
  });
});
