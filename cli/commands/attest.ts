/** `attest`: the service's evidence, verified against the --attest options, and what it establishes. */
import type { Command } from 'commander';
import { clientFor, globals } from '../config.js';
import { UsageError } from '../errors.js';
import { print } from '../io.js';

export function addAttestCommand(program: Command): void {
  program
    .command('attest')
    .description("fetch the service's evidence for a fresh nonce, verify it against --attest, and print the verified measurements")
    .action(async (_options, command: Command) => {
      if (globals(command).attest === undefined) throw new UsageError('attest needs --attest <file>: the policy to verify the evidence against');
      const attestation = await clientFor(command).attestation();
      const claims = Object.entries(attestation.claims).map(([name, value]) => `${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
      const text = [`tee: ${attestation.tee}`, `rootKeyId: ${attestation.rootKeyId}`, `serviceKey: ${attestation.serviceKey.x}`, ...claims];
      print(globals(command).json === true, attestation, text);
    });
}
