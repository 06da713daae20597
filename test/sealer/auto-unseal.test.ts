// Auto-unseal on real sealer processes: the root key stored wrapped under a key-encryption key
// (KEK) that the sealer gets, after attesting, from a KBS: a Trustee KBS double written from the
// protocol, and another sealing service acting as that KBS.
import { createDecipheriv, randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import canonicalize from 'canonicalize';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configuredAutoUnseal } from '../../sealer/auto-unseal.js';
import { loadSealerOptions } from '../../sealer/options.js';
import { SampleAttester } from '../../shared/attestation/sample.js';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import { combine } from 'shamir-secret-sharing';
import { custodians, sealForRecovery } from '../support/custodians.js';
import { rootKeyIdOf } from '../support/protocol-client.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { readFsObjects, findSecrets } from '../support/storage-snapshot.js';
import { startKbsDouble, type KbsDouble } from '../support/trustee-kbs.js';

const RESOURCE = 'tee-kms/unseal/kek';
const secrets = new SecretRegistry();
const plaintexts: Buffer[] = [];

function remember(key: Buffer): Buffer {
  secrets.add(key);
  plaintexts.push(key);
  return key;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, tries = 200): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface Wrap {
  format: number;
  kind: string;
  rootKeyId: string;
  wrapped: { iv: string; ciphertext: string; tag: string };
}

const wrapPath = (sealer: SealerProcess) => join(sealer.dataDir, 'objects', 'sealer', 'auto-unseal.json');

async function storedWrap(sealer: SealerProcess): Promise<{ raw: Buffer; wrap: Wrap } | undefined> {
  const raw = await readFile(wrapPath(sealer)).catch(() => undefined);
  return raw === undefined ? undefined : { raw, wrap: JSON.parse(raw.toString('utf8')) as Wrap };
}

/** Opens the wrap as docs/root-key.md describes it: AES-256-GCM, AAD the JCS of {kind, rootKeyId}. */
function openWrap(kek: Buffer, wrap: Wrap): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', kek, Buffer.from(wrap.wrapped.iv, 'base64url'));
  decipher.setAAD(Buffer.from(canonicalize({ kind: 'auto-unseal', rootKeyId: wrap.rootKeyId })!, 'utf8'));
  decipher.setAuthTag(Buffer.from(wrap.wrapped.tag, 'base64url'));
  return Buffer.concat([decipher.update(Buffer.from(wrap.wrapped.ciphertext, 'base64url')), decipher.final()]);
}

async function keyOf(shares: readonly Share[], t: number): Promise<Buffer> {
  return remember(Buffer.from(await combine(shares.slice(0, t).map((share) => new Uint8Array(Buffer.from(share.content, 'base64'))))));
}

async function unsealedAs(client: SealerClient, id: string): Promise<void> {
  await until(`unsealed with ${id}`, async () => {
    const status = await client.sealStatus();
    return !status.sealed && status.rootKeyId === id ? true : undefined;
  });
}

afterAll(() => {
  expect(secrets.size).toBeGreaterThan(0);
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

describe('auto-unseal from a Trustee KBS', () => {
  const kek = remember(randomBytes(32));
  let kbs: KbsDouble;
  let sealer: SealerProcess;
  let client: SealerClient;
  let current: { id: string; shares: Share[] };

  const failedAttempts = (mark: number) =>
    sealer
      .stderr()
      .slice(mark)
      .split('\n')
      .filter((line) => line.includes('auto-unseal: no key-encryption key')).length;

  async function restart(): Promise<void> {
    client.close();
    await sealer.restart('SIGKILL');
    client = await sealer.client();
  }

  beforeAll(async () => {
    kbs = await startKbsDouble();
    kbs.resources.set(RESOURCE, kek);
    sealer = await startSealerProcess({
      env: { KMS_SEALER_UNSEAL_KBS_URL: kbs.url, KMS_SEALER_UNSEAL_CA: kbs.caPem, KMS_SEALER_UNSEAL_RETRY_SECONDS: '1' },
    });
    client = await sealer.client();
  });

  afterAll(async () => {
    client?.close();
    await sealer?.cleanup();
    await kbs?.cleanup();
  });

  it('wraps the first root key under the KEK, and a restart unseals without shares', async () => {
    const { rootKeyId: id, shares } = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: null });
    shares.forEach((share) => secrets.addShare(share));
    current = { id, shares };
    const key = await keyOf(shares, 2);
    const { wrap } = await until('the wrap', () => storedWrap(sealer));
    expect(wrap).toMatchObject({ format: 1, kind: 'auto-unseal', rootKeyId: id });
    expect(openWrap(kek, wrap).equals(key)).toBe(true);

    kbs.requests.length = 0;
    const stored = (await storedWrap(sealer))!.raw;
    await restart();
    await unsealedAs(client, id);
    // It attested to the KBS before it got the KEK: auth, attest, then the resource.
    expect(kbs.requests).toEqual(['POST /kbs/v0/auth 200', 'POST /kbs/v0/attest 200', `GET /kbs/v0/resource/${RESOURCE} 200`]);
    await until('the log line', async () => (sealer.messages().some((m) => m.startsWith(`auto-unseal: unsealed with root key ${id}`)) ? true : undefined));
    // The key it unwrapped is not wrapped again: a restart writes nothing (nor can a kill interrupt a write).
    expect((await storedWrap(sealer))!.raw.equals(stored)).toBe(true);
  });

  it('re-wraps the new root key when a rotation is verified, and a restart unseals with it', async () => {
    const rotated = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: current.id });
    rotated.shares.forEach((share) => secrets.addShare(share));
    expect((await storedWrap(sealer))!.wrap.rootKeyId).toBe(current.id); // pending keys are not wrapped
    await client.verifyShares(rotated.shares.slice(0, 2));
    const key = await keyOf(rotated.shares, 2);
    const { wrap } = (await storedWrap(sealer))!;
    expect(wrap.rootKeyId).toBe(rotated.rootKeyId);
    expect(openWrap(kek, wrap).equals(key)).toBe(true);
    current = { id: rotated.rootKeyId, shares: rotated.shares };
    await restart();
    await unsealedAs(client, current.id);
  });

  it('KBS unreachable at start: stays sealed, retries, and shares still recover', async () => {
    await kbs.stop();
    const mark = sealer.stderr().length;
    await restart();
    await until('three failed attempts', async () => (failedAttempts(mark) >= 3 ? true : undefined));
    expect(await client.sealStatus()).toMatchObject({ sealed: true, rootKeyId: current.id });
    for (const share of current.shares.slice(0, 2)) await client.submitShare(share);
    expect(await client.sealStatus()).toMatchObject({ sealed: false, rootKeyId: current.id });
  });

  it('KBS back while sealed: a retry unseals without shares', async () => {
    const mark = sealer.stderr().length;
    await restart(); // KBS still down
    await until('a failed attempt', async () => (failedAttempts(mark) >= 1 ? true : undefined));
    expect((await client.sealStatus()).sealed).toBe(true);
    // Custodians seal their shares for a recovery; whoever relays them holds them back.
    const answer = await client.recoveryKey(randomBytes(32).toString('base64url'));
    const held = await Promise.all(current.shares.slice(0, 2).map((share) => sealForRecovery(answer as never, share)));
    await kbs.start();
    await unsealedAs(client, current.id);
    // Unsealed without them, the service made a new recovery key: as the current shares they name no custodians.
    const before = await client.sealStatus();
    const refused = await client
      .installRootKey({ t: 2, n: 3, expectedCurrentId: current.id, custodians: (await custodians(3)).map((each) => each.jwk), currentShares: held })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(refused).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining("could not be decrypted with this sealing service's recovery key") });
    expect(await client.sealStatus()).toEqual(before);
  });

  it("a KBS whose policy refuses this sealer's evidence: stays sealed, and a retry unseals once it releases", async () => {
    kbs.release = () => false;
    const mark = sealer.stderr().length;
    await restart();
    await until('a refused attempt', async () => (sealer.stderr().slice(mark).includes('get resource: the KBS answered 403') ? true : undefined));
    expect(kbs.requests).toContain(`GET /kbs/v0/resource/${RESOURCE} 403`);
    expect((await client.sealStatus()).sealed).toBe(true);
    kbs.release = () => true;
    await unsealedAs(client, current.id);
  });

  it('a KBS that now serves another KEK: stays sealed, and nothing is re-wrapped under it', async () => {
    const before = (await storedWrap(sealer))!.raw;
    kbs.resources.set(RESOURCE, remember(randomBytes(32)));
    await restart();
    await until('the refusal', async () => (sealer.stderr().includes('does not open sealer/auto-unseal.json') ? true : undefined));
    expect(await client.sealStatus()).toMatchObject({ sealed: true, rootKeyId: current.id });
    // Shares unseal; a verified rotation still leaves the wrap as it was (no silent switch of KEK).
    for (const share of current.shares.slice(0, 2)) await client.submitShare(share);
    const rotated = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: current.id });
    rotated.shares.forEach((share) => secrets.addShare(share));
    await client.verifyShares(rotated.shares.slice(0, 2));
    await keyOf(rotated.shares, 2);
    expect((await client.sealStatus()).rootKeyId).toBe(rotated.rootKeyId);
    expect((await storedWrap(sealer))!.raw.equals(before)).toBe(true);
    current = { id: rotated.rootKeyId, shares: rotated.shares };
  });

  it('a wrap that was edited in storage unseals nothing', async () => {
    kbs.resources.set(RESOURCE, kek);
    const { raw, wrap } = (await storedWrap(sealer))!;
    // Moved to the current key's id (the AAD no longer matches), or not a record at all.
    for (const edited of [JSON.stringify({ ...wrap, rootKeyId: current.id }), '{"format": 1', '']) {
      await writeFile(wrapPath(sealer), edited);
      const mark = sealer.stderr().length;
      await restart();
      await until('the refusal', async () => (sealer.stderr().slice(mark).includes('does not open sealer/auto-unseal.json') ? true : undefined));
      expect((await client.sealStatus()).sealed).toBe(true);
      expect((await readFile(wrapPath(sealer), 'utf8')) === edited).toBe(true);
    }
    await writeFile(wrapPath(sealer), raw);
  });

  it('a stale wrap (of a retired key) unseals nothing; shares then wrap the current key again', async () => {
    expect((await storedWrap(sealer))!.wrap.rootKeyId).not.toBe(current.id); // left by the refused KEK above
    const mark = sealer.stderr().length;
    await restart();
    await until('the failed unseal', async () => (sealer.stderr().slice(mark).includes('did not unseal') ? true : undefined));
    expect((await client.sealStatus()).sealed).toBe(true);
    for (const share of current.shares.slice(0, 2)) await client.submitShare(share);
    await until('the new wrap', async () => ((await storedWrap(sealer))?.wrap.rootKeyId === current.id ? true : undefined));
    await restart();
    await unsealedAs(client, current.id);
  });

  it('a deleted wrap: shares once, then it is wrapped again and restarts need none', async () => {
    await rm(wrapPath(sealer));
    const seen = kbs.requests.length;
    await restart();
    await until('the KEK', async () => (kbs.requests.slice(seen).includes(`GET /kbs/v0/resource/${RESOURCE} 200`) ? true : undefined));
    expect((await client.sealStatus()).sealed).toBe(true);
    for (const share of current.shares.slice(0, 2)) await client.submitShare(share);
    await until('the new wrap', async () => ((await storedWrap(sealer))?.wrap.rootKeyId === current.id ? true : undefined));
    await restart();
    await unsealedAs(client, current.id);
  });

  it('a wrap deleted or rolled back while it runs: a seal and recovery with shares wrap the current key again', async () => {
    await unsealedAs(client, current.id);
    for (const edit of ['delete', 'rollback'] as const) {
      const { raw } = (await storedWrap(sealer))!;
      // A wrap of a retired key, as a rollback to an older version would leave.
      const rotated = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: current.id });
      rotated.shares.forEach((share) => secrets.addShare(share));
      await client.verifyShares(rotated.shares.slice(0, 2));
      await keyOf(rotated.shares, 2);
      current = { id: rotated.rootKeyId, shares: rotated.shares };
      if (edit === 'delete') await rm(wrapPath(sealer));
      else await writeFile(wrapPath(sealer), raw);
      await client.seal();
      for (const share of current.shares.slice(0, 2)) await client.submitShare(share);
      await until(`the wrap again (${edit})`, async () => ((await storedWrap(sealer))?.wrap.rootKeyId === current.id ? true : undefined));
    }
    await restart();
    await unsealedAs(client, current.id);
  });

  it('keeps nothing in plaintext in storage: no root key, no KEK', async () => {
    const objects = await readFsObjects(sealer.dataDir);
    expect(objects.has('sealer/auto-unseal.json')).toBe(true);
    const all = [...objects.values()].map((body) => body.toString('latin1')).join('\n');
    expect(findSecrets(all, plaintexts)).toEqual([]);
    for (const secret of plaintexts) expect(all.includes(secret.toString('latin1'))).toBe(false);
  });
});

describe('auto-unseal from another sealing service acting as the KBS', () => {
  const upstreamKey = remember(randomBytes(32));
  let upstream: SealerProcess;
  let sealer: SealerProcess;

  beforeAll(async () => {
    upstream = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: upstreamKey.toString('base64') } });
    sealer = await startSealerProcess({
      env: {
        KMS_SEALER_UNSEAL_KBS_URL: upstream.url,
        KMS_SEALER_UNSEAL_RESOURCE: 'tee-kms/root-key/current',
        KMS_SEALER_UNSEAL_CA: await upstream.caPem(),
      },
    });
  });

  afterAll(async () => {
    await sealer?.cleanup();
    await upstream?.cleanup();
  });

  it("wraps under the upstream's root key, and unseals after a restart", async () => {
    let client = await sealer.client();
    const { rootKeyId: id, shares } = await client.installRootKey({ t: 2, n: 2, expectedCurrentId: null });
    shares.forEach((share) => secrets.addShare(share));
    const key = await keyOf(shares, 2);
    const { wrap } = await until('the wrap', () => storedWrap(sealer));
    expect(openWrap(upstreamKey, wrap).equals(key)).toBe(true);
    expect(rootKeyIdOf(key)).toBe(id);
    client.close();
    await sealer.restart('SIGKILL');
    client = await sealer.client();
    await unsealedAs(client, id);
    expect(upstream.requestLines()).toContain('GET /kbs/v0/resource/tee-kms/root-key/current 200');
    client.close();
  });
});

describe('auto-unseal configuration', () => {
  const store = new FsObjectStore('/nonexistent-tee-kms');
  const attester = new SampleAttester();
  const log = { info: () => {}, warn: () => {}, error: () => {} };
  const base = { KMS_SEALER_UNSEAL_KBS_URL: 'https://127.0.0.1:1' };

  it.each([
    ['no CA', base, 'needs exactly one of'],
    ['both CAs', { ...base, KMS_SEALER_UNSEAL_CA: 'x', KMS_SEALER_UNSEAL_CA_FILE: '/x' }, 'needs exactly one of'],
    ['mode 1', { ...base, KMS_SEALER_UNSEAL_CA: 'x', KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64') }, 'mode 2'],
    ['a CA that is not PEM', { ...base, KMS_SEALER_UNSEAL_CA: 'x' }, 'PEM certificate'],
    ['http', { ...base, KMS_SEALER_UNSEAL_KBS_URL: 'http://127.0.0.1:1', KMS_SEALER_UNSEAL_CA: 'x' }, 'https://'],
  ])('refuses %s', async (_label, env, message) => {
    await expect(configuredAutoUnseal(loadSealerOptions(env), store, attester, log)).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining(message),
    });
  });

  it('refuses a resource that is not <repository>/<type>/<tag>', () => {
    for (const resource of ['kek', 'a/b', 'a/b/c/d', 'a/../b', 'a/b/c?x']) {
      expect(() => loadSealerOptions({ ...base, KMS_SEALER_UNSEAL_RESOURCE: resource })).toThrow('<repository>/<type>/<tag>');
    }
  });

  it('refuses the CA from a file in production: a file is not measured', async () => {
    const previous = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      await expect(configuredAutoUnseal(loadSealerOptions({ ...base, KMS_SEALER_UNSEAL_CA_FILE: '/x' }), store, attester, log)).rejects.toMatchObject({
        code: 'CONFIG',
        message: expect.stringContaining('refused when NODE_ENV=production'),
      });
    } finally {
      process.env.NODE_ENV = previous;
    }
  });

  it('is off without KMS_SEALER_UNSEAL_KBS_URL', async () => {
    expect(await configuredAutoUnseal(loadSealerOptions({}), store, attester, log)).toBeUndefined();
  });
});
