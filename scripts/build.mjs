// `npm run build`: TypeScript to dist/ (tsc), then the lean host bundled in place: dist/scripts/serve.js
// becomes one module plus chunks in dist/scripts/serve-chunks/ that it imports on demand (a function's
// route, the sealing service's client, the S3 client's XML parser…). A cold start then loads a few
// files instead of ~60 modules: 26–38 ms sooner to its first answer (docs/performance.md, change 9).
// The rest of dist/ is tsc's output as it is: functions-framework loads dist/functions/*.js, and
// dist/client/ (with declarations, tsconfig.client.json) is the package's `tee-kms/client`.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
export const buildStamp = join(dist, '.build-stamp');

export async function build() {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
  // The declarations of `tee-kms/client` (package.json "exports"), beside the JavaScript tsc just emitted.
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.client.json')], { stdio: 'inherit' });
  await bundleLeanHost();
  writeFileSync(buildStamp, new Date().toISOString());
}

async function bundleLeanHost() {
  const { rolldown } = await import('rolldown');
  const entry = join(dist, 'scripts/serve.js');
  rmSync(join(dist, 'scripts/serve-chunks'), { recursive: true, force: true });
  rmSync(join(dist, 'scripts/serve.js.map'), { force: true }); // tsc's map of the unbundled module
  const bundle = await rolldown({
    input: entry,
    platform: 'node',
    // A warning fails the build: a bundle that may differ from what tsc emitted must not ship unnoticed.
    onLog(level, log, defaultHandler) {
      if (level === 'warn') throw new Error(`bundling the lean host: ${log.message}`);
      defaultHandler(level, log);
    },
  });
  try {
    await bundle.write({
      dir: join(dist, 'scripts'),
      format: 'esm',
      entryFileNames: 'serve.js',
      chunkFileNames: 'serve-chunks/[name]-[hash].js',
      // No source maps: tsc's maps of the inputs are not chained through; names are kept (no minifying).
      sourcemap: false,
    });
  } finally {
    await bundle.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await build();
