import { KmsError } from '../errors.js';
import { FsObjectStore } from './fs-store.js';
import type { ObjectStore } from './object-store.js';
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

export function openObjectStore(config: StoreConfig): ObjectStore {
  if (config.store === 'fs') return new FsObjectStore(config.dataDir);
  for (const [value, env] of [
    [config.s3Endpoint, 'KMS_S3_ENDPOINT'],
    [config.s3AccessKeyId, 'KMS_S3_ACCESS_KEY_ID'],
    [config.s3SecretAccessKey, 'KMS_S3_SECRET_ACCESS_KEY'],
  ] as const) {
    if (value === '') throw new KmsError('CONFIG', `KMS_STORE=s3 needs ${env}`);
  }
  return new S3ObjectStore({
    endpoint: config.s3Endpoint,
    region: config.s3Region,
    bucket: config.s3Bucket,
    prefix: config.s3Prefix,
    accessKeyId: config.s3AccessKeyId,
    secretAccessKey: config.s3SecretAccessKey,
    forcePathStyle: config.s3ForcePathStyle,
  });
}
