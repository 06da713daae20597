import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import type { ObjectStore } from '../../shared/store/object-store.js';
import { createTestBucket, type TestBucket } from './s3.js';

/**
 * Whoever can write the bucket, acting without the KMS's code: the embedded store's files written
 * as files, S3 objects with the independent `minio` client. Writes overwrite, as the adversary may.
 */
export interface StorageAdversary {
  read(key: string): Promise<Buffer | undefined>;
  write(key: string, body: Buffer | string): Promise<void>;
  /** Many writes, a few at a time (a planted graph of hundreds of objects). */
  writeAll(objects: ReadonlyMap<string, Buffer | string>): Promise<void>;
}

/** The embedded store's layout: one file per object under `<dataDir>/objects`. */
export function fsAdversary(dataDir: string): StorageAdversary {
  const path = (key: string) => join(dataDir, 'objects', key);
  return withWriteAll({
    async read(key) {
      return readFile(path(key)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
    },
    async write(key, body) {
      await mkdir(dirname(path(key)), { recursive: true });
      await writeFile(path(key), body);
    },
  });
}

export function s3Adversary(bucket: TestBucket): StorageAdversary {
  return withWriteAll({
    async read(key) {
      try {
        const chunks: Buffer[] = [];
        for await (const chunk of await bucket.reader.getObject(bucket.bucket, key)) chunks.push(chunk as Buffer);
        return Buffer.concat(chunks);
      } catch (error) {
        if ((error as { code?: string }).code === 'NoSuchKey') return undefined;
        throw error;
      }
    },
    async write(key, body) {
      await bucket.reader.putObject(bucket.bucket, key, typeof body === 'string' ? Buffer.from(body) : body);
    },
  });
}

function withWriteAll(one: Omit<StorageAdversary, 'writeAll'>): StorageAdversary {
  return {
    ...one,
    async writeAll(objects) {
      const entries = [...objects];
      for (let i = 0; i < entries.length; i += 16) {
        await Promise.all(entries.slice(i, i + 16).map(([key, body]) => one.write(key, body)));
      }
    },
  };
}

/** A store for the code under test, beside an adversary writing the same objects its own way. */
export interface AttackedStorage {
  readonly store: ObjectStore;
  readonly adversary: StorageAdversary;
  cleanup(): Promise<void>;
}

/** Both kinds of storage the KMS runs on: each attack test runs on every one. */
export const attackedStorages: Record<string, () => Promise<AttackedStorage>> = {
  'embedded store': async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-attacked-'));
    const store = new FsObjectStore(dir);
    return { store, adversary: fsAdversary(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
  'S3 (Ceph RGW)': async () => {
    const bucket = await createTestBucket();
    return { store: bucket.store(), adversary: s3Adversary(bucket), cleanup: () => bucket.remove() };
  },
};
