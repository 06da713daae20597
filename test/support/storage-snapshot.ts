import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Every object of an embedded store, read straight from the files (not through the store). */
export async function readFsObjects(dataDir: string): Promise<Map<string, Buffer>> {
  const root = join(dataDir, 'objects');
  const out = new Map<string, Buffer>();
  async function walk(dir: string, prefix: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.isDirectory()) await walk(join(dir, entry.name), `${prefix}${entry.name}/`);
      else out.set(`${prefix}${entry.name}`, await readFile(join(dir, entry.name)));
    }
  }
  await walk(root, '');
  return out;
}

/** The forms a secret could take in storage or logs. */
export function secretForms(secret: Buffer | string): string[] {
  const bytes = typeof secret === 'string' ? Buffer.from(secret) : secret;
  const forms = [bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('hex')];
  if (typeof secret === 'string') forms.push(secret, encodeURIComponent(secret));
  return forms.filter((f) => f.length >= 8);
}

export function findSecrets(haystack: string, secrets: readonly (Buffer | string)[]): string[] {
  return secrets.flatMap(secretForms).filter((form) => haystack.includes(form));
}
