/**
 * TDX attester on Linux's configfs-tsm report interface (Linux 6.7+,
 * Documentation/ABI/testing/configfs-tsm): create a report entry, check its provider, write the
 * 64-byte report_data to `inblob`, read the quote from `outblob`, and check `generation` to
 * detect another writer racing on the same entry. The entry is always removed afterwards.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KmsError } from '../../errors.js';
import type { Attester } from '../types.js';
import { trimCcel } from './ccel.js';
import { encodeTdxEvidence, type TdxEvidence } from './evidence.js';

export const DEFAULT_TSM_ROOT = '/sys/kernel/config/tsm';
export const DEFAULT_CCEL_PATH = '/sys/firmware/acpi/tables/data/CCEL';
const TDX_PROVIDER = 'tdx_guest';

/**
 * The four file operations the attester performs. Production uses node:fs; tests pass a fake
 * kernel that performs configfs's side effects (populating the entry, generating the outblob).
 */
export interface TsmFileSystem {
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  readFile(path: string): Promise<Uint8Array>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
}

export const nodeTsmFileSystem: TsmFileSystem = {
  mkdir: async (path) => {
    await mkdir(path);
  },
  rmdir: (path) => rmdir(path),
  readFile: (path) => readFile(path),
  writeFile: (path, data) => writeFile(path, data),
};

export interface ConfigfsTsmAttesterOptions {
  /** configfs-tsm mount point; default /sys/kernel/config/tsm. */
  readonly root?: string;
  /** CCEL table to attach as cc_eventlog; default /sys/firmware/acpi/tables/data/CCEL; null: never. */
  readonly ccelPath?: string | null;
  /** Attempts when a concurrent writer raced on our entry (generation ≠ 1); default 3. */
  readonly maxAttempts?: number;
  readonly fs?: TsmFileSystem;
  /** Entry names; default unique per process and call. */
  readonly entryName?: () => string;
}

const errno = (error: unknown): string | undefined => (typeof error === 'object' && error !== null ? (error as { code?: string }).code : undefined);

/** Printable, bounded rendering of a file we read, for error messages. */
const shown = (bytes: Uint8Array): string =>
  Buffer.from(bytes.subarray(0, 32))
    .toString('latin1')
    .trim()
    .replace(/[^\x20-\x7e]/g, '?');

export class ConfigfsTsmAttester implements Attester {
  readonly tee = 'tdx' as const;
  private readonly root: string;
  private readonly ccelPath: string | null;
  private readonly maxAttempts: number;
  private readonly fs: TsmFileSystem;
  private readonly entryName: () => string;

  constructor(options: ConfigfsTsmAttesterOptions = {}) {
    this.root = options.root ?? DEFAULT_TSM_ROOT;
    this.ccelPath = options.ccelPath === undefined ? DEFAULT_CCEL_PATH : options.ccelPath;
    this.maxAttempts = options.maxAttempts ?? 3;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) {
      throw new KmsError('CONFIG', 'configfs-tsm: maxAttempts must be a positive integer');
    }
    this.fs = options.fs ?? nodeTsmFileSystem;
    this.entryName = options.entryName ?? (() => `tee-kms-${process.pid}-${randomUUID()}`);
  }

  async getEvidence(reportData: Uint8Array): Promise<TdxEvidence> {
    const quote = await this.getQuote(reportData);
    return encodeTdxEvidence(quote, await this.readCcel());
  }

  /** The raw TD quote binding `reportData`. */
  async getQuote(reportData: Uint8Array): Promise<Uint8Array> {
    if (reportData.length !== 64) throw new KmsError('BAD_REQUEST', 'TDX report_data must be exactly 64 bytes');
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      const quote = await this.attempt(reportData);
      if (quote !== undefined) return quote;
    }
    // Contention passes: a 503 that callers retry.
    throw new KmsError(
      'ATTESTATION_UNAVAILABLE',
      `configfs-tsm: another writer changed our report entry in each of ${this.maxAttempts} attempts (generation ≠ 1)`,
    );
  }

  /** One report entry's life; undefined when the generation check shows a race. */
  private async attempt(reportData: Uint8Array): Promise<Uint8Array | undefined> {
    const reports = join(this.root, 'report');
    const entry = join(reports, this.entryName());
    try {
      await this.fs.mkdir(entry);
    } catch (error) {
      if (errno(error) === 'ENOENT') {
        throw new KmsError('CONFIG', `configfs-tsm: ${reports} does not exist (needs Linux 6.7+ with configfs mounted at ${this.root}, inside a TDX guest)`, {
          cause: error,
        });
      }
      throw new KmsError('INTERNAL', `configfs-tsm: cannot create a report entry under ${reports}`, { cause: error });
    }
    try {
      const provider = await this.read(entry, 'provider');
      if (Buffer.from(provider).toString('latin1').trim() !== TDX_PROVIDER) {
        throw new KmsError('CONFIG', `configfs-tsm: provider is "${shown(provider)}", not ${TDX_PROVIDER} (not a TDX guest)`);
      }
      await this.write(entry, 'inblob', reportData);
      const outblob = await this.quote(entry);
      const generation = Buffer.from(await this.read(entry, 'generation'))
        .toString('latin1')
        .trim();
      if (!/^\d+$/.test(generation)) {
        throw new KmsError('INTERNAL', `configfs-tsm: generation reads "${shown(Buffer.from(generation))}", not a number`);
      }
      // Our write made it 1; more means someone else wrote inblob and the outblob may be theirs.
      if (Number(generation) !== 1) return undefined;
      // Kernels before the tdx-guest fix of 2024-01 report a failed GetQuote this way, not as an error.
      if (outblob.length === 0)
        throw new KmsError('ATTESTATION_UNAVAILABLE', "configfs-tsm: the quote (outblob) is empty; is the host's quote generation service up?");
      return new Uint8Array(outblob);
    } finally {
      // configfs entries pin kernel memory; remove ours whatever happened. A failure here cannot
      // be acted on and must not mask the outcome above.
      await this.fs.rmdir(entry).catch(() => undefined);
    }
  }

  /**
   * Reading outblob makes the quote: the kernel asks the host's quote generation service (QGS)
   * through the TDX module. When that fails it fails for now (the QGS restarting, busy, slow): a
   * 503 that callers retry.
   */
  private async quote(entry: string): Promise<Uint8Array> {
    try {
      return await this.fs.readFile(join(entry, 'outblob'));
    } catch (error) {
      const why = `${errno(error) ?? 'error'}; is the host's quote generation service up?`;
      throw new KmsError('ATTESTATION_UNAVAILABLE', `configfs-tsm: the quote could not be generated (${why})`, { cause: error });
    }
  }

  private async read(entry: string, attribute: string): Promise<Uint8Array> {
    try {
      return await this.fs.readFile(join(entry, attribute));
    } catch (error) {
      throw new KmsError('INTERNAL', `configfs-tsm: cannot read ${attribute}`, { cause: error });
    }
  }

  private async write(entry: string, attribute: string, data: Uint8Array): Promise<void> {
    try {
      await this.fs.writeFile(join(entry, attribute), data);
    } catch (error) {
      throw new KmsError('INTERNAL', `configfs-tsm: cannot write ${attribute}`, { cause: error });
    }
  }

  /** The CCEL is optional evidence: absent or unreadable (e.g. no ACPI table) means none is sent. */
  private async readCcel(): Promise<Uint8Array | undefined> {
    if (this.ccelPath === null) return undefined;
    let log: Uint8Array;
    try {
      log = await readFile(this.ccelPath);
    } catch {
      return undefined;
    }
    if (log.length === 0) return undefined;
    // An unparseable log is still sent whole: the verifier side decides what to make of it.
    return trimCcel(log) ?? log;
  }
}
