/**
 * The entries of a tee-kms function's init-data (knative/install.sh writes them), apart from the
 * TOML parser so that the verifiers can name them without loading it.
 */

/** The entry that holds the Kata agent policy: what the host may do in the TD. */
export const AGENT_POLICY_ENTRY = 'policy.rego';
/** The entry of a function's init-data that holds its policy for the sealing service (measured, as the rest). */
export const TRUSTED_SEALER_ENTRY = 'sealer-tdx-policy.json';
/** The entries a function's init-data may have, when a policy admits it by its agent policy (agentPolicies). */
export const FUNCTION_ENTRIES: readonly string[] = [AGENT_POLICY_ENTRY, TRUSTED_SEALER_ENTRY];

/**
 * The agent policy digest of a function's init-data, given each entry's SHA-384: that of
 * `policy.rego`, when the document has it and no entry besides FUNCTION_ENTRIES; else undefined.
 */
export function functionAgentPolicy(entryDigests: Readonly<Record<string, string>>): string | undefined {
  const names = Object.keys(entryDigests);
  if (!names.includes(AGENT_POLICY_ENTRY) || names.some((name) => !FUNCTION_ENTRIES.includes(name))) return undefined;
  return entryDigests[AGENT_POLICY_ENTRY];
}
