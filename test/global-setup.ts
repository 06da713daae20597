import { execFileSync } from 'node:child_process';
import type { TestProject } from 'vitest/node';
import { s3EnvFromProcess, startRgw, type S3Env } from './support/rgw.js';

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3Env;
  }
}

/**
 * Once per run: build dist/ (tests start real function and sealer processes from it) and start a
 * real S3 server (Ceph RGW on loopback) unless KMS_S3_ENDPOINT names one already running.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.KMS_TEST_SKIP_BUILD !== '1') execFileSync(process.execPath, ['scripts/build-if-needed.mjs'], { stdio: 'inherit' });
  const existing = s3EnvFromProcess();
  if (existing !== undefined) {
    project.provide('s3', existing);
    return async () => {};
  }
  const rgw = await startRgw();
  project.provide('s3', { endpoint: rgw.endpoint, region: rgw.region, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  return () => rgw.stop();
}
