import { randomBytes } from 'node:crypto';
import { DeleteObjectCommand, ListObjectVersionsCommand, S3Client } from '@aws-sdk/client-s3';
import { Client as MinioClient } from 'minio';
import { inject } from 'vitest';
import { S3ObjectStore } from '../../shared/store/s3-store.js';
import type { S3Env } from './rgw.js';

/**
 * A fresh bucket on the test S3 server, with an independent reader: the `minio` client, so proofs
 * of what is stored do not rest on the code under test.
 */
export interface TestBucket {
  readonly s3: S3Env;
  readonly bucket: string;
  readonly reader: MinioClient;
  /** Environment for a KMS process using this bucket. */
  readonly env: Record<string, string>;
  store(prefix?: string): S3ObjectStore;
  /** One object's body (undefined when absent), read by the independent client. */
  read(key: string): Promise<Buffer | undefined>;
  /** Every object in the bucket (or under `prefix`), with its body, read by the independent client. */
  readAll(prefix?: string): Promise<Map<string, Buffer>>;
  remove(): Promise<void>;
}

/** `versioned`: with versioning enabled, as an administrator may set it (and RGW 16.2 then ignores conditional writes). */
export async function createTestBucket({ versioned = false } = {}): Promise<TestBucket> {
  const s3 = inject('s3');
  const url = new URL(s3.endpoint);
  const reader = new MinioClient({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: url.protocol === 'https:',
    accessKey: s3.accessKeyId,
    secretKey: s3.secretAccessKey,
    region: s3.region,
    pathStyle: true,
  });
  const bucket = `test-${randomBytes(6).toString('hex')}`;
  await reader.makeBucket(bucket, s3.region);
  if (versioned) await reader.setBucketVersioning(bucket, { Status: 'Enabled' });
  const stores: S3ObjectStore[] = [];
  const read = async (key: string): Promise<Buffer | undefined> => {
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of await reader.getObject(bucket, key)) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    } catch (error) {
      if ((error as { code?: string }).code === 'NoSuchKey') return undefined;
      throw error;
    }
  };
  return {
    s3,
    bucket,
    reader,
    env: {
      KMS_STORE: 's3',
      KMS_S3_ENDPOINT: s3.endpoint,
      KMS_S3_REGION: s3.region,
      KMS_S3_BUCKET: bucket,
      KMS_S3_ACCESS_KEY_ID: s3.accessKeyId,
      KMS_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    },
    store(prefix = '') {
      const store = new S3ObjectStore({ ...s3, bucket, prefix, forcePathStyle: true });
      stores.push(store);
      return store;
    },
    read,
    async readAll(prefix = '') {
      const out = new Map<string, Buffer>();
      const names: string[] = [];
      for await (const item of reader.listObjectsV2(bucket, prefix, true)) {
        if (item.name) names.push(item.name);
      }
      for (let i = 0; i < names.length; i += 32) {
        await Promise.all(
          names.slice(i, i + 32).map(async (name) => {
            const body = await read(name);
            if (body !== undefined) out.set(name, body);
          }),
        );
      }
      return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
    },
    async remove() {
      await Promise.all(stores.map((s) => s.close()));
      const names: string[] = [];
      for await (const item of reader.listObjectsV2(bucket, '', true)) if (item.name) names.push(item.name);
      if (names.length > 0) await reader.removeObjects(bucket, names);
      await removeEveryVersion(s3, bucket); // a bucket versioned once is never empty otherwise
      await reader.removeBucket(bucket);
    },
  };
}

/** Deletes every version and delete marker (the `minio` client's version listing fails RGW's signature check). */
async function removeEveryVersion(s3: S3Env, bucket: string): Promise<void> {
  const sdk = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  try {
    for (;;) {
      const page = await sdk.send(new ListObjectVersionsCommand({ Bucket: bucket }));
      const versions = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])];
      if (versions.length === 0) return;
      for (let i = 0; i < versions.length; i += 32) {
        await Promise.all(versions.slice(i, i + 32).map((v) => sdk.send(new DeleteObjectCommand({ Bucket: bucket, Key: v.Key, VersionId: v.VersionId }))));
      }
    }
  } finally {
    sdk.destroy();
  }
}
