import { describe, expect, it } from 'vitest';
import { S3ObjectStore } from '../../../shared/store/s3-store.js';
import { createTestBucket } from '../../support/s3.js';
import { describeObjectStore } from './conformance.js';
import { inject } from 'vitest';

async function readWithMinio(bucket: Awaited<ReturnType<typeof createTestBucket>>, key: string): Promise<Buffer | undefined> {
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of await bucket.reader.getObject(bucket.bucket, key)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  } catch (error) {
    if ((error as { code?: string }).code === 'NoSuchKey') return undefined;
    throw error;
  }
}

describeObjectStore('S3 (Ceph RGW)', async () => {
  const bucket = await createTestBucket();
  return { store: bucket.store(), readRaw: (key) => readWithMinio(bucket, key), cleanup: () => bucket.remove() };
});

describeObjectStore('S3 (Ceph RGW) with a key prefix', async () => {
  const bucket = await createTestBucket();
  return {
    store: bucket.store('deployment-a/'),
    readRaw: (key) => readWithMinio(bucket, `deployment-a/${key}`),
    cleanup: () => bucket.remove(),
  };
});

describe('S3 store failures', () => {
  it('reports a wrong secret as storage unavailable, without the secret', async () => {
    const bucket = await createTestBucket();
    const s3 = inject('s3');
    const wrongSecret = 'wrong-secret-0123456789abcdefghijklmnopqrs';
    const store = new S3ObjectStore({ ...s3, secretAccessKey: wrongSecret, bucket: bucket.bucket, prefix: '', forcePathStyle: true });
    const error = await store.create('k.json', Buffer.from('x')).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: expect.stringContaining('refused our credentials') });
    expect(String((error as Error).message)).not.toContain(wrongSecret);
    expect(await readWithMinio(bucket, 'k.json')).toBeUndefined();
    await store.close();
    await bucket.remove();
  });

  it('reports an unreachable endpoint as storage unavailable', async () => {
    const s3 = inject('s3');
    const store = new S3ObjectStore({ ...s3, endpoint: 'http://127.0.0.1:9', bucket: 'none', prefix: '', forcePathStyle: true });
    await expect(store.get('k.json')).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: expect.stringContaining('cannot be reached') });
    await store.close();
  });

  it('reports a missing bucket as storage unavailable, not as a missing key', async () => {
    const s3 = inject('s3');
    const store = new S3ObjectStore({ ...s3, bucket: 'no-such-bucket-tee-kms', prefix: '', forcePathStyle: true });
    await expect(store.get('k.json')).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
    await expect(store.create('k.json', Buffer.from('x'))).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
    await store.close();
  });
});
