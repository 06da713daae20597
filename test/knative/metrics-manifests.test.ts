/**
 * Metrics in the manifests and the example alert rules: every function pod and the sealer are
 * annotated for Prometheus's pod discovery on the port their process serves metrics on (bound to
 * 0.0.0.0 there, loopback elsewhere), Knative containers keep their one serving port, the sealer's
 * NetworkPolicy admits the scrape, and docs/prometheus-rules.example.yaml parses and names only
 * metrics the registries really expose.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { sealerCollector } from '../../sealer/metrics.js';
import { hostOptions } from '../../shared/http/host.js';
import { sealerOptions } from '../../sealer/options.js';
import { metricsHooks } from '../../shared/metrics/hooks.js';
import { createRegistry } from '../../shared/metrics/registry.js';
import { rotationCollector } from '../../shared/metrics/rotation.js';
import { parseExposition } from '../support/prometheus.js';
import { findTool, requireTool, skipWithout } from '../support/tools.js';
import { KNATIVE, KUBECTL, OVERLAYS, REPO, loadResources, render, type Json, type Resource } from './support.js';

const envOf = (container: Json): Record<string, string> => Object.fromEntries((container.env as Json[]).map((e) => [e.name, e.value]));

function expectScraped(resource: Resource, where: string): void {
  const template = (resource as Json).spec.template;
  const container = template.spec.containers[0];
  const env = envOf(container);
  const portVar = resource.kind === 'Service' ? hostOptions.metricsPort.env : sealerOptions.metricsPort.env;
  const bindVar = resource.kind === 'Service' ? hostOptions.metricsBind.env : sealerOptions.metricsHost.env;
  expect(template.metadata.annotations, where).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
  expect(template.metadata.annotations['prometheus.io/port'], where).toBe(env[portVar]);
  expect(env[bindVar], where).toBe('0.0.0.0');
  if (resource.kind === 'Service') {
    // Knative takes one container port, the serving one; the metrics port is scraped by annotation.
    expect(container.ports, where).toEqual([{ name: 'http1', containerPort: 8080 }]);
    expect(env[portVar], where).not.toBe('8080');
  } else {
    expect(container.ports, where).toContainEqual({ name: 'metrics', containerPort: Number(env[portVar]) });
  }
}

const functionFiles = [
  ...['attestation', 'create-data-key', 'get-data-key', 'rotate-root-key', 'welcome'].map((f) => join(KNATIVE, 'functions', 'per-function', `${f}.yaml`)),
  join(KNATIVE, 'functions', 'single-service', 'tee-kms.yaml'),
];

describe('metrics in the Knative manifests', () => {
  it('annotates every function Service and the sealer for scraping, on the port they serve metrics on', () => {
    for (const file of [...functionFiles, join(KNATIVE, 'base', 'sealer-statefulset.yaml')]) {
      for (const resource of loadResources(file)) expectScraped(resource, file);
    }
  });

  it("admits the scrape of the sealer's metrics port, and only that port, from the monitoring namespace", () => {
    const policy = loadResources(join(KNATIVE, 'base', 'network-policies.yaml')).find((r) => r.metadata.name === 'tee-kms-sealer') as Json;
    const port = Number(envOf(loadResources(join(KNATIVE, 'base', 'sealer-statefulset.yaml'))[0]!.spec.template.spec.containers[0]).KMS_SEALER_METRICS_PORT);
    const scrape = (policy.spec.ingress as Json[]).find((rule) => rule.from.some((f: Json) => f.namespaceSelector !== undefined));
    expect(scrape.ports).toEqual([{ protocol: 'TCP', port }]);
    // The API port stays open to sealer clients only.
    const api = (policy.spec.ingress as Json[]).find((rule) => rule.ports.some((p: Json) => p.port === 9877));
    expect(api.from).toEqual([{ podSelector: { matchLabels: { 'app.kubernetes.io/part-of': 'tee-kms', 'tee-kms/sealer-client': 'true' } } }]);
  });

  describe.skipIf(skipWithout(KUBECTL))('rendered overlays', () => {
    it.each(OVERLAYS)('%s keeps every pod scraped', (overlay) => {
      const resources = render(join(KNATIVE, 'overlays', overlay));
      const scraped = resources.filter(
        (r) => (r.kind === 'Service' && r.apiVersion.startsWith('serving.knative.dev')) || (r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer'),
      );
      expect(scraped.length).toBeGreaterThan(1);
      for (const resource of scraped) expectScraped(resource, `${overlay}: ${resource.kind}/${resource.metadata.name}`);
    });
  });
});

describe('docs/prometheus-rules.example.yaml', () => {
  const rules = parse(readFileSync(join(REPO, 'docs', 'prometheus-rules.example.yaml'), 'utf8')) as Json;

  /** Every metric family the host's and the sealer's registries expose (one registry: both collectors). */
  async function exposedNames(): Promise<Set<string>> {
    const status = {
      sealed: true,
      initialized: true,
      t: 3,
      n: 5,
      progress: 0,
      rootKeyId: null,
      verificationPending: false,
      pendingRootKeyId: null,
      integrityAlarm: null,
      source: 'shares' as const,
    };
    const registry: Registry = createRegistry([
      rotationCollector(async () => undefined),
      sealerCollector({ status: () => status, counts: () => ({ recoveries: 0, integrityAlarms: 0 }) }),
    ]);
    metricsHooks.install(undefined);
    const exposition = parseExposition(await registry.metrics());
    return new Set([...exposition.types.keys()]);
  }

  it('parses as a rules file with an alert for a sealed service and for a stuck rotation', () => {
    const all = (rules.groups as Json[]).flatMap((group) => group.rules as Json[]);
    expect(all.map((rule) => rule.alert)).toEqual(expect.arrayContaining(['TeeKmsSealed', 'TeeKmsRotationStuck', 'TeeKmsIntegrityAlarm', 'TeeKmsRecovered']));
    for (const rule of all) {
      expect(typeof rule.expr, rule.alert).toBe('string');
      expect(rule.labels?.severity, rule.alert).toMatch(/^(critical|warning)$/);
      expect(typeof rule.annotations?.summary, rule.alert).toBe('string');
    }
  });

  it('references only metrics that exist', async () => {
    const exposed = await exposedNames();
    const all = (rules.groups as Json[]).flatMap((group) => group.rules as Json[]);
    const referenced = all.flatMap((rule) => [...String(rule.expr).matchAll(/\b(?:kms|process)_[a-z_]+\b/g)].map((m) => m[0]));
    expect(referenced.length).toBeGreaterThan(3);
    expect(referenced.filter((name) => !exposed.has(name))).toEqual([]);
    expect(exposed.has('kms_sealer_sealed') && exposed.has('kms_rotation_in_progress')).toBe(true);
  });

  const PROMTOOL = findTool('promtool', ['--version'], 'apt-get install prometheus (Debian ships promtool with it)');

  it.skipIf(skipWithout(PROMTOOL))(
    "alerts on a recovery and an integrity alarm, a new process's included (its counters start at 1 for Prometheus), and stops",
    () => {
      requireTool(PROMTOOL);
      const all = (rules.groups as Json[]).flatMap((group) => group.rules as Json[]);
      const expected = (alert: string, instance: string) => {
        const rule = all.find((r) => r.alert === alert)!;
        const annotations = Object.fromEntries(
          Object.entries(rule.annotations as Record<string, string>).map(([k, v]) => [k, v.replaceAll('{{ $labels.instance }}', instance)]),
        );
        return { exp_labels: { instance, job: 'sealer', ...rule.labels }, exp_annotations: annotations };
      };
      const series = (name: string, instance: string, values: string) => ({ series: `${name}{instance="${instance}",job="sealer"}`, values });
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-promtool-'));
      try {
        // "new": a process recovered (and alarmed) before its first scrape, started at time 0;
        // "old": an hour-old process recovered at minute 2. promtool evaluates the rules file as is.
        const tests = {
          rule_files: [join(REPO, 'docs', 'prometheus-rules.example.yaml')],
          evaluation_interval: '1m',
          tests: [
            {
              interval: '1m',
              input_series: [
                series('kms_sealer_recoveries_total', 'new', '1x40'),
                series('kms_sealer_integrity_alarms_total', 'new', '1x40'),
                series('kms_sealer_integrity_alarm', 'new', '0x40'),
                series('process_start_time_seconds', 'new', '0x40'),
                series('kms_sealer_recoveries_total', 'old', '0 0 1x38'),
                series('kms_sealer_integrity_alarms_total', 'old', '0x40'),
                series('kms_sealer_integrity_alarm', 'old', '0x40'),
                series('process_start_time_seconds', 'old', '-3600x40'),
              ],
              alert_rule_test: [
                { eval_time: '3m', alertname: 'TeeKmsRecovered', exp_alerts: [expected('TeeKmsRecovered', 'new'), expected('TeeKmsRecovered', 'old')] },
                { eval_time: '3m', alertname: 'TeeKmsIntegrityAlarm', exp_alerts: [expected('TeeKmsIntegrityAlarm', 'new')] },
                { eval_time: '30m', alertname: 'TeeKmsRecovered', exp_alerts: [] },
                { eval_time: '30m', alertname: 'TeeKmsIntegrityAlarm', exp_alerts: [] },
              ],
            },
          ],
        };
        const file = join(dir, 'alerts.test.yaml');
        writeFileSync(file, JSON.stringify(tests)); // JSON is YAML
        const run = spawnSync('promtool', ['test', 'rules', file], { encoding: 'utf8', timeout: 60_000 });
        expect(run.status, `${run.stdout}${run.stderr}`).toBe(0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
