import { defineConfig } from 'vitest/config';

/**
 * `npm run test:unit`: the tests that need no other process, no S3 server and no build, for a
 * fast loop while editing. `npm test` (vitest.config.ts) runs everything, these included.
 * A test file that starts a process or reads the S3 server belongs in neither list here.
 */
export default defineConfig({
  test: {
    include: [
      'test/readme.test.ts',
      'test/functions/routes.test.ts',
      'test/sealer/attestation/**/*.test.ts',
      'test/sealer/admin-policy.test.ts',
      'test/sealer/proofs.test.ts',
      'test/shared/attestation/**/*.test.ts',
      'test/shared/config.test.ts',
      'test/shared/crypto/*.test.ts',
      'test/shared/fs/*.test.ts',
      'test/cli/formats/detect.test.ts',
      'test/shared/custody/*.test.ts',
      'test/shared/http/*.test.ts',
      'test/shared/kbs/protocol.test.ts',
      'test/shared/names.test.ts',
      'test/shared/root-key/sealer-source.test.ts',
      'test/shared/sealed/*.test.ts',
      'test/shared/once.test.ts',
    ],
    testTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
