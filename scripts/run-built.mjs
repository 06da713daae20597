// `node scripts/run-built.mjs dist/x.js args…`: builds if needed, then runs the built module.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildIfNeeded } from './build-if-needed.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
await buildIfNeeded();
const [, , target, ...rest] = process.argv;
process.argv = [process.argv[0], resolve(root, target), ...rest];
await import(pathToFileURL(resolve(root, target)).href);
