import { loadOptions, option, parse, type OptionValues } from './options.js';

/** Every option of the KMS functions, declared once. README.md "Configuration" lists them. */
export const kmsOptions = {
  dataDir: option({ env: 'KMS_DATA_DIR', default: '.kms', parse: parse.string, description: 'Folder for the embedded store (and, under npm start, the local TLS certificate and sealer state).' }),
  store: option({ env: 'KMS_STORE', default: 'fs' as 'fs' | 's3', parse: parse.oneOf('fs', 's3'), description: '`fs`: embedded store in KMS_DATA_DIR; `s3`: S3-compatible storage (MinIO).' }),
  s3Endpoint: option({ env: 'KMS_S3_ENDPOINT', default: '', parse: parse.url, description: 'S3 endpoint URL, e.g. https://minio.tee-kms.svc:9000.' }),
  s3Region: option({ env: 'KMS_S3_REGION', default: 'us-east-1', parse: parse.string, description: 'S3 region.' }),
  s3Bucket: option({ env: 'KMS_S3_BUCKET', default: 'tee-kms', parse: parse.string, description: 'Bucket holding the wrapped keys (must exist; enable versioning).' }),
  s3Prefix: option({ env: 'KMS_S3_PREFIX', default: '', parse: parse.string, description: 'Key prefix inside the bucket, ending with `/`.' }),
  s3AccessKeyId: option({ env: 'KMS_S3_ACCESS_KEY_ID', default: '', parse: parse.string, secret: true, description: 'S3 access key id.' }),
  s3SecretAccessKey: option({ env: 'KMS_S3_SECRET_ACCESS_KEY', default: '', parse: parse.string, secret: true, description: 'S3 secret key.' }),
  s3ForcePathStyle: option({ env: 'KMS_S3_FORCE_PATH_STYLE', default: true, parse: parse.boolean, description: 'Path-style bucket addressing (MinIO, RGW).' }),
  rootKey: option({ env: 'KMS_ROOT_KEY', default: undefined as Buffer | undefined, parse: parse.key256, secret: true, description: 'Mode 1: the root key, base64 of 32 bytes (or KMS_ROOT_KEY_FILE).' }),
  keyCacheTtlSeconds: option({ env: 'KMS_KEY_CACHE_TTL_SECONDS', default: 300, parse: parse.integer(0, 86_400), description: 'How long unwrapped primary keys and verified credentials stay cached in memory.' }),
  keyCacheEntries: option({ env: 'KMS_KEY_CACHE_ENTRIES', default: 10_000, parse: parse.integer(0, 10_000_000), description: 'Bound on each in-memory cache.' }),
};

export type KmsConfig = OptionValues<typeof kmsOptions>;

export function loadKmsConfig(env: NodeJS.ProcessEnv = process.env): KmsConfig {
  return loadOptions(kmsOptions, env);
}
