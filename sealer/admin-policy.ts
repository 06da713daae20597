import { readFile } from 'node:fs/promises';
import { IDENTITY_PATTERN } from '../shared/attestation/sample.js';
import { KmsError } from '../shared/errors.js';

/**
 * What the sealing service's admin routes do, each granted apart (docs/sealer-protocol.md).
 * `sealer-peer` is the role of the other replicas of the sealing service: the root key itself.
 */
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
        if (!IDENTITY_PATTERN.test(value))
          throw new KmsError('CONFIG', `${source}: ${operation}[${i}] must be 96 hex digits (an init-data digest, a TD's MRCONFIGID)`);
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

  /** This policy with `identity` as the one holder of `sealer-peer` (a measured policy cannot name its own TD). */
  withPeer(identity: string): AdminPolicy {
    return new AdminPolicy(new Map([...this.grants, ['sealer-peer', new Set([identity])]]));
  }

  allows(operation: AdminOperation, identity: string): boolean {
    return this.grants.get(operation)?.has(identity) ?? false;
  }

  /** For the start-up log: how many identities each operation is granted to. */
  describe(): string {
    return ADMIN_OPERATIONS.filter((operation) => operation !== 'sealer-peer' || this.grants.has(operation))
      .map((operation) => `${operation} ${this.grants.get(operation)?.size ?? 0}`)
      .join(', ');
  }
}
