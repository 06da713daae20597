import { readFile } from 'node:fs/promises';
import { AGENT_POLICY_ENTRY } from '../shared/attestation/function-entries.js';
import { IDENTITY_PATTERN } from '../shared/attestation/sample.js';
import { KmsError } from '../shared/errors.js';

/**
 * What the sealing service's admin routes do, each granted apart (docs/sealer-protocol.md).
 * `sealer-peer` is the role of the other replicas of the sealing service: the root key itself.
 */
/** A grant to every function whose init-data has this agent policy: `policy.rego:<SHA-384 hex>`. */
const AGENT_POLICY_GRANT = /^policy\.rego:([0-9a-f]{96})$/;

export const ADMIN_OPERATIONS = ['rotate', 'verify', 'recover', 'seal', 'sealer-peer'] as const;
export type AdminOperation = (typeof ADMIN_OPERATIONS)[number];

/**
 * Which workload identities (init-data digests: a TD's MRCONFIGID) may call which admin operation.
 * Passing attestation lets a workload fetch the root key; it does not make it an administrator:
 * that takes a grant here, so a pod that merely shares the functions' measurements but not the
 * rotate function's init-data cannot rotate, verify, recover or seal.
 */
export class AdminPolicy {
  private constructor(readonly grants: ReadonlyMap<AdminOperation, ReadonlySet<string>>) {}

  /** No file: nobody may call an admin route. */
  static none(): AdminPolicy {
    return new AdminPolicy(new Map());
  }

  static parse(json: unknown, source: string): AdminPolicy {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new KmsError('CONFIG', `${source}: the admin policy must be a JSON object {"rotate": [id, …], "verify": […], "recover": […], "seal": […]}`);
    }
    const grants = new Map<AdminOperation, Set<string>>();
    for (const [operation, ids] of Object.entries(json)) {
      if (!(ADMIN_OPERATIONS as readonly string[]).includes(operation)) {
        throw new KmsError('CONFIG', `${source}: unknown operation "${operation.slice(0, 32)}" (known: ${ADMIN_OPERATIONS.join(', ')})`);
      }
      if (!Array.isArray(ids)) throw new KmsError('CONFIG', `${source}: "${operation}" must be a list of identities`);
      const set = new Set<string>();
      ids.forEach((id: unknown, i) => {
        const value = typeof id === 'string' ? id.toLowerCase().replace(/^0x/, '') : '';
        const agentPolicy = AGENT_POLICY_GRANT.exec(value);
        if (!IDENTITY_PATTERN.test(value) && agentPolicy === null)
          throw new KmsError(
            'CONFIG',
            `${source}: ${operation}[${i}] must be 96 hex digits (an init-data digest, a TD's MRCONFIGID) or "${AGENT_POLICY_ENTRY}:" and 96 hex digits (the SHA-384 of a function's agent policy)`,
          );
        set.add(value);
      });
      grants.set(operation as AdminOperation, set);
    }
    return new AdminPolicy(grants);
  }

  static async load(path: string): Promise<AdminPolicy> {
    if (path === '') return AdminPolicy.none();
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      throw new KmsError('CONFIG', `KMS_SEALER_ADMIN_POLICY_FILE names a file that cannot be read: ${path}`, { cause: error });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new KmsError('CONFIG', `KMS_SEALER_ADMIN_POLICY_FILE ${path} is not JSON`, { cause: error });
    }
    return AdminPolicy.parse(json, `KMS_SEALER_ADMIN_POLICY_FILE ${path}`);
  }

  /** Whether any grant names an agent policy (`policy.rego:…`), which only a service that knows its own identity can apply. */
  get namesAgentPolicies(): boolean {
    return [...this.grants.values()].some((ids) => [...ids].some((id) => AGENT_POLICY_GRANT.test(id)));
  }

  /** This policy with `identity` as the one holder of `sealer-peer` (a measured policy cannot name its own TD). */
  withPeer(identity: string): AdminPolicy {
    return new AdminPolicy(new Map([...this.grants, ['sealer-peer', new Set([identity])]]));
  }

  /**
   * Whether `operation` is granted to a workload with this identity, or (`agentPolicy`, from its
   * verified init-data: trustingFunction) to a function that trusts this service, with that agent policy.
   */
  allows(operation: AdminOperation, identity: string, agentPolicy?: string): boolean {
    return this.grantFor(operation, identity, agentPolicy) !== undefined;
  }

  /** The entry that grants `operation`: the identity itself, else its agent policy's entry; undefined if none does. */
  grantFor(operation: AdminOperation, identity: string, agentPolicy?: string): string | undefined {
    const granted = this.grants.get(operation);
    if (granted === undefined) return undefined;
    if (granted.has(identity)) return identity;
    const entry = agentPolicy === undefined ? undefined : `${AGENT_POLICY_ENTRY}:${agentPolicy}`;
    return entry !== undefined && granted.has(entry) ? entry : undefined;
  }

  /** For the start-up log: how many identities each operation is granted to. */
  describe(): string {
    return ADMIN_OPERATIONS.filter((operation) => operation !== 'sealer-peer' || this.grants.has(operation))
      .map((operation) => `${operation} ${this.grants.get(operation)?.size ?? 0}`)
      .join(', ');
  }
}
