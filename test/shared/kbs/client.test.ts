// KbsClient (this process, the "function") ↔ a real sealer process over HTTPS: the round trip,
// token reuse and renewal, re-attestation on 401, and refusal of a server it does not trust.
import { SampleVerifier } from '../../../shared/attestation/sample.js';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { KmsError } from '../../../shared/errors.js';
import { KbsClient, KbsResponseError, KbsTransportError } from '../../../shared/kbs/client.js';
import { SealerClient } from '../../../shared/sealer-client/client.js';
import { allLogs, CountingAttester, SecretRegistry, startSealerProcess, type SealerProcess } from '../../support/sealer.js';

const ROOT_KEY = randomBytes(32);
const secrets = new SecretRegistry();
secrets.add(ROOT_KEY);

let sealer: SealerProcess;
let other: SealerProcess;

beforeAll(async () => {
  [sealer, other] = await Promise.all([
    startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'), KMS_SEALER_TOKEN_TTL_SECONDS: '2' } }),
    startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64') } }),
  ]);
});

afterAll(async () => {
  await Promise.all([sealer?.cleanup(), other?.cleanup()]);
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure');
}

describe('KbsClient ↔ sealer process', () => {
  it('auth → attest → resource: releases the root key to this TEE key, attesting once for many reads', async () => {
    const attester = new CountingAttester();
    const client = new SealerClient({ url: sealer.url, ca: await sealer.caPem(), attester, sealerVerifier: new SampleVerifier() });
    try {
      const first = await client.rootKey();
      expect(first.key.equals(ROOT_KEY)).toBe(true);
      expect(first.id).toBe(rootKeyId(ROOT_KEY));
      await client.rootKey();
      await client.rootKey();
      expect(attester.calls).toBe(1);
    } finally {
      client.close();
    }
  });

  it('renews the token shortly before it expires, without a 401', async () => {
    const attester = new CountingAttester();
    const kbs = new KbsClient({ url: sealer.url, ca: await sealer.caPem(), attester });
    try {
      const token = await kbs.token();
      secrets.addText(token);
      expect(await kbs.token()).toBe(token);
      await sealer.settle();
      const before = sealer.requestLines().filter((line) => line.endsWith(' 401')).length;
      await new Promise((resolve) => setTimeout(resolve, 1_700)); // TTL 2 s: renewal 0.4 s before expiry
      expect((await kbs.getResource('tee-kms/root-key/current')).equals(ROOT_KEY)).toBe(true);
      expect(attester.calls).toBe(2);
      await sealer.settle();
      expect(sealer.requestLines().filter((line) => line.endsWith(' 401')).length).toBe(before);
      secrets.addText(await kbs.token());
    } finally {
      kbs.close();
    }
  });

  it('attests again when the sealer refuses its token (401 after a sealer restart)', async () => {
    // Its own sealer with the default token lifetime: a 2 s token could be renewed early on a busy machine.
    const restarting = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64') } });
    const attester = new CountingAttester();
    const kbs = new KbsClient({ url: restarting.url, ca: await restarting.caPem(), attester });
    try {
      secrets.addText(await kbs.token());
      await restarting.restart('SIGKILL'); // new token signing key: the cached token is now unknown
      expect((await kbs.getResource('tee-kms/root-key/current')).equals(ROOT_KEY)).toBe(true);
      expect(attester.calls).toBe(2);
      await restarting.settle();
      expect(restarting.requestLines().includes('GET /kbs/v0/resource/tee-kms/root-key/current 401')).toBe(true);
      secrets.addText(await kbs.token());
    } finally {
      kbs.close();
      await restarting.cleanup();
    }
  });

  it('refuses a sealer whose certificate the configured CA did not sign: no evidence made, no request reached it', async () => {
    const attester = new CountingAttester();
    await sealer.settle();
    const requestsBefore = sealer.requestLines().length;
    // The other sealer's certificate as CA, pointed at this sealer.
    const client = new SealerClient({ url: sealer.url, ca: await other.caPem(), attester, sealerVerifier: new SampleVerifier() });
    try {
      const error = (await failure(client.rootKey())) as KmsError;
      expect(error).toBeInstanceOf(KmsError);
      expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
      expect(error.message).toContain('TLS certificate is not trusted by KMS_SEALER_CA_FILE');
      expect(error.cause).toBeInstanceOf(KbsTransportError);
      expect((error.cause as KbsTransportError).kind).toBe('tls');
      expect((await failure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: null }))) as KmsError).toMatchObject({
        code: 'ROOT_KEY_UNAVAILABLE',
      });
      expect(attester.calls).toBe(0);
      await sealer.settle();
      expect(sealer.requestLines().length).toBe(requestsBefore);
    } finally {
      client.close();
    }
  });

  it('refuses a certificate that does not name the host it connects to', async () => {
    const misnamed = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'), KMS_SEALER_TLS_HOSTNAMES: 'sealer.example' } });
    const attester = new CountingAttester();
    const client = new SealerClient({ url: misnamed.url, ca: await misnamed.caPem(), attester, sealerVerifier: new SampleVerifier() });
    try {
      const error = (await failure(client.rootKey())) as KmsError;
      expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
      expect((error.cause as KbsTransportError).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
      expect(attester.calls).toBe(0);
    } finally {
      client.close();
      await misnamed.cleanup();
    }
  });

  it('surfaces a refused attestation as KbsResponseError 401 (no retry loop)', async () => {
    const refusing = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'), KMS_SEALER_INSECURE_DEV_MODE: 'false' } });
    const attester = new CountingAttester();
    const kbs = new KbsClient({ url: refusing.url, ca: await refusing.caPem(), attester });
    try {
      const error = (await failure(kbs.getResource('tee-kms/root-key/current'))) as KbsResponseError;
      expect(error).toBeInstanceOf(KbsResponseError);
      expect(error.status).toBe(401);
      expect(error.operation).toBe('auth');
      expect(error.problem?.detail).toContain('insecure development mode');
      expect(attester.calls).toBe(0);
      await refusing.settle();
      expect(refusing.requestLines().filter((line) => line.includes('/kbs/v0/auth')).length).toBe(1);
    } finally {
      kbs.close();
      await refusing.cleanup();
    }
  });
});
