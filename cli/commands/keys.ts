/** `enroll`, `primary-key create`, `data-key create|get`: a user's keys. */
import type { Command } from 'commander';
import { clientFor, globals } from '../config.js';
import { print, writeSecretFile } from '../io.js';

export function addKeyCommands(program: Command): void {
  program
    .command('enroll')
    .description('enroll --user with the token of TEE_KMS_TOKEN or --token-file')
    .action(async (_options, command: Command) => {
      // The user's token is needed: never one made up here, as it would have to be printed.
      const client = clientFor(command, 'user');
      const { json } = globals(command);
      const { user } = await client.enroll();
      print(json === true, { user, created: true }, `user ${user} enrolled`);
    });

  const primary = program.command('primary-key').description("the user's primary keys");
  primary
    .command('create <pk>')
    .description('create the primary key <pk>')
    .action(async (pk: string, _options, command: Command) => {
      await clientFor(command, 'user').createPrimaryKey(pk);
      print(globals(command).json === true, { primaryKey: pk, created: true }, `primary key ${pk} created`);
    });

  const data = program.command('data-key').description('data keys under a primary key');
  data
    .command('create <pk> <dk>')
    .description('create the data key <dk> under the primary key <pk>')
    .action(async (pk: string, dk: string, _options, command: Command) => {
      await clientFor(command, 'user').createDataKey(pk, dk);
      print(globals(command).json === true, { primaryKey: pk, dataKey: dk, created: true }, `data key ${dk} created under ${pk}`);
    });
  data
    .command('get <pk> <dk>')
    .description('print the data key <dk> (base64), or write it to a new file')
    .option('--out <file>', 'write the key (base64) to this new file, mode 0600; never overwrites (- for standard output)')
    .action(async (pk: string, dk: string, options: { out?: string }, command: Command) => {
      const { key } = await clientFor(command, 'user').getDataKey(pk, dk);
      const json = globals(command).json === true;
      // `-` is standard output, as for every other --out and -o.
      if (options.out === undefined || options.out === '-') return print(json, { primaryKey: pk, dataKey: dk, key }, key);
      await writeSecretFile(options.out, `${key}\n`);
      print(json, { primaryKey: pk, dataKey: dk, file: options.out }, `data key ${dk} written to ${options.out}`);
    });
}
