/**
 * `custodian decrypt <private key file> <share> [-o <file>] [--print-shares]`: a custodian opens
 * their share of a rotation's answer. The plaintext goes to standard output (a pipe, or a terminal
 * only with --print-shares) or to a new 0600 file.
 */
import { jweKid, openShare } from '../../shared/custody/share-jwe.js';
import { isKmsError } from '../../shared/errors.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { Refused } from '../errors.js';
import { refuseSecretOutput, writeSecretFile } from '../io.js';
import { checkedShare, indexOfShare, readPrivateKey, sealedShareFrom, textOrFile } from './inputs.js';

export interface DecryptOutput {
  /** A new file for the share (0600, all or nothing, never overwritten); `-` or none: standard output. */
  readonly out?: string | undefined;
  readonly printShares?: boolean | undefined;
}

/** The share for standard output, or, with `out`, its index and the file it was written to. */
export async function decryptTo(keyFile: string, shareArg: string, output: DecryptOutput): Promise<Share | { index: number; file: string }> {
  const file = output.out === '-' ? undefined : output.out;
  if (file === undefined) refuseSecretOutput('the share', '-o <file>', output.printShares);
  const share = await decrypt(keyFile, shareArg);
  if (file === undefined) return share;
  await writeSecretFile(file, `${JSON.stringify(share)}\n`);
  return { index: share.index, file };
}

/**
 * The plaintext share, always as `{"index", "content"}`: the index is the share object's, when
 * given, else the share's own x coordinate (its last byte), which is its index by construction.
 */
export async function decrypt(keyFile: string, shareArg: string): Promise<Share> {
  const key = await readPrivateKey(keyFile);
  const sealed = sealedShareFrom(await textOrFile(shareArg, 'share file'));
  const kid = jweKid(sealed.jwe);
  // Said plainly, rather than as a failed decryption: the operator handed out the wrong share.
  if (kid !== undefined && kid !== key.thumbprint) {
    throw new Refused(`this share is encrypted to another custodian key (kid ${kid}); the key in ${keyFile} has kid ${key.thumbprint}`);
  }
  let content: string;
  try {
    content = await openShare(sealed.jwe, key.privateKey);
  } catch (error) {
    if (isKmsError(error)) throw new Refused(error.message);
    throw error;
  }
  return checkedShare(content, sealed.index ?? indexOfShare(content), 'the decrypted share');
}
