/** `status`, `rotate`, `verify`, `recover`: the root key's life (README, "The root key's life"). */
import type { KeyObject } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { isCompactJwe, jweKid } from '../../shared/custody/share-jwe.js';
import { KmsError as LocalError } from '../../shared/errors.js';
import { readJsonFile, readPrivateKey, readSharesToSend, readShareToSend, shareToSend, stillEncrypted } from '../custodian/inputs.js';
import { clientFor, globals } from '../config.js';
import { Incomplete, Refused, UsageError } from '../errors.js';
import { sayIfInterrupted } from '../interrupt.js';
import { onlyCopyOnStdout, print, refuseSecretOutput, say, secretDirectory, secretLines, writeSecretFile } from '../io.js';
import { KmsError, type KmsClient, type RecoveryProgress, type Rotation, type Share } from '../kms.js';

export function addRootKeyCommands(program: Command): void {
  program
    .command('status')
    .description("the root key's state: sealed, initialized, threshold, recovery progress, rotation")
    .action(async (_options, command: Command) => {
      const status = await clientFor(command).sealStatus();
      const text = Object.entries(status).map(
        ([name, value]) => `${name}: ${typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)}`,
      );
      print(globals(command).json === true, status, text);
    });

  program
    .command('rotate')
    .description('make a new root key and its shares (the first rotate initializes; later ones need the admin token)')
    .option('--custodians <file>', "JSON array of the custodians' public JWKs, in share order: each share is encrypted to one")
    .option('--shares <files...>', "with --custodians: the threshold of the current root key's share files, to name new custodians")
    .option('--out-dir <dir>', 'write the shares to <dir>/share-1.json… (0600, in custodian order); a <dir> holding share-*.json files is refused')
    .option('--print-shares', 'print the shares even when standard output is a terminal')
    .option('--allow-plaintext-shares', 'with --attest, let the first rotate (no admin token, in the clear) answer plaintext shares without --custodians')
    .action(async (options: RotateOptions, command: Command) => {
      const client = clientFor(command);
      const json = globals(command).json === true;
      // The answer is the shares' only copy: every check that could lose it happens before the call.
      if (options.outDir === undefined) refuseSecretOutput('the shares', '--out-dir <dir>', options.printShares);
      if (options.shares !== undefined && options.custodians === undefined) throw new UsageError('--shares goes with --custodians');
      const custodians = options.custodians === undefined ? undefined : await readCustodians(options.custodians);
      const shares = options.shares === undefined ? undefined : await readSharesToSend(options.shares);
      if (shares !== undefined) await refuseNotSealedToRecoveryKey(client, shares, options.shares!, decryptToFile);
      if (options.outDir !== undefined) {
        await secretDirectory(options.outDir);
        await refuseShareFiles(options.outDir);
      }
      // Interrupted while the KMS may already have rotated: its answer, the shares' only copy, is lost.
      const unsaid = sayIfInterrupted(
        'interrupted while rotating: if the KMS rotated, the new shares are lost (`tee-kms status` shows a pending root key, or a new current one on the first rotate): rotate again, while the KMS is unsealed',
      );
      const rotation = await client
        .rotate({
          ...(custodians === undefined ? {} : { custodians }),
          ...(shares === undefined ? {} : { shares }),
          ...(options.allowPlaintextShares === true ? { allowPlaintextShares: true } : {}),
        })
        .catch((error: unknown) => {
          unsaid(); // refused or failed: its error says what happened
          // The client's refusal, before anything was sent, said in the command line's words.
          if (error instanceof KmsError && error.code === 'INVALID_ARGUMENT' && error.status === 0 && custodians === undefined) {
            throw new UsageError(
              'with --attest and no admin token, rotate initializes the KMS in the clear (no service key exists yet): without --custodians the shares would cross the way in plaintext; give --custodians <file>, or --allow-plaintext-shares where the way is trusted',
            );
          }
          throw error;
        });
      try {
        const next = rotation.state === 'pending-verification' ? 'pending: prove the new shares with `tee-kms verify`' : 'current';
        if (options.outDir === undefined) {
          onlyCopyOnStdout(`standard output was closed before it took the shares: ${happened(rotation)}, and its shares are lost; ${remedy(rotation)}`);
          return print(
            json,
            rotation.shares,
            rotation.shares.map((share) => JSON.stringify(share)),
          );
        }
        const files: string[] = [];
        const unwritten: Unwritten[] = [];
        // Numbered in answer order, which is the custodians' order: share-1.json is the first custodian's.
        // Every share is tried: one that cannot be written must not cost the ones after it.
        for (const [i, share] of rotation.shares.entries()) {
          const file = join(options.outDir, `share-${i + 1}.json`);
          try {
            await writeSecretFile(file, `${JSON.stringify(share)}\n`);
            files.push(file);
          } catch (error) {
            unwritten.push({ file, share, reason: (error as Error).message });
          }
        }
        if (unwritten.length > 0) sharesNotWritten(json, rotation, files, unwritten);
        print(json, { state: rotation.state, files }, `${files.length} shares written (${files.join(', ')}); the new root key is ${next}`);
      } finally {
        // Written or printed, or said lost with the reason: from here on an interrupt loses nothing unsaid.
        unsaid();
      }
    });

  program
    .command('verify <shareFiles...>')
    .description('prove the shares of a pending rotation (admin token): the new root key becomes current')
    .action(async (shareFiles: string[], _options, command: Command) => {
      const client = clientFor(command, 'admin');
      const shares = await readSharesToSend(shareFiles);
      await refuseNotSealedToRecoveryKey(client, shares, shareFiles, decryptToFile);
      const result = await client.verify(shares);
      print(globals(command).json === true, result, `shares verified: root key ${String(result['rootKeyId'])} is current`);
    });

  program
    .command('recover [shareFile]')
    .description('send one share (a file, or - for standard input) to unseal the root key after a restart, or all of them with --interactive')
    .option('--interactive', 'prompt for shares (not echoed) until the root key is recovered')
    .option('--custodian-key <file>', 'with --attest, your custodian private key: where custodians are pinned, its recovery challenge goes with the share')
    .action(async (shareFile: string | undefined, options: { interactive?: boolean; custodianKey?: string }, command: Command) => {
      if ((shareFile === undefined) === (options.interactive !== true)) throw new UsageError('give one share file, or --interactive');
      if (options.custodianKey !== undefined && globals(command).attest === undefined) {
        throw new UsageError('--custodian-key needs --attest: the recovery challenge goes only sealed to an attested recovery key');
      }
      // One key answers one custodian's challenge, and each custodian counts once.
      if (options.custodianKey !== undefined && options.interactive === true) {
        throw new UsageError('--custodian-key goes with one share file: each custodian sends their own share with their own key');
      }
      const client = clientFor(command);
      const json = globals(command).json === true;
      const key = options.custodianKey === undefined ? undefined : await readPrivateKey(options.custodianKey);
      const custodian = key === undefined ? {} : { custodianKey: key.privateKey };
      if (shareFile !== undefined) {
        const share = await readShareToSend(shareFile);
        // Encrypted to this very custodian's key: certainly not sealed to the recovery key, and known without asking.
        if (key !== undefined && jweKid(share.content) === key.thumbprint) {
          const attest = globals(command).attest!;
          throw stillEncrypted(nameOf(shareFile), {
            to: ` to your custodian key, kid ${key.thumbprint}`,
            example: `\`tee-kms custodian decrypt ${options.custodianKey!} ${fileOf(shareFile)} | tee-kms --attest ${attest} recover --custodian-key ${options.custodianKey!} -\``,
            after: '; nothing was sent',
          });
        }
        await refuseNotSealedToRecoveryKey(client, [share], [shareFile], decryptToRecover);
        const progress = await client.recover(share, custodian);
        return print(json, progress, progressText(progress));
      }
      print(json, await recoverInteractively(client, custodian), 'tee-kms is unsealed');
    });
}

/** What names a share argument in messages. */
const nameOf = (arg: string): string => (arg === '-' ? 'the share on standard input' : `the share file ${arg}`);
/** The share argument in an example command. */
const fileOf = (arg: string): string => (arg === '-' ? '<share file>' : arg);
/**
 * Where plaintext shares are refused (production), a decrypted share must be sealed to the attested
 * recovery key: --attest does that; `custodian seal-share` is the custodian's own way.
 */
const SEAL_IT = ', with --attest, which seals it to the attested recovery key (or seal it yourself with `custodian seal-share`, docs/custodians.md)';
/** How to decrypt a share for recover: along a pipe, never into a file. */
const decryptToRecover = (arg: string): string =>
  `\`tee-kms custodian decrypt <key file> ${fileOf(arg)} | tee-kms --attest <attest file> recover -\`${SEAL_IT}`;
/** How to decrypt a share for verify or rotate --shares, which take files. */
const decryptToFile = (arg: string): string => `\`tee-kms custodian decrypt <key file> ${fileOf(arg)} -o <new file>\` and give that file${SEAL_IT}`;

/**
 * Before anything is sent: a share that is a JWE goes as it is, so it must be sealed to this
 * sealing service's recovery key (`custodian seal-share`), which its header's `kid` names. A share
 * written by rotate --out-dir is encrypted to its custodian, whose `kid` it names instead: the
 * service cannot open it (and shares sent to verify or to name custodians spend the recovery key
 * for every custodian of the round, whatever came of it). Nothing in the header tells the two
 * apart but that `kid`: the recovery key's is asked for (GET /rootKey/recover, no credentials,
 * nothing sent).
 */
async function refuseNotSealedToRecoveryKey(
  client: KmsClient,
  shares: readonly Share[],
  args: readonly string[],
  example: (arg: string) => string,
): Promise<void> {
  const sealed = shares.flatMap((share, i) => (isCompactJwe(share.content) ? [{ arg: args[i]!, kid: jweKid(share.content) }] : []));
  if (sealed.length === 0) return;
  let recoveryKid: string;
  try {
    recoveryKid = await client.recoveryKeyId();
  } catch (error) {
    // Unreachable: so is the sealing service for the shares. Any other answer (an older service,
    // one whose root key comes from a secret): the shares go as before, and it judges them.
    if (error instanceof KmsError && !['UNREACHABLE', 'TLS', 'TIMEOUT'].includes(error.code)) return;
    throw error;
  }
  const stray = sealed.find(({ kid }) => kid !== recoveryKid);
  if (stray === undefined) return;
  throw stillEncrypted(nameOf(stray.arg), {
    to: `${stray.kid === undefined ? ' that names no key' : ` to kid ${stray.kid}`}, not to this sealing service's recovery key, kid ${recoveryKid}: rotate --out-dir writes each share encrypted to its custodian`,
    example: example(stray.arg),
    after: '; nothing was sent (a share sealed with `custodian seal-share` to an earlier recovery key is sealed again)',
  });
}

interface RotateOptions {
  readonly custodians?: string;
  readonly shares?: string[];
  readonly outDir?: string;
  readonly printShares?: boolean;
  readonly allowPlaintextShares?: boolean;
}

/** What a rotate that answered did to the KMS. */
function happened(rotation: Rotation): string {
  return rotation.state === 'current'
    ? `the KMS was initialized: its new root key ${rotation.rootKeyId} is current`
    : `the KMS was rotated: its new root key ${rotation.rootKeyId} is pending verification (the current one stays until \`tee-kms verify\`)`;
}

/** What to do when a rotate's shares are lost. */
function remedy(rotation: Rotation): string {
  return rotation.state === 'current'
    ? 'while the KMS is still unsealed, rotate again with the admin token and verify the new shares, or it can never be unsealed after a restart'
    : 'rotate again for new shares (the current root key stays)';
}

/** A share file named `share-….json`: rotate --out-dir writes share-1.json to share-<n>.json. */
const SHARE_FILE = /^share-.*\.json$/;

/**
 * Before anything is sent: a directory that already holds share files (an earlier rotation's)
 * is refused. The answer would be written beside them, and every file that exists is a share
 * that cannot be written; the number of shares is the server's to say, so any share-*.json counts.
 */
async function refuseShareFiles(dir: string): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((name) => SHARE_FILE.test(name)).sort();
  } catch (error) {
    throw new Refused(`cannot list ${dir} (${(error as NodeJS.ErrnoException).code ?? 'error'}): nothing was sent`);
  }
  if (names.length === 0) return;
  const listed = names.length > 3 ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more` : names.join(', ');
  throw new UsageError(
    `--out-dir ${dir} already holds share files (${listed}): rotate writes share-1.json, share-2.json… there and never overwrites one; move them away or give another directory (nothing was sent)`,
  );
}

interface Unwritten {
  readonly file: string;
  readonly share: Share;
  readonly reason: string;
}

/**
 * The KMS rotated, and some of the answer's shares could not be written (a file made in the
 * meantime, a full disk): those are printed on standard output, their only copy, and stderr says
 * loudly what happened, which shares went where and why. Exit status 1.
 */
function sharesNotWritten(json: boolean, rotation: Rotation, files: readonly string[], unwritten: readonly Unwritten[]): never {
  const total = rotation.shares.length;
  const stake =
    rotation.state === 'current'
      ? 'without enough of them (the threshold) the KMS can never be unsealed after a restart'
      : 'without enough of them (the threshold) the new root key cannot be verified';
  const named = unwritten.map((u) => u.file).join(', ');
  onlyCopyOnStdout(`standard output was closed: the shares meant for ${named} are lost; ${remedy(rotation)}`);
  print(
    json,
    { state: rotation.state, files, unwritten: unwritten.map(({ file, share }) => ({ file, share })) },
    unwritten.map((u) => JSON.stringify(u.share)),
  );
  say(`WARNING: ${happened(rotation)}, but ${unwritten.length} of its ${total} shares could not be written:`);
  for (const u of unwritten) say(`  ${u.reason}`);
  say(files.length === 0 ? 'no share was written' : `written: ${files.join(', ')}`);
  say(
    `printed on standard output instead${json ? ' (in "unwritten")' : ', one JSON object a line, in this order'}: the shares meant for ${named}. ` +
      `That is their only copy: save each now where only you can read it (as the file it was meant for); ${stake}.`,
  );
  throw new Incomplete(`rotate: ${unwritten.length} of ${total} shares not written to files, only printed on standard output`);
}

function progressText(progress: RecoveryProgress): string {
  return progress.sealed
    ? `share accepted: ${progress.progress} of ${progress.t} received`
    : `root key recovered: tee-kms is unsealed (root key ${progress.rootKeyId ?? ''})`;
}

/** Asks for shares until the root key is recovered; a refused share is said and asked again. */
async function recoverInteractively(client: KmsClient, custodian: { readonly custodianKey?: KeyObject }): Promise<RecoveryProgress> {
  const status = await client.sealStatus();
  if (status['sealed'] !== true) throw new Refused('tee-kms is not sealed: there is nothing to recover');
  let received = Number(status['progress'] ?? 0);
  // The key's t; a recovery's answer says how many it takes (more, where pinned custodians ask more).
  let t = Number(status['t']);
  const lines = secretLines();
  try {
    for (;;) {
      const line = await lines.next(`share ${received + 1} of ${t}: `);
      if (line === undefined) throw new Refused(`no more shares: tee-kms is still sealed (${received} of ${t} received)`);
      if (line.trim() === '') continue;
      let share: Share;
      try {
        share = shareToSend(line.trim(), 'that line');
        await refuseNotSealedToRecoveryKey(client, [share], ['-'], decryptToRecover);
      } catch (error) {
        if (!(error instanceof LocalError)) throw error;
        say(`${error.message}; try again`);
        continue;
      }
      try {
        const progress = await client.recover(share, custodian);
        if (!progress.sealed) return progress;
        received = progress.progress;
        t = progress.t;
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
