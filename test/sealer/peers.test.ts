import { describe, expect, it } from 'vitest';
import { otherReplicas } from '../../sealer/peers.js';

// A StatefulSet gives each replica the same KMS_SEALER_PEERS: every pod lists all of them.
const ALL = [0, 1, 2].map((i) => `https://tee-kms-sealer-${i}.tee-kms-sealer-peers:9877`);

describe('otherReplicas', () => {
  it("drops the entry whose first label is this pod's host name, and only that one", () => {
    expect(otherReplicas(ALL, 'tee-kms-sealer-1')).toEqual([ALL[0], ALL[2]]);
    expect(otherReplicas(ALL, 'TEE-KMS-SEALER-0.tee-kms-sealer-peers.tee-kms.svc.cluster.local')).toEqual([ALL[1], ALL[2]]);
  });

  it('keeps every peer on another host, including a name that only begins like this one', () => {
    expect(otherReplicas(ALL, 'tee-kms-sealer')).toEqual(ALL);
    // An address is never taken for a host name (npm start's replicas are all on 127.0.0.1).
    expect(otherReplicas(['https://127.0.0.1:9001', 'https://127.0.0.1:9002'], '127')).toEqual(['https://127.0.0.1:9001', 'https://127.0.0.1:9002']);
  });
});
