import { KmsError } from '../errors.js';
import { CheckedObjectStore } from './checked-store.js';
import { probeConditionalWrites } from './conditional-writes.js';
import { FsObjectStore } from './fs-store.js';
import { MeteredObjectStore } from './metered-store.js';
import { S3ObjectStore } from './s3-store.js';

export interface StoreConfig {
  readonly store: 'fs' | 's3';
  readonly dataDir: string;
  readonly s3Endpoint: string;
  readonly s3Region: string;
  readonly s3Bucket: string;
  readonly s3Prefix: string;
  readonly s3AccessKeyId: string;
  readonly s3SecretAccessKey: string;
  readonly s3ForcePathStyle: boolean;
}

/**
 * The configured store, metered (metered-store.ts); its writes wait for a check that it is safe to write to (checked-store.ts).
 * The embedded store implements the conditions itself, so its check is only removing what crashed
 * writers left; an S3 server's check is a probe of its conditional writes.
 */
export function openObjectStore(config: StoreConfig): CheckedObjectStore {
  if (config.store === 'fs') {
    const fs = new FsObjectStore(config.dataDir);
    return new CheckedObjectStore(new MeteredObjectStore(fs), () => fs.removeLeftovers());
  }
  for (const [value, env] of [
    [config.s3Endpoint, 'KMS_S3_ENDPOINT'],
    [config.s3AccessKeyId, 'KMS_S3_ACCESS_KEY_ID'],
    [config.s3SecretAccessKey, 'KMS_S3_SECRET_ACCESS_KEY'],
  ] as const) {
    if (value === '') throw new KmsError('CONFIG', `KMS_STORE=s3 needs ${env}`);
  }
  const s3 = new S3ObjectStore({
    endpoint: config.s3Endpoint,
    region: config.s3Region,
    bucket: config.s3Bucket,
    prefix: config.s3Prefix,
    accessKeyId: config.s3AccessKeyId,
    secretAccessKey: config.s3SecretAccessKey,
    forcePathStyle: config.s3ForcePathStyle,
  });
  const where = `S3 bucket ${config.s3Bucket} at ${config.s3Endpoint}`;
  return new CheckedObjectStore(new MeteredObjectStore(s3), () => probeConditionalWrites(s3, where));
}
