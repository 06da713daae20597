/** `custodian keygen|decrypt`: the custodians' side of rotate with --custodians (docs/custodians.md). */
import type { Command } from 'commander';
import { decryptTo, type DecryptOutput } from '../custodian/decrypt.js';
import { keygen } from '../custodian/keygen.js';
import { say, writeStdout } from '../io.js';

export function addCustodianCommands(program: Command): void {
  const custodian = program.command('custodian').description("a custodian's key pair, and opening a share encrypted to it");
  custodian
    .command('keygen <dir>')
    .description('make a key pair in <dir> (private key 0600) and print the public key for the operator')
    .action(async (dir: string) => {
      writeStdout(`${JSON.stringify(await keygen(dir, say))}\n`);
    });
  custodian
    .command('decrypt <privateKeyFile> <share>')
    .description('open a share encrypted to your key (a JWE or {"index","content"}, a file holding it, or - for stdin)')
    .option('-o, --out <file>', 'write the share to this new file (0600, never overwritten) instead of standard output')
    .option('--print-shares', 'print the share even when standard output is a terminal')
    .action(async (keyFile: string, share: string, options: DecryptOutput) => {
      // JSON whatever --json says, as keygen's: the result is the share object, or where it went.
      writeStdout(`${JSON.stringify(await decryptTo(keyFile, share, options))}\n`);
    });
}
