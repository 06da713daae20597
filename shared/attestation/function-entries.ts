/**
 * The entries of a tee-kms function's init-data (knative/install.sh writes them), apart from the
 * TOML parser so that the verifiers can name them without loading it.
 */

/** The entry that holds the Kata agent policy: what the host may do in the TD. */
export const AGENT_POLICY_ENTRY = 'policy.rego';
/** The entry of a function's init-data that holds its policy for the sealing service (measured, as the rest). */
export const TRUSTED_SEALER_ENTRY = 'sealer-tdx-policy.json';
/** The entries of a function's init-data, when a policy admits it by its agent policy (agentPolicies): both, and no other. */
export const FUNCTION_ENTRIES: readonly string[] = [AGENT_POLICY_ENTRY, TRUSTED_SEALER_ENTRY];
