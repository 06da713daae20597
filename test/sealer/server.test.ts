// The sealing service's own attestation route (GET /tee-kms/v1/attestation), which anyone who
// reaches its port may call without credentials, through real HTTPS to a sealing service started
// in this process with an attester whose quotes the test holds back: a flood makes at most two
// quotes at once, queues a few, and is answered 503 for the rest at once.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVIDENCE_RUNNING_MAX, EVIDENCE_WAITING_MAX } from '../../shared/attestation/public-evidence.js';
import { SampleAttester } from '../../shared/attestation/sample.js';
import { sealerPaths } from '../../shared/sealer-client/protocol.js';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import { startSealer, type RunningSealer } from '../../sealer/app.js';
import { loadSealerOptions } from '../../sealer/options.js';
import { httpCall, NO_METRICS, type HttpAnswer } from '../support/processes.js';

/** Sample evidence, each quote held until the test opens the gate; counts the quotes under way. */
class GatedAttester extends SampleAttester {
  running = 0;
  mostRunning = 0;
  #open!: () => void;
  readonly #gate = new Promise<void>((resolve) => (this.#open = resolve));

  open(): void {
    this.#open();
  }

  override async getEvidence(reportData: Uint8Array) {
    this.running++;
    this.mostRunning = Math.max(this.mostRunning, this.running);
    try {
      await this.#gate;
      return await super.getEvidence(reportData);
    } finally {
      this.running--;
    }
  }
}

describe('GET /tee-kms/v1/attestation under a flood', () => {
  let dataDir: string;
  let sealer: RunningSealer;
  let ca: string;
  const attester = new GatedAttester();

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-sealer-server-'));
    const options = loadSealerOptions({ KMS_SEALER_DATA_DIR: dataDir, KMS_SEALER_PORT: '0', KMS_SEALER_INSECURE_DEV_MODE: 'true', ...NO_METRICS });
    sealer = await startSealer(options, new FsObjectStore(dataDir), { attester });
    ca = await readFile(sealer.certFile, 'utf8');
  });
  afterAll(async () => {
    await sealer?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('makes at most two quotes at once and queues a few; the rest are answered 503 busy at once', async () => {
    const queued = EVIDENCE_RUNNING_MAX + EVIDENCE_WAITING_MAX;
    const count = queued + 12;
    const answered: HttpAnswer[] = [];
    const asked = Array.from({ length: count }, () =>
      httpCall(`${sealer.url}${sealerPaths.attestation}?nonce=${randomBytes(32).toString('base64url')}`, { ca }).then((answer) => {
        answered.push(answer);
        return answer;
      }),
    );
    // While the first quotes are held back, every request past the queue is answered.
    for (let waits = 0; answered.length < count - queued && waits < 500; waits++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(answered.map((answer) => answer.status)).toEqual(Array.from({ length: count - queued }, () => 503));
    expect(JSON.parse(answered[0]!.body)).toMatchObject({ status: 503, detail: 'too many attestation requests in progress; retry shortly' });
    attester.open();
    const statuses = (await Promise.all(asked)).map((answer) => answer.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(queued);
    expect(statuses.filter((status) => status === 503)).toHaveLength(count - queued);
    expect(attester.mostRunning).toBe(EVIDENCE_RUNNING_MAX);
  });
});
