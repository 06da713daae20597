/**
 * The sealing service's policies, measured with its TD (KMS_SEALER_INIT_DATA_FILE). A policy in a
 * file (KMS_SEALER_TDX_POLICY_FILE, KMS_SEALER_ADMIN_POLICY_FILE) is whatever whoever writes that
 * file (in Kubernetes, a ConfigMap) wants: a TD of their own admitted, `sealer-peer` granted to
 * it, and the root key with it. A policy carried in the TD's init-data is part of the TD's
 * identity instead: changing it changes the MRCONFIGID that the functions pin.
 *
 * The file itself still comes from the host, so it counts only once its digest is this TD's own
 * identity, read from this TD's own evidence at start. A document cannot name its own digest, so
 * the service adds it itself: to the TDX policy's `mrConfigId` (its replicas attest to each other)
 * and as the one `sealer-peer` grant.
 */
import { loadInitDataFile } from '../shared/attestation/init-data.js';
import { ownInitData } from '../shared/attestation/own-identity.js';
import type { Attester } from '../shared/attestation/types.js';
import { KmsError } from '../shared/errors.js';
import { AdminPolicy } from './admin-policy.js';
import type { SealerOptions } from './options.js';

/** The init-data entries that hold the policies (knative/install.sh writes them). */
export const TDX_POLICY_ENTRY = 'tdx-policy.json';
export const ADMIN_POLICY_ENTRY = 'admin-policy.json';

export interface MeasuredPolicies {
  /** This TD's identity: its init-data digest, which its own evidence confirmed. */
  readonly identity: string;
  /** The TDX reference values (JSON, this TD's identity added to `mrConfigId`), and where they came from. */
  readonly tdxPolicy?: { readonly json: unknown; readonly source: string };
  readonly adminPolicy?: { readonly policy: AdminPolicy; readonly source: string };
}

type Options = Pick<SealerOptions, 'initDataFile' | 'tdxPolicyFile' | 'adminPolicyFile'>;

/** Undefined without KMS_SEALER_INIT_DATA_FILE. Throws KmsError('CONFIG'): the service does not start. */
export async function loadMeasuredPolicies(options: Options, attester: Attester): Promise<MeasuredPolicies | undefined> {
  const path = options.initDataFile;
  if (path === '') return undefined;
  const initData = await loadInitDataFile(path, 'KMS_SEALER_INIT_DATA_FILE');
  const identity = await ownInitData(initData, attester, { variable: 'KMS_SEALER_INIT_DATA_FILE', path, sampleVariable: 'KMS_SEALER_SAMPLE_INIT_DATA' });
  const entry = (name: string): { text: string; source: string } | undefined =>
    Object.hasOwn(initData.data, name) ? { text: initData.data[name]!, source: `KMS_SEALER_INIT_DATA_FILE ${path} ("${name}")` } : undefined;

  const tdx = entry(TDX_POLICY_ENTRY);
  if (tdx !== undefined && options.tdxPolicyFile !== '') {
    throw new KmsError('CONFIG', `KMS_SEALER_TDX_POLICY_FILE would replace the TDX policy measured in ${tdx.source}: unset it`);
  }
  const admin = entry(ADMIN_POLICY_ENTRY);
  if (admin !== undefined && options.adminPolicyFile !== '') {
    throw new KmsError('CONFIG', `KMS_SEALER_ADMIN_POLICY_FILE would replace the admin policy measured in ${admin.source}: unset it`);
  }
  return {
    identity,
    ...(tdx === undefined ? {} : { tdxPolicy: { json: withOwnConfigId(json(tdx.text, tdx.source), identity, tdx.source), source: tdx.source } }),
    ...(admin === undefined ? {} : { adminPolicy: { policy: adminWithOwnPeer(json(admin.text, admin.source), admin.source, identity), source: admin.source } }),
  };
}

function json(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new KmsError('CONFIG', `${source} is not JSON`, { cause: error });
  }
}

/**
 * A policy that pins `mrConfigId`, or admits workloads by their agent policy (`agentPolicies`),
 * admits this TD's replicas too, by identity; one that pins neither admits them already. One that
 * demands init-data would refuse them (they attest without it): refused.
 */
function withOwnConfigId(policy: unknown, identity: string, source: string): unknown {
  if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) return policy; // createTdxPolicy says what is wrong
  if (Object.hasOwn(policy, 'initData')) {
    throw new KmsError(
      'CONFIG',
      `${source}: a measured TDX policy may not demand initData: this service's replicas attest without init-data, and mrConfigId pins whole documents`,
    );
  }
  const { mrConfigId, agentPolicies } = policy as Record<string, unknown>;
  if (Array.isArray(mrConfigId)) return { ...policy, mrConfigId: [...(mrConfigId as unknown[]), identity] };
  return agentPolicies === undefined ? policy : { ...policy, mrConfigId: [identity] };
}

function adminWithOwnPeer(json: unknown, source: string, identity: string): AdminPolicy {
  if (typeof json === 'object' && json !== null && Object.hasOwn(json, 'sealer-peer')) {
    throw new KmsError(
      'CONFIG',
      `${source} grants "sealer-peer": a measured admin policy may not, since it hands over the root key and the service grants it to its own identity (${identity}) alone`,
    );
  }
  return AdminPolicy.parse(json, source).withPeer(identity);
}
