/** `status`, `rotate`, `verify`, `recover`: the root key's life (README, "The root key's life"). */
import { join } from 'node:path';
import type { Command } from 'commander';
import { readJsonFile, readShareToSend, shareToSend } from '../custodian/inputs.js';
import { clientFor, globals } from '../config.js';
import { Refused, UsageError } from '../errors.js';
import { print, refuseTerminal, say, secretDirectory, secretLines, writeSecretFile } from '../io.js';
import { KmsError, type KmsClient, type RecoveryProgress, type Share } from '../kms.js';

export function addRootKeyCommands(program: Command): void {
  program
    .command('status')
    .description("the root key's state: sealed, initialized, threshold, recovery progress, rotation")
    .action(async (_options, command: Command) => {
      const status = await clientFor(command).sealStatus();
      const text = Object.entries(status)
        .map(([name, value]) => `${name}: ${typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)}`)
        .join('\n');
      print(globals(command).json === true, status, text);
    });

  program
    .command('rotate')
    .description('make a new root key and its shares (the first rotate initializes; later ones need the admin token)')
    .option('--custodians <file>', "JSON array of the custodians' public JWKs, in share order: each share is encrypted to one")
    .option('--shares <files...>', "with --custodians: the threshold of the current root key's share files, to name new custodians")
    .option('--out-dir <dir>', 'write the shares to <dir>/share-1.json… (0600, in custodian order), never overwriting')
    .option('--print-shares', 'print the shares even when standard output is a terminal')
    .option('--allow-plaintext-shares', 'with --attest, let the first rotate (no admin token, in the clear) answer plaintext shares without --custodians')
    .action(async (options: RotateOptions, command: Command) => {
      const client = clientFor(command);
      const json = globals(command).json === true;
      // The answer is the shares' only copy: every check that could lose it happens before the call.
      if (options.outDir === undefined) refuseTerminal('the shares', '--out-dir <dir>', options.printShares);
      if (options.shares !== undefined && options.custodians === undefined) throw new UsageError('--shares goes with --custodians');
      const custodians = options.custodians === undefined ? undefined : await readCustodians(options.custodians);
      const shares = options.shares === undefined ? undefined : await Promise.all(options.shares.map(readShareToSend));
      if (options.outDir !== undefined) await secretDirectory(options.outDir);
      const rotation = await client
        .rotate({
          ...(custodians === undefined ? {} : { custodians }),
          ...(shares === undefined ? {} : { shares }),
          ...(options.allowPlaintextShares === true ? { allowPlaintextShares: true } : {}),
        })
        .catch((error: unknown) => {
          // The client's refusal, before anything was sent, said in the command line's words.
          if (error instanceof KmsError && error.code === 'INVALID_ARGUMENT' && error.status === 0 && custodians === undefined) {
            throw new UsageError(
              'with --attest and no admin token, rotate initializes the KMS in the clear (no service key exists yet): without --custodians the shares would cross the way in plaintext; give --custodians <file>, or --allow-plaintext-shares where the way is trusted',
            );
          }
          throw error;
        });
      const next = rotation.state === 'pending-verification' ? 'pending: prove the new shares with `tee-kms verify`' : 'current';
      if (options.outDir === undefined) {
        return print(json, rotation.shares, rotation.shares.map((share) => JSON.stringify(share)).join('\n'));
      }
      const files: string[] = [];
      // Numbered in answer order, which is the custodians' order: share-1.json is the first custodian's.
      for (const [i, share] of rotation.shares.entries()) {
        const file = join(options.outDir, `share-${i + 1}.json`);
        await writeSecretFile(file, `${JSON.stringify(share)}\n`);
        files.push(file);
      }
      print(json, { state: rotation.state, files }, `${files.length} shares written (${files.join(', ')}); the new root key is ${next}`);
    });

  program
    .command('verify <shareFiles...>')
    .description('prove the shares of a pending rotation (admin token): the new root key becomes current')
    .action(async (shareFiles: string[], _options, command: Command) => {
      const client = clientFor(command);
      const shares = await Promise.all(shareFiles.map(readShareToSend));
      const result = await client.verify(shares);
      print(globals(command).json === true, result, `shares verified: root key ${String(result['rootKeyId'])} is current`);
    });

  program
    .command('recover [shareFile]')
    .description('send one share (a file, or - for standard input) to unseal the root key after a restart, or all of them with --interactive')
    .option('--interactive', 'prompt for shares (not echoed) until the root key is recovered')
    .action(async (shareFile: string | undefined, options: { interactive?: boolean }, command: Command) => {
      if ((shareFile === undefined) === (options.interactive !== true)) throw new UsageError('give one share file, or --interactive');
      const client = clientFor(command);
      const json = globals(command).json === true;
      if (shareFile !== undefined) {
        const progress = await client.recover(await readShareToSend(shareFile));
        return print(json, progress, progressText(progress));
      }
      print(json, await recoverInteractively(client), 'tee-kms is unsealed');
    });
}

interface RotateOptions {
  readonly custodians?: string;
  readonly shares?: string[];
  readonly outDir?: string;
  readonly printShares?: boolean;
  readonly allowPlaintextShares?: boolean;
}

function progressText(progress: RecoveryProgress): string {
  return progress.sealed
    ? `share accepted: ${progress.progress} of ${progress.t} received`
    : `root key recovered: tee-kms is unsealed (root key ${progress.rootKeyId ?? ''})`;
}

/** Asks for shares until the root key is recovered; a refused share is said and asked again. */
async function recoverInteractively(client: KmsClient): Promise<RecoveryProgress> {
  const status = await client.sealStatus();
  if (status['sealed'] !== true) throw new Refused('tee-kms is not sealed: there is nothing to recover');
  let received = Number(status['progress'] ?? 0);
  const t = Number(status['t']);
  const lines = secretLines();
  try {
    for (;;) {
      const line = await lines.next(`share ${received + 1} of ${t}: `);
      if (line === undefined) throw new Refused(`no more shares: tee-kms is still sealed (${received} of ${t} received)`);
      if (line.trim() === '') continue;
      let share: Share;
      try {
        share = shareToSend(line.trim(), 'that line');
      } catch (error) {
        say(`${(error as Error).message}; try again`);
        continue;
      }
      try {
        const progress = await client.recover(share);
        if (!progress.sealed) return progress;
        received = progress.progress;
        say(`share accepted: ${received} of ${t} received`);
      } catch (error) {
        // The server refused this share (a wrong one, a duplicate): say so and ask for another.
        const { code, status: httpStatus } = error as { code?: string; status?: number };
        if (httpStatus === undefined || httpStatus === 0 || httpStatus >= 500) throw error;
        say(`share refused: ${code ?? 'error'}: ${(error as Error).message}`);
      }
    }
  } finally {
    lines.close();
  }
}

async function readCustodians(path: string): Promise<unknown[]> {
  const value = await readJsonFile(path, '--custodians file');
  if (!Array.isArray(value)) throw new UsageError(`--custodians ${path} must hold a JSON array of public JWKs`);
  return value;
}
