import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { KmsError } from '../errors.js';
import { assertObjectKey, assertPrefix } from './keys.js';
import type { ObjectStore, StoredObject } from './object-store.js';

export interface S3StoreOptions {
  readonly endpoint: string;
  readonly region: string;
  readonly bucket: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly forcePathStyle: boolean;
  /** Prepended to every key (e.g. `tee-kms/`), so one bucket can hold several deployments. */
  readonly prefix: string;
  readonly maxSockets?: number;
}

/** Storage-side conflicts under concurrent conditional writes (S3 answers 409 "retry"). */
const CONDITIONAL_CONFLICT_RETRIES = 5;

/**
 * S3-compatible storage (MinIO, Ceph RGW, AWS S3). Creates use `If-None-Match: *` and replaces
 * `If-Match: <etag>`, so the server arbitrates concurrent writers: exactly one create wins.
 */
export class S3ObjectStore implements ObjectStore {
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;

  constructor(options: S3StoreOptions) {
    if (options.prefix !== '') assertPrefix(options.prefix);
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 64 };
    this.#client = new S3Client({
      endpoint: options.endpoint,
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
      // Default CRC32 trailers make RGW and older MinIO answer 411 to uploads.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
      // Options object form: the SDK builds its NodeHttpHandler with our keep-alive agents.
      requestHandler: {
        httpAgent: new HttpAgent(agentOptions),
        httpsAgent: new HttpsAgent(agentOptions),
        connectionTimeout: 3_000,
        requestTimeout: 10_000,
      },
    });
    this.#bucket = options.bucket;
    this.#prefix = options.prefix;
  }

  async get(key: string): Promise<StoredObject | undefined> {
    assertObjectKey(key);
    try {
      const out = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
      if (out.Body === undefined) return undefined;
      const body = Buffer.from(await out.Body.transformToByteArray());
      return { body, etag: stripQuotes(out.ETag ?? '') };
    } catch (error) {
      if (statusOf(error) === 404 && errorName(error) !== 'NoSuchBucket') return undefined;
      throw unavailable(error);
    }
  }

  async create(key: string, body: Buffer): Promise<boolean> {
    assertObjectKey(key);
    return this.#conditionalPut(key, body, { IfNoneMatch: '*' });
  }

  async replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    assertObjectKey(key);
    // RGW answers 412 to If-Match when the ETag is quoted: send it bare.
    return this.#conditionalPut(key, body, { IfMatch: stripQuotes(etag) });
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key);
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
    } catch (error) {
      if (statusOf(error) === 404 && errorName(error) !== 'NoSuchBucket') return;
      throw unavailable(error);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    assertPrefix(prefix);
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.#client.send(
          new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: this.#prefix + prefix, ContinuationToken: token }),
        );
      } catch (error) {
        throw unavailable(error);
      }
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined) yield object.Key.slice(this.#prefix.length);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async close(): Promise<void> {
    this.#client.destroy();
  }

  async #conditionalPut(key: string, body: Buffer, condition: { IfNoneMatch?: string; IfMatch?: string }): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#client.send(
          new PutObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key, Body: body, ContentType: 'application/json', ...condition }),
        );
        return true;
      } catch (error) {
        const status = statusOf(error);
        if (status === 412) return false;
        if (status === 404 && condition.IfMatch !== undefined && errorName(error) !== 'NoSuchBucket') return false;
        if (status === 409 && attempt < CONDITIONAL_CONFLICT_RETRIES) {
          await new Promise((resolve) => setTimeout(resolve, 10 * 2 ** attempt));
          continue;
        }
        throw unavailable(error);
      }
    }
  }
}

function stripQuotes(etag: string): string {
  return etag.replace(/^"|"$/g, '');
}

function statusOf(error: unknown): number | undefined {
  if (error instanceof S3ServiceException) return error.$metadata.httpStatusCode;
  const meta = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return meta?.httpStatusCode;
}

function errorName(error: unknown): string {
  return typeof error === 'object' && error !== null ? String((error as { name?: unknown }).name ?? '') : '';
}

/** RGW error replies carry no message; the status and error name are what we can report. */
function unavailable(error: unknown): KmsError {
  if (error instanceof KmsError) return error;
  const status = statusOf(error);
  const name = errorName(error) === 'Error' ? String((error as { code?: unknown }).code ?? '') : errorName(error);
  const what = status === 403 ? 'refused our credentials' : status === undefined ? 'cannot be reached' : `answered ${status}`;
  return new KmsError('STORAGE_UNAVAILABLE', `object storage ${what}${name ? ` (${name})` : ''}`, { cause: error });
}
