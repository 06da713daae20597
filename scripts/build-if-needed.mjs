// Builds dist/ (scripts/build.mjs: tsc, then the lean host's bundle) when it is missing or older than
// a source file, so `npm start` works on a fresh clone after `npm install`.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, buildStamp } from './build.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function newest(dir) {
  let latest = 0;
  if (!existsSync(dir)) return latest;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) latest = Math.max(latest, newest(path));
    else if (entry.name.endsWith('.ts')) latest = Math.max(latest, statSync(path).mtimeMs);
  }
  return latest;
}

export async function buildIfNeeded() {
  const sources = Math.max(
    ...['client', 'functions', 'shared', 'sealer', 'cli', 'scripts', 'bench'].map((d) => newest(join(root, d))),
    statSync(join(root, 'tsconfig.json')).mtimeMs,
    statSync(join(root, 'tsconfig.client.json')).mtimeMs,
    statSync(join(root, 'scripts/build.mjs')).mtimeMs,
  );
  const built = existsSync(buildStamp) ? statSync(buildStamp).mtimeMs : 0;
  if (built >= sources) return;
  process.stderr.write('tee-kms: building dist/ (tsc, then the lean host bundle)…\n');
  await build();
}

if (import.meta.url === `file://${process.argv[1]}`) await buildIfNeeded();
