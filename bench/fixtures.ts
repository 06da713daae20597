/**
 * Data the bench needs in the bucket, written with the KMS's own code (so the records are exactly
 * what the functions write): one user, one primary key, one warm data key, and as many extra data
 * keys as the cold-read cases need (topped up here when the POST cases made too few).
 */
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { KeyStore, type Principal } from '../shared/keys/keystore.js';
import { RootKeyring } from '../shared/root-key/keyring.js';
import { StaticRootKeySource } from '../shared/root-key/source.js';
import { FsObjectStore } from '../shared/store/fs-store.js';
import { S3ObjectStore } from '../shared/store/s3-store.js';

export interface S3Settings {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export const USER = 'bench';
export const PRIMARY_KEY = 'pk';
export const WARM_KEY = 'warm';

export class Fixtures {
  readonly token = randomBytes(24).toString('hex');
  readonly bucket = `bench-${randomBytes(6).toString('hex')}`;
  readonly client: S3Client;
  readonly store: S3ObjectStore;
  readonly keys: KeyStore;
  #principal: Principal | undefined;

  constructor(
    readonly s3: S3Settings,
    readonly rootKey: Buffer,
  ) {
    this.client = new S3Client({
      endpoint: s3.endpoint,
      region: s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    this.store = new S3ObjectStore({ ...s3, bucket: this.bucket, prefix: '', forcePathStyle: true, maxSockets: 64 });
    this.keys = new KeyStore(this.store, new RootKeyring(new StaticRootKeySource(rootKey), this.store), { cacheTtlMs: 3_600_000, cacheEntries: 10 });
  }

  /** Creates the bucket, the user, the primary key and the warm data key. */
  async setUp(): Promise<void> {
    await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    await this.keys.enrollUser(USER, this.token);
    this.#principal = await this.keys.authenticate(USER, this.token);
    await this.keys.createPrimaryKey(this.#principal, PRIMARY_KEY);
    await this.keys.createDataKey(this.#principal, PRIMARY_KEY, WARM_KEY);
  }

  /** Names of every data key under the bench primary key except the warm one. */
  async dataKeyNames(): Promise<string[]> {
    const prefix = `data-keys/${USER}/${PRIMARY_KEY}/`;
    const names: string[] = [];
    for await (const key of this.store.list(prefix)) {
      const name = key.slice(prefix.length).replace(/\.json$/, '');
      if (name !== WARM_KEY) names.push(name);
    }
    return names;
  }

  /** Creates `count` more data keys (`fill-…`), `parallel` at a time. */
  async addDataKeys(count: number, parallel = 32): Promise<void> {
    const principal = this.#principal!;
    const tag = randomBytes(3).toString('hex');
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < count) await this.keys.createDataKey(principal, PRIMARY_KEY, `fill-${tag}-${next++}`);
      }),
    );
  }

  /** Raw objects under `prefix` (for the raw GET cases). */
  async rawKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return keys;
  }

  async addRawObjects(prefix: string, count: number, bodyBytes: number, parallel = 32): Promise<void> {
    const body = Buffer.alloc(bodyBytes, 'x');
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next < count) await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: `${prefix}fill-${next++}`, Body: body }));
      }),
    );
  }

  /** Size of the warm data key's record: the raw-S3 cases use objects of this size. */
  async recordBytes(): Promise<number> {
    const object = await this.store.get(`data-keys/${USER}/${PRIMARY_KEY}/${WARM_KEY}.json`);
    return object?.body.length ?? 300;
  }

  close(): void {
    void this.store.close();
    this.client.destroy();
  }
}

/**
 * The warm-read fixture in an embedded store at `dataDir`: user `bench` with `token`, primary key
 * `pk`, data key `warm`, wrapped under `rootKey` (for the A/B and profiling tools).
 */
export async function seedWarmReadStore(dataDir: string, rootKey: Buffer, token: string): Promise<void> {
  const store = new FsObjectStore(dataDir);
  const keys = new KeyStore(store, new RootKeyring(new StaticRootKeySource(rootKey), store), { cacheTtlMs: 60_000, cacheEntries: 10 });
  await keys.enrollUser(USER, token);
  const principal = await keys.authenticate(USER, token);
  await keys.createPrimaryKey(principal, PRIMARY_KEY);
  await keys.createDataKey(principal, PRIMARY_KEY, WARM_KEY);
}
