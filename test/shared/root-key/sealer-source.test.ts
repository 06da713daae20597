/**
 * SealerRootKeySource's rules, driven through a scripted sealing-service client (the real source,
 * errors of the real client's classes): which failures the held key rides out and for how long,
 * which drop it at once, and that a forced refresh never reuses a fetch started before it. The
 * same rules against real processes: test/functions/sealer-outage.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { KmsError } from '../../../shared/errors.js';
import { KbsResponseError, KbsTransportError } from '../../../shared/kbs/errors.js';
import { SealerRootKeySource } from '../../../shared/root-key/sealer-source.js';
import type { SealerClient } from '../../../shared/sealer-client/client.js';
import { isSealerOutage } from '../../../shared/sealer-client/outage.js';
import { sealerProblems } from '../../../shared/sealer-client/protocol.js';
import { kmsFailure } from '../../support/failure.js';

const URL = 'https://sealer.test:9877';
const refused = () => new KmsError('ROOT_KEY_UNAVAILABLE', 'cannot reach', { cause: new KbsTransportError('unreachable', 'ECONNREFUSED', URL) });
const unsigned = () =>
  new KmsError('ROOT_KEY_UNAVAILABLE', 'answered without its signature', {
    cause: new KbsResponseError(503, { type: sealerProblems.sealed, detail: 'sealed' }, 'get resource', false),
  });
const signedBusy = () =>
  new KmsError('ROOT_KEY_UNAVAILABLE', 'storage unavailable', {
    cause: new KbsResponseError(503, { type: sealerProblems.storageUnavailable, detail: '' }, 'get resource', true),
  });
const signedRefusal = () =>
  new KmsError('ROOT_KEY_UNAVAILABLE', 'refused this TEE', {
    cause: new KbsResponseError(403, { type: sealerProblems.forbidden, detail: '' }, 'get resource', true),
  });
const sealed = () => new KmsError('SEALED', 'the sealing service is sealed');
/** This function's own attestation agent failed: the service was not even asked. */
const agentDown = () => new KmsError('ATTESTATION_UNAVAILABLE', 'the attestation agent at http://127.0.0.1:8006 cannot be reached');
const sealedAs = (sealedReason: string) => new KmsError('SEALED', 'the sealing service is sealed', { details: { sealed: true, sealedReason } });

type Answer = Buffer | KmsError | Promise<Buffer>;

/** A sealing service client answering rootKey() and currentRootKeyId() from a script. */
class ScriptedSealer {
  answer: Answer = randomBytes(32);
  rootKeyCalls = 0;

  async rootKey(): Promise<{ id: string; key: Buffer }> {
    this.rootKeyCalls++;
    const answer = await this.#now();
    return { id: rootKeyId(answer), key: answer };
  }

  async currentRootKeyId(): Promise<string> {
    return rootKeyId(await this.#now());
  }

  async #now(): Promise<Buffer> {
    const answer = this.answer;
    if (answer instanceof KmsError) throw answer;
    return answer;
  }
}

let sealer: ScriptedSealer;
const source = (graceMs: number, refreshMs = 1_000) => new SealerRootKeySource(async () => sealer as unknown as SealerClient, { refreshMs, graceMs });
const idOf = (key: Answer) => rootKeyId(key as Buffer);

beforeEach(() => {
  sealer = new ScriptedSealer();
  vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 });
});

afterEach(() => {
  vi.useRealTimers();
});

describe('isSealerOutage', () => {
  it('counts silence, unsigned answers, signed temporary failures and an attestation agent that is down as an outage; the service’s signed word is not', () => {
    expect([refused(), unsigned(), signedBusy(), agentDown()].map(isSealerOutage)).toEqual([true, true, true, true]);
    expect([sealed(), signedRefusal(), new KmsError('INTEGRITY', 'tampered'), new Error('bug')].map(isSealerOutage)).toEqual([false, false, false, false]);
  });

  it('counts "sealed because it is starting" as an outage; an operator\'s seal, a rotation, and an answer without the reason are not', () => {
    expect(isSealerOutage(sealedAs('starting'))).toBe(true);
    expect(['restarted', 'operator', 'rotated', 'uninitialized', 'Starting'].map((reason) => isSealerOutage(sealedAs(reason)))).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
    expect(isSealerOutage(sealed())).toBe(false); // an older sealing service: no sealedReason
  });
});

describe('SealerRootKeySource in a sealer outage', () => {
  it('serves the held key while no sealing service answers, until the grace period after its release ends', async () => {
    const keys = source(10_000);
    const key = sealer.answer;
    expect((await keys.current()).id).toBe(idOf(key));
    for (const failure of [refused(), unsigned(), agentDown(), signedBusy()]) {
      sealer.answer = failure;
      vi.advanceTimersByTime(1_500); // past the refresh
      expect((await keys.current()).id).toBe(idOf(key));
      expect(await keys.currentId()).toBe(idOf(key)); // new keys are wrapped under it too
    }
    vi.setSystemTime(1_000_000 + 10_000); // the grace period after the release is over
    expect(await kmsFailure(keys.current())).toMatchObject({ code: 'ROOT_KEY_UNAVAILABLE' });
    sealer.answer = key; // back: served again, the grace period counted from this release
    expect((await keys.current()).id).toBe(idOf(key));
  });

  it("rides out a replica sealed because it is starting, and drops the key at an operator's seal", async () => {
    const keys = source(60_000);
    const key = sealer.answer;
    await keys.current();
    sealer.answer = sealedAs('starting');
    vi.advanceTimersByTime(1_500);
    expect((await keys.current()).id).toBe(idOf(key));
    expect(await keys.currentId()).toBe(idOf(key));
    sealer.answer = sealedAs('operator');
    vi.advanceTimersByTime(1_500);
    expect(await kmsFailure(keys.current())).toMatchObject({ code: 'SEALED' });
  });

  it('asks the sealing service again at most every few seconds in grace, not on every request (nor on every create)', async () => {
    const keys = source(60_000, 1_000);
    const key = sealer.answer;
    await keys.current();
    sealer.answer = refused();
    vi.advanceTimersByTime(1_001);
    await keys.current();
    const asked = sealer.rootKeyCalls;
    sealer.answer = new Promise<Buffer>(() => {}); // a sealing service that never answers now
    for (let i = 0; i < 10; i++) expect([(await keys.current()).id, await keys.currentId()]).toEqual([idOf(key), idOf(key)]);
    expect(sealer.rootKeyCalls).toBe(asked);
    sealer.answer = refused();
    vi.advanceTimersByTime(1_001); // min(refresh, 5 s) later it asks again
    await keys.current();
    expect(sealer.rootKeyCalls).toBe(asked + 1);
  });

  it('drops the key at once on a signed "sealed" or a signed refusal of this TEE, grace or not', async () => {
    for (const failure of [sealed(), signedRefusal()]) {
      const keys = source(600_000);
      sealer.answer = randomBytes(32);
      await keys.current();
      sealer.answer = refused();
      vi.advanceTimersByTime(1_500);
      await keys.current(); // in grace
      sealer.answer = failure;
      vi.advanceTimersByTime(6_000);
      expect(await kmsFailure(keys.current())).toBe(failure);
      sealer.answer = refused(); // silence again: nothing is held to ride it out with
      expect(await kmsFailure(keys.current())).toMatchObject({ code: 'ROOT_KEY_UNAVAILABLE' });
    }
  });

  it('drops the key when the seal status says sealed, without waiting for the refresh', async () => {
    const keys = source(600_000, 60_000);
    await keys.current();
    sealer.answer = sealed();
    expect((await kmsFailure(keys.currentId())).code).toBe('SEALED');
    expect((await kmsFailure(keys.current())).code).toBe('SEALED');
  });

  it('with KMS_ROOT_KEY_GRACE_SECONDS=0 an outage refuses at once', async () => {
    const keys = source(0);
    await keys.current();
    sealer.answer = refused();
    vi.advanceTimersByTime(1_001);
    expect((await kmsFailure(keys.current())).code).toBe('ROOT_KEY_UNAVAILABLE');
  });

  it('gives a forced refresh no grace (the held key may be the stale one), but keeps the key for the others', async () => {
    const keys = source(600_000);
    const key = sealer.answer;
    await keys.current();
    sealer.answer = refused();
    expect((await kmsFailure(keys.current({ refresh: true }))).code).toBe('ROOT_KEY_UNAVAILABLE');
    vi.advanceTimersByTime(1_500);
    expect((await keys.current()).id).toBe(idOf(key));
  });
});

describe('SealerRootKeySource refreshes', () => {
  it('a forced refresh starts its own fetch instead of joining one started before it, and the older answer never replaces the newer', async () => {
    const keys = source(600_000, 1);
    let releaseOld!: (key: Buffer) => void;
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    sealer.answer = new Promise<Buffer>((resolve) => (releaseOld = resolve));
    const before = keys.current(); // in flight, from before the rotation
    await vi.waitFor(() => expect(sealer.rootKeyCalls).toBe(1));
    sealer.answer = newKey; // the rotation
    expect((await keys.current({ refresh: true })).id).toBe(rootKeyId(newKey));
    releaseOld(oldKey);
    expect((await before).id).toBe(rootKeyId(oldKey)); // its own caller asked before the change
    expect(sealer.rootKeyCalls).toBe(2);
    sealer.answer = refused(); // and what is held is the newer key
    expect(await keys.currentId()).toBe(rootKeyId(newKey));
  });

  it('a caller that joined a fetch started before a newer key was applied does not drop that key when the older fetch fails', async () => {
    const keys = source(600_000, 1);
    let failOld!: (error: KmsError) => void;
    const newKey = randomBytes(32);
    sealer.answer = new Promise<Buffer>((_, reject) => (failOld = reject));
    const starter = kmsFailure(keys.current()); // a warm-up, before the sealing service is initialized
    const joiner = kmsFailure(keys.current()); // a request arriving meanwhile shares that fetch
    await vi.waitFor(() => expect(sealer.rootKeyCalls).toBe(1));
    sealer.answer = newKey; // the first rotate initializes the service and refreshes
    expect((await keys.current({ refresh: true })).id).toBe(rootKeyId(newKey));
    failOld(sealedAs('uninitialized')); // the older fetch heard "not initialized" before that
    expect((await starter).code).toBe('SEALED');
    expect((await joiner).code).toBe('SEALED');
    sealer.answer = refused();
    expect(await keys.currentId()).toBe(rootKeyId(newKey)); // still held, in grace
  });

  it('concurrent unforced callers share one fetch', async () => {
    const keys = source(0);
    await Promise.all(Array.from({ length: 5 }, () => keys.current()));
    expect(sealer.rootKeyCalls).toBe(1);
  });
});
