/**
 * The sealer's replicas in the Knative manifests (docs/replicas.md, Kubernetes): the overlays as
 * kubectl kustomize renders them, and knative/install.sh against the recording kubectl
 * (test/knative/fake/kubectl): the certificate covers the replicas' names, the rollout waits for
 * them one at a time, and each run says what it restarts.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { requireTool, skipWithout } from '../support/tools.js';
import { INSTALL, runInstall } from './install-run.js';
import { KNATIVE, KUBECTL, ROOT_KEY_COMPONENT, id, render, renderComposed, type Json, type Resource } from './support.js';

const temps: string[] = [];
afterAll(() => temps.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
};

const SEALER_REPLICAS = Number(/^SEALER_REPLICAS=(\d+)$/m.exec(readFileSync(INSTALL, 'utf8'))![1]);
const env = (container: Json, name: string) => (container.env as Json[]).find((e) => e.name === name)?.value as string | undefined;
const sealerOf = (resources: readonly Resource[]) => resources.find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!;
const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);

describe.skipIf(skipWithout(KUBECTL))('the sealer replicas, as each overlay renders them', () => {
  const overlays: [string, () => Resource[]][] = [
    ['dev', () => render(join(KNATIVE, 'overlays', 'dev'))],
    ['tdx', () => render(join(KNATIVE, 'overlays', 'tdx'))],
    [
      'tdx with the root key Secret (mode 1)',
      () => renderComposed([join(KNATIVE, 'base'), join(KNATIVE, 'functions', 'per-function')], [join(KNATIVE, 'components', 'tdx'), ROOT_KEY_COMPONENT]),
    ],
  ];
  for (const [name, rendered] of overlays) {
    describe(name, () => {
      requireTool(KUBECTL);
      const resources = rendered();
      const sealer = sealerOf(resources);
      const pod = sealer.spec.template;
      const container = pod.spec.containers[0];
      const names = Array.from({ length: SEALER_REPLICAS }, (_, i) => `${sealer.metadata.name}-${i}.${sealer.spec.serviceName}`);

      it(`a StatefulSet of ${SEALER_REPLICAS} (install.sh's count), started in parallel, updated one pod at a time`, () => {
        expect(SEALER_REPLICAS).toBe(3);
        expect(sealer.spec.replicas).toBe(SEALER_REPLICAS);
        // OrderedReady would keep tee-kms-sealer-0 waiting for peers never started after all were lost.
        expect(sealer.spec.podManagementPolicy).toBe('Parallel');
        expect(sealer.spec.updateStrategy).toEqual({ type: 'RollingUpdate' });
        expect(resources.filter((r) => r.kind === 'Deployment')).toEqual([]);
      });

      it('ready on /readyz over HTTPS (503 while a peer may still hand it the key), so the rollout waits for each', () => {
        expect(container.readinessProbe.httpGet).toEqual({ scheme: 'HTTPS', path: '/readyz', port: 'https' });
        expect(container.livenessProbe.tcpSocket).toEqual({ port: 'https' });
      });

      it('pod anti-affinity on the host name (required under TDX, preferred in dev), selecting its own pods', () => {
        const anti = pod.spec.affinity.podAntiAffinity;
        const term =
          name === 'dev' ? anti.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm : anti.requiredDuringSchedulingIgnoredDuringExecution[0];
        expect(term.topologyKey).toBe('kubernetes.io/hostname');
        expect(matches(term.labelSelector.matchLabels, pod.metadata.labels)).toBe(true);
        expect(name === 'dev' ? anti.requiredDuringSchedulingIgnoredDuringExecution : anti.preferredDuringSchedulingIgnoredDuringExecution).toBeUndefined();
      });

      it('a PodDisruptionBudget keeps at least one replica available', () => {
        const pdbs = resources.filter((r) => r.kind === 'PodDisruptionBudget');
        expect(pdbs.map(id)).toEqual(['PodDisruptionBudget/tee-kms/tee-kms-sealer']);
        expect(pdbs[0]!.spec.minAvailable).toBe(1);
        expect(matches(pdbs[0]!.spec.selector.matchLabels, pod.metadata.labels)).toBe(true);
      });

      it('a headless Service gives each replica its stable name, published while not ready', () => {
        const peers = resources.find((r) => r.kind === 'Service' && r.metadata.name === sealer.spec.serviceName)!;
        expect(peers.spec.clusterIP).toBe('None');
        expect(peers.spec.publishNotReadyAddresses).toBe(true);
        expect(peers.spec.selector).toEqual(sealer.spec.selector.matchLabels);
        expect(peers.spec.ports[0].port).toBe(Number(env(container, 'KMS_SEALER_PORT')));
      });

      it('every replica names all of them as peers (each drops itself) and trusts the internal CA for their TLS', () => {
        const port = env(container, 'KMS_SEALER_PORT');
        expect(env(container, 'KMS_SEALER_PEERS')).toBe(names.map((n) => `https://${n}:${port}`).join(','));
        const ca = env(container, 'KMS_SEALER_PEER_CA_FILE')!;
        const mount = (container.volumeMounts as Json[]).find((m) => ca.startsWith(`${m.mountPath}/`))!;
        const volume = (pod.spec.volumes as Json[]).find((v) => v.name === mount.name);
        expect(volume.configMap.name).toBe('tee-kms-internal-ca');
        expect(ca).toBe(env(container, 'NODE_EXTRA_CA_CERTS'));
      });

      it("the functions' KMS_SEALER_URL lists the same replicas, in the same order (failover)", () => {
        const config = resources.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
        expect(config.data.KMS_SEALER_URL).toBe(env(container, 'KMS_SEALER_PEERS'));
      });

      it('the NetworkPolicy admits the replicas to each other on the sealer port', () => {
        const policy = resources.find((r) => r.kind === 'NetworkPolicy' && r.metadata.name === 'tee-kms-sealer')!;
        expect(matches(policy.spec.podSelector.matchLabels, pod.metadata.labels)).toBe(true);
        const port = Number(env(container, 'KMS_SEALER_PORT'));
        const fromPeers = (policy.spec.ingress as Json[]).filter((rule) =>
          (rule.from as Json[]).some((f) => f.podSelector !== undefined && matches(f.podSelector.matchLabels, pod.metadata.labels)),
        );
        expect(fromPeers.flatMap((rule) => rule.ports)).toEqual([{ protocol: 'TCP', port }]);
      });
    });
  }

  it("dev: the replicas claim their own sample identity, granted sealer-peer and nothing else; the functions' is not", () => {
    const dev = render(join(KNATIVE, 'overlays', 'dev'));
    const identity = env(sealerOf(dev).spec.template.spec.containers[0], 'KMS_SEALER_SAMPLE_INIT_DATA')!;
    const policy = JSON.parse(dev.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-admin-policy')!.data['admin-policy.json']);
    expect(policy['sealer-peer']).toEqual([identity]);
    for (const op of ['rotate', 'verify', 'recover', 'seal']) expect(policy[op], op).not.toContain(identity);
  });
});

function install(secrets: string, fake: Record<string, string> = {}) {
  return runInstall(tempDir('tee-kms-replicas-install-'), secrets, ['--tee', 'dev'], fake);
}

describe.skipIf(skipWithout(KUBECTL))('install.sh and the replicas (recording kubectl)', () => {
  requireTool(KUBECTL);
  const secrets = join(tempDir('tee-kms-replicas-secrets-'), 's');
  const first = install(secrets);
  const applied = () =>
    parseAllDocuments(readFileSync(`${first.log}.apply-k.yaml`, 'utf8'))
      .map((d) => d.toJS())
      .filter(Boolean) as Resource[];

  it('a first run creates the replicas, and waits for the StatefulSet to roll out', () => {
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toContain(`the sealer: ${SEALER_REPLICAS} replicas are created`);
    const applyK = first.calls.findIndex((c) => c.startsWith('apply -k '));
    const rollout = first.calls.findIndex((c) => c.startsWith('rollout status statefulset/tee-kms-sealer '));
    expect(applyK).toBeGreaterThan(-1);
    expect(rollout).toBeGreaterThan(applyK);
    // Never all at once: no restart of the sealer, no deletion of its pods.
    expect(first.calls.filter((c) => /^(rollout restart|delete)\b.*tee-kms-sealer/.test(c))).toEqual([]);
  });

  it("the sealer certificate names every replica's stable name, short and fully qualified", () => {
    const text = spawnSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', join(secrets, 'sealer.crt')], { encoding: 'utf8' }).stdout;
    const sans = text.split(/[,\n]/).map((s) => s.trim());
    for (let i = 0; i < SEALER_REPLICAS; i++) {
      for (const suffix of ['', '.tee-kms', '.tee-kms.svc', '.tee-kms.svc.cluster.local'])
        expect(sans).toContain(`DNS:tee-kms-sealer-${i}.tee-kms-sealer-peers${suffix}`);
    }
    expect(sans).toContain('DNS:tee-kms-sealer');
    // Every URL the functions and the peers use is covered.
    const urls = env(sealerOf(applied()).spec.template.spec.containers[0], 'KMS_SEALER_PEERS')!.split(',');
    for (const url of urls) expect(sans).toContain(`DNS:${new URL(url).hostname}`);
  });

  it('a re-run with the same inputs restarts nothing and says so; a changed input rolls the replicas one at a time', () => {
    const revision = sealerOf(applied()).spec.template.metadata.annotations['tee-kms/config-revision'];
    expect(revision).toMatch(/^[0-9a-f]{16}$/);
    const same = install(secrets, { FAKE_SEALER_REVISION: revision });
    expect(same.status, same.stderr).toBe(0);
    expect(same.stderr).toMatch(/the sealer: not restarted \(unchanged: the image, the S3 credentials, the sealer certificate, the internal CA/);
    const changed = install(secrets, { FAKE_SEALER_REVISION: 'ffffffffffffffff' });
    expect(changed.status, changed.stderr).toBe(0);
    expect(changed.stderr).toMatch(
      /the sealer: a rolling restart, one replica at a time, each ready \(unsealed by a peer\) before the next, because one of these changed: the image/,
    );
    expect(changed.calls.filter((c) => /^(rollout restart|delete)\b.*tee-kms-sealer/.test(c))).toEqual([]);
  });

  it('an install from before the replicas: its sealer Deployment is deleted after the checks and before apply -k', () => {
    const old = install(secrets, { FAKE_SEALER_DEPLOYMENT: '1' });
    expect(old.status, old.stderr).toBe(0);
    const del = old.calls.findIndex((c) => c.startsWith('delete deployment tee-kms-sealer '));
    expect(del).toBeGreaterThan(old.calls.findIndex((c) => c.startsWith('auth can-i delete deployments.apps')));
    expect(del).toBeLessThan(old.calls.findIndex((c) => c.startsWith('apply -k ')));
    expect(old.stderr).toContain(`the sealer Deployment (one replica) is replaced by the StatefulSet of ${SEALER_REPLICAS}`);
  });
});
