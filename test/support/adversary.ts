import { randomBytes } from 'node:crypto';
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
  remove(key: string): Promise<void>;
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
    async remove(key) {
      await rm(path(key), { force: true });
    },
  });
}

export function s3Adversary(bucket: TestBucket): StorageAdversary {
  return withWriteAll({
    read: (key) => bucket.read(key),
    async write(key, body) {
      await bucket.reader.putObject(bucket.bucket, key, typeof body === 'string' ? Buffer.from(body) : body);
    },
    async remove(key) {
      await bucket.reader.removeObject(bucket.bucket, key);
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
  /** The environment that points a KMS process (function or sealing service) at this storage. */
  readonly env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** Both kinds of storage the KMS runs on: each attack test runs on every one. */
export const attackedStorages: Record<string, () => Promise<AttackedStorage>> = {
  'embedded store': async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-attacked-'));
    const store = new FsObjectStore(dir);
    return { store, adversary: fsAdversary(dir), env: { KMS_STORE: 'fs', KMS_DATA_DIR: dir }, cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
  'S3 (Ceph RGW)': async () => {
    const bucket = await createTestBucket();
    return { store: bucket.store(), adversary: s3Adversary(bucket), env: bucket.env, cleanup: () => bucket.remove() };
  },
};

/**
 * Root-key links as storage holds them (`root-keys/<id>/<successor>.json`, a previous root key
 * wrapped under its successor), planted in `layers` layers of `width` made-up ids, each id linked
 * to every id of the next layer. None leads to a real key, and the paths from the top multiply:
 * width^(layers-1) of them. Returns the top layer's first id and the objects to write.
 */
export function plantedLinkGraph(layers: number, width: number): { top: string; objects: Map<string, string> } {
  const ids = Array.from({ length: layers }, () => Array.from({ length: width }, () => randomBytes(16).toString('hex')));
  const objects = new Map<string, string>();
  const b64u = (n: number) => randomBytes(n).toString('base64url');
  for (let layer = 0; layer + 1 < layers; layer++) {
    for (const id of ids[layer]!) {
      for (const successor of ids[layer + 1]!) {
        const link = {
          format: 1,
          kind: 'previous-root-key',
          id,
          wrappedUnder: successor,
          wrapped: { iv: b64u(12), ciphertext: b64u(32), tag: b64u(16) },
          createdAt: new Date().toISOString(),
        };
        objects.set(`root-keys/${id}/${successor}.json`, JSON.stringify(link));
      }
    }
  }
  return { top: ids[0]![0]!, objects };
}

/** A stored primary key record, edited to name another root key id. */
export async function renameRootKeyOf(adversary: StorageAdversary, key: string, rootKeyId: string): Promise<void> {
  const record = JSON.parse((await adversary.read(key))!.toString()) as Record<string, unknown>;
  await adversary.write(key, JSON.stringify({ ...record, rootKeyId }));
}
