/** `custodian keygen|decrypt`: the custodians' side of rotate with --custodians (docs/custodians.md). */
import type { Command } from 'commander';
import { decrypt } from '../custodian/decrypt.js';
import { keygen, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE } from '../custodian/keygen.js';
import { say } from '../io.js';

export function addCustodianCommands(program: Command): void {
  const custodian = program.command('custodian').description("a custodian's key pair, and opening a share encrypted to it");
  custodian
    .command('keygen <dir>')
    .description('make a key pair in <dir> (private key 0600) and print the public key for the operator')
    .action(async (dir: string) => {
      const publicJwk = await keygen(dir, say);
      say(`wrote ${dir}/${PRIVATE_KEY_FILE} (your private key: keep it, and keep it secret) and ${dir}/${PUBLIC_KEY_FILE}; give the operator the public key`);
      process.stdout.write(`${JSON.stringify(publicJwk)}\n`);
    });
  custodian
    .command('decrypt <privateKeyFile> <share>')
    .description('open a share encrypted to your key (a JWE or {"index","content"}, a file holding it, or - for stdin)')
    .action(async (keyFile: string, share: string) => {
      process.stdout.write(`${JSON.stringify(await decrypt(keyFile, share))}\n`);
    });
}
