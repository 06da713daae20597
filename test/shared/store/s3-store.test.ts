import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, inject, it } from 'vitest';
import { S3ObjectStore } from '../../../shared/store/s3-store.js';
import { startLossyProxy } from '../../support/lossy-proxy.js';
import { createTestBucket } from '../../support/s3.js';
import { describeObjectStore } from './conformance.js';

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

describeObjectStore('S3 (Ceph RGW), versioned bucket', async () => {
  const bucket = await createTestBucket({ versioned: true });
  return { store: bucket.store(), readRaw: (key) => readWithMinio(bucket, key), cleanup: () => bucket.remove() };
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

describe('S3 store when answers are lost on the way back', () => {
  async function setUp() {
    const bucket = await createTestBucket();
    const proxy = await startLossyProxy(bucket.s3.endpoint);
    const store = new S3ObjectStore({ ...bucket.s3, endpoint: proxy.endpoint, bucket: bucket.bucket, prefix: '', forcePathStyle: true });
    const done = async () => {
      await store.close();
      await proxy.close();
      await bucket.remove();
    };
    return { bucket, proxy, store, done };
  }

  it('reports a create whose answer was lost as created, when the stored object is its own', async () => {
    const { bucket, proxy, store, done } = await setUp();
    proxy.loseAnswers(1);
    expect(await store.create('k.json', Buffer.from('mine'))).toBe(true);
    expect(proxy.lost).toBe(1);
    expect((await readWithMinio(bucket, 'k.json'))?.toString()).toBe('mine');
    await done();
  });

  it('reports a create as refused when the object there is somebody else’s', async () => {
    const { bucket, proxy, store, done } = await setUp();
    expect(await bucket.store().create('k.json', Buffer.from('theirs'))).toBe(true);
    proxy.loseAnswers(1);
    expect(await store.create('k.json', Buffer.from('mine'))).toBe(false);
    expect(proxy.lost).toBe(1);
    expect((await readWithMinio(bucket, 'k.json'))?.toString()).toBe('theirs');
    await done();
  });

  it('reports a replace whose answer was lost as applied', async () => {
    const { bucket, proxy, store, done } = await setUp();
    expect(await store.create('k.json', Buffer.from('v1'))).toBe(true);
    const v1 = await store.get('k.json');
    proxy.loseAnswers(1);
    expect(await store.replace('k.json', Buffer.from('v2'), v1!.etag)).toBe(true);
    expect(proxy.lost).toBe(1);
    expect((await readWithMinio(bucket, 'k.json'))?.toString()).toBe('v2');
    await done();
  });

  it('retries a read whose answer was lost, and gives up with a clear error when every answer is', async () => {
    const { proxy, store, done } = await setUp();
    expect(await store.create('k.json', Buffer.from('v1'))).toBe(true);
    proxy.loseAnswers(1);
    expect((await store.get('k.json'))?.body.toString()).toBe('v1');
    proxy.loseAnswers(10);
    await expect(store.get('k.json')).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: expect.stringContaining('cannot be reached') });
    await done();
  });
});

describe('S3 store answer bound', () => {
  it('refuses an object larger than 16 MiB at once, as storage unavailable, without retrying it', async () => {
    const bucket = await createTestBucket();
    const s3 = inject('s3');
    const proxy = await startLossyProxy(s3.endpoint);
    const store = new S3ObjectStore({ ...s3, endpoint: proxy.endpoint, bucket: bucket.bucket, prefix: '', forcePathStyle: true });
    expect(await store.create('big.json', Buffer.alloc(16 * 1024 * 1024 + 1, 0x20))).toBe(true);
    await expect(store.get('big.json')).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE', message: 'object storage answered more than 16 MiB' });
    expect(proxy.requests('GET')).toBe(1); // the answer was cut off, and not asked for again
    await store.close();
    await proxy.close();
    await bucket.remove();
  });
});

describe('S3 store interoperability with the AWS SDK', () => {
  it('writes objects the SDK reads with the same ETag, and honours the SDK’s writes by that ETag', async () => {
    const bucket = await createTestBucket();
    const sdk = new S3Client({
      endpoint: bucket.s3.endpoint,
      region: bucket.s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: bucket.s3.accessKeyId, secretAccessKey: bucket.s3.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const store = bucket.store('ns/');
    expect(await store.create('a/k.json', Buffer.from('{"v":1}'))).toBe(true);
    const ours = await store.get('a/k.json');
    const theirs = await sdk.send(new GetObjectCommand({ Bucket: bucket.bucket, Key: 'ns/a/k.json' }));
    expect(Buffer.from(await theirs.Body!.transformToByteArray()).toString()).toBe('{"v":1}');
    expect(theirs.ETag?.replace(/"/g, '')).toBe(ours!.etag);

    await sdk.send(new PutObjectCommand({ Bucket: bucket.bucket, Key: 'ns/a/k.json', Body: '{"v":2}', IfMatch: ours!.etag }));
    expect(await store.replace('a/k.json', Buffer.from('{"v":3}'), ours!.etag)).toBe(false);
    expect((await store.get('a/k.json'))?.body.toString()).toBe('{"v":2}');
    sdk.destroy();
    await bucket.remove();
  });
});
