/**
 * One file operation in its own process, for the `files` bench group and the memory test
 * (test/cli/formats/memory.test.ts): `node dist/bench/file-crypt.js <op> <in> <out>`, the key as hex on
 * stdin (never in argv). Prints one JSON line: { op, bytes, seconds, maxRssMb }; maxRssMb is this
 * process's own peak resident set (bench/peak-rss.ts), so a format that held the file in memory shows it.
 *
 * Ops: tee-kms-encrypt, tee-kms-decrypt, bigdl-encrypt, bigdl-decrypt (the cli/formats code, output
 * through writeOutput as the CLI writes it), and raw-gcm: one AES-256-GCM pass over the same bytes
 * through the same file streams, fsynced likewise: the limit the formats are compared with.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { decryptBigdl, encryptBigdl } from '../cli/formats/bigdl.js';
import { writeOutput } from '../cli/formats/output.js';
import { peakRssKb } from './peak-rss.js';
import { boundStreamGarbage } from '../cli/formats/memory.js';
import { decryptStream, encryptStream } from '../cli/formats/stream.js';

const READ_CHUNK = Number(process.env.FILE_CRYPT_READ ?? 256 * 1024);
const names = { user: 'bench', primaryKey: 'pk', dataKey: 'dk' };

async function readKey(): Promise<Buffer> {
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  const key = Buffer.from(text.trim(), 'hex');
  if (key.length !== 32) throw new Error('file-crypt: give a 32-byte key as hex on stdin');
  return key;
}

async function run(op: string, input: string, output: string, key: Buffer): Promise<void> {
  const source = () => createReadStream(input, { highWaterMark: READ_CHUNK });
  const keyText = key.toString('base64'); // the data key's text, as BigDL takes it
  switch (op) {
    case 'tee-kms-encrypt':
      return writeOutput(output, source(), [encryptStream(key, names)], { overwrite: true });
    case 'tee-kms-decrypt':
      return writeOutput(output, source(), [decryptStream(async () => key)], { overwrite: true });
    case 'bigdl-encrypt':
      return writeOutput(output, source(), [encryptBigdl(keyText, names.dataKey)], { overwrite: true });
    case 'bigdl-decrypt':
      return writeOutput(output, await decryptBigdl(input, async () => keyText), [], { overwrite: true });
    case 'raw-gcm': {
      const cipher = createCipheriv('aes-256-gcm', key, randomBytes(12));
      await pipeline(source(), cipher, createWriteStream(output));
      // writeOutput fsyncs what it publishes: so does the limit, or the ratio would measure the disk.
      const handle = await open(output, 'r');
      await handle.sync();
      return handle.close();
    }
    default:
      throw new Error(`file-crypt: unknown op ${op}`);
  }
}

const [op, input, output] = process.argv.slice(2);
if (op === undefined || input === undefined || output === undefined) {
  console.error('usage: file-crypt <op> <in> <out>  (key as hex on stdin)');
  process.exit(2);
}
const key = await readKey();
// As the CLI does before it streams a file; FILE_CRYPT_SWEEP=concurrent leaves V8's default (A/B).
if (process.env.FILE_CRYPT_SWEEP !== 'concurrent') boundStreamGarbage();
const started = performance.now();
await run(op, input, output, key);
const seconds = (performance.now() - started) / 1000;
const bytes = statSync(input).size;
console.log(JSON.stringify({ op, bytes, seconds, maxRssMb: Math.round((peakRssKb() / 1024) * 10) / 10 }));
