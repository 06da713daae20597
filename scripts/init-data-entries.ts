/**
 * Operator command: the entries of an init-data document, each with the SHA-384 of its text as the
 * project's parser returns it (shared/attestation/init-data.ts: parseInitData, entryDigest), which
 * is what the sealer compares with a policy's digests. knative/install.sh takes each function's
 * agent policy digest (its "policy.rego" entry) from here: hashing the raw lines instead would
 * differ, since a ''' string drops the newline after its opening delimiter.
 *
 *   node dist/scripts/init-data-entries.js <init-data.toml>     (- or /dev/stdin: standard input)
 *
 * Exit status 0: one line per entry, "<name> <sha384>" (96 lowercase hex digits), in document
 * order. 1: refused, the reason on stderr as "<file>: <reason>". 2: usage.
 */
import { readFileSync } from 'node:fs';
import { entryDigest, parseInitData } from '../shared/attestation/init-data.js';

const [file, ...rest] = process.argv.slice(2);
if (file === undefined || rest.length > 0) {
  process.stderr.write('usage: init-data-entries <init-data.toml>\n');
  process.exit(2);
}

function refuse(reason: string): never {
  process.stderr.write(`${file}: ${reason}\n`);
  process.exit(1);
}

let bytes: Buffer;
try {
  bytes = readFileSync(file === '-' ? 0 : file);
} catch (error) {
  refuse(`cannot be read (${error instanceof Error ? error.message : String(error)})`);
}
const text = bytes.toString('utf8');
// The digest is of the bytes the TD gets: a file that is not exact UTF-8 would be altered here.
if (!Buffer.from(text, 'utf8').equals(bytes)) refuse('is not UTF-8 text');
try {
  const { data } = parseInitData(text);
  const lines = Object.entries(data).map(([name, entry]) => {
    // One entry a line, the name before the first space: a name that would break that is refused.
    if (/[\s\p{Cc}]/u.test(name)) refuse(`entry ${JSON.stringify(name)}: a name with white space or control characters cannot be listed`);
    return `${name} ${entryDigest(entry)}\n`;
  });
  process.stdout.write(lines.join(''));
} catch (error) {
  refuse(error instanceof Error ? error.message : String(error));
}
