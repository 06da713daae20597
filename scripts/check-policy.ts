/**
 * Operator command: checks a TDX policy file (the sealer's reference values, docs/attestation.md)
 * exactly as the sealer loads it at start (sealer/verifiers.ts loadPolicyFile, which applies
 * createTdxPolicy), so that knative/install.sh refuses a file the sealer would refuse before it
 * reaches the cluster. Also refuses a duplicated field, which JSON.parse would silently drop.
 *
 *   node dist/scripts/check-policy.js <policy.json> [--within <reference.json>]
 *
 * With --within, also refuses a policy that would admit a TD the reference policy refuses
 * (mrConfigId aside): the sealing service admits a function only if its policy for the service is
 * no wider than the service's own (sealer/attestation/tdx/policy.ts trustingFunction).
 *
 * Exit status 0: prints the policy's one-line summary. 1: refused, the reason on stderr as
 * "<file>: <reason>". 2: usage.
 */
import { readFile } from 'node:fs/promises';
import { isMap, isScalar, parseDocument, visit } from 'yaml';
import { widerThan } from '../sealer/attestation/tdx/policy.js';
import { describePolicy, loadPolicyFile } from '../sealer/verifiers.js';

const [file, ...rest] = process.argv.slice(2);
const within = rest.length === 2 && rest[0] === '--within' ? rest[1] : undefined;
if (file === undefined || (rest.length > 0 && within === undefined)) {
  process.stderr.write('usage: check-policy <policy.json> [--within <reference.json>]\n');
  process.exit(2);
}

function refuse(reason: string): never {
  process.stderr.write(`${file}: ${reason}\n`);
  process.exit(1);
}

try {
  const policy = await loadPolicyFile(file);
  // JSON is YAML: its parser keeps every key, so the duplicates JSON.parse would hide show up.
  const duplicates = new Set<string>();
  visit(parseDocument(await readFile(file, 'utf8'), { uniqueKeys: false }), {
    Map(_, map) {
      if (!isMap(map)) return;
      const seen = new Set<string>();
      for (const { key } of map.items) {
        const name = String(isScalar(key) ? key.value : key);
        if (seen.has(name)) duplicates.add(name);
        seen.add(name);
      }
    },
  });
  if (duplicates.size > 0) refuse(`duplicate field ${[...duplicates].sort().join(', ')}`);
  if (within !== undefined) {
    const wider = widerThan(policy, await loadPolicyFile(within));
    if (wider !== undefined) refuse(`${wider}, which ${within} refuses: the sealing service would refuse every function trusting it so`);
  }
  process.stdout.write(`${describePolicy(policy)}\n`);
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  const prefix = `KMS_SEALER_TDX_POLICY_FILE ${file}`;
  refuse(message.startsWith(prefix) ? message.slice(prefix.length).replace(/^(: | is )/, '') : message);
}
