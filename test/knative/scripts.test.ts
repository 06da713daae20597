/**
 * knative/install.sh and uninstall.sh (syntax, shellcheck where installed, argument checks, and the
 * kustomization install.sh generates, rendered with --dry-run), the Dockerfile and .dockerignore,
 * and docs/deploy-knative.md. No cluster: nothing here talks to one.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { routes } from '../../functions/index.js';
import { KNATIVE, REPO, containersOf, dockerCmd, dockerEnv, id, kubectl, parseDockerfile, readKustomization, type Json, type Resource } from './support.js';
import { parseAllDocuments } from 'yaml';

const INSTALL = join(KNATIVE, 'install.sh');
const UNINSTALL = join(KNATIVE, 'uninstall.sh');
const shellcheck = spawnSync('shellcheck', ['--version'], { stdio: 'ignore' }).status === 0;

/** Runs a script with a clean environment (no KMS_* or seed variables from the caller). */
function run(script: string, args: string[], env: Record<string, string> = {}) {
  const base: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', TMPDIR: tmpdir() };
  return spawnSync('bash', [script, ...args], { env: { ...base, ...env }, encoding: 'utf8', timeout: 60_000 });
}

const temps: string[] = [];
afterAll(() => temps.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

describe('install.sh and uninstall.sh', () => {
  it('are executable and parse (bash -n)', () => {
    for (const script of [INSTALL, UNINSTALL]) {
      expect(statSync(script).mode & 0o111, script).not.toBe(0);
      expect(() => execFileSync('bash', ['-n', script])).not.toThrow();
    }
  });

  it.skipIf(!shellcheck)('are clean under shellcheck', () => {
    const result = spawnSync('shellcheck', ['-x', INSTALL, UNINSTALL], { encoding: 'utf8' });
    expect(result.stdout + result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it("--help names the seed's parameters as options", () => {
    const result = run(INSTALL, ['--help']);
    expect(result.status).toBe(0);
    for (const option of ['--tee', '--image', '--storage-size', '--domain', '--root-key-file', '--generate-root-key', '--namespace', '--dry-run']) expect(result.stdout).toContain(option);
    const header = readFileSync(INSTALL, 'utf8');
    for (const seed of ['imageName', 'dataStoragePath', 'serviceIP', 'rootKey', 'teeMode']) expect(header).toContain(seed);
    expect(run(UNINSTALL, ['--help']).status).toBe(0);
  });

  it('refuses what it cannot do safely, before touching any cluster', () => {
    const refusals: [string[], Record<string, string>, RegExp][] = [
      [[], {}, /choose the TEE mode/],
      [['--tee', 'sgx'], {}, /TDX/],
      [['--tee', 'tdx'], {}, /needs --image .*@sha256/],
      [['--tee', 'tdx', '--image', 'registry.example/tee-kms:1.0'], {}, /pins images by digest/],
      [['--tee', 'tdx', '--image', `registry.example/tee-kms@sha256:${'0'.repeat(64)}`], {}, /placeholder digest/],
      [['--tee', 'dev', '--namespace', 'Not_A_Label'], {}, /DNS label/],
      [['--tee', 'dev', '--root-key-file', '/nonexistent'], {}, /cannot read/],
      [['--tee', 'dev', '--generate-root-key'], { KMS_ROOT_KEY: 'x' }, /one way/],
      [['--tee', 'dev', '--domain', 'kms.example.com'], {}, /--gateway-class/],
      [['--tee', 'dev', '--initdata', '/etc/hostname'], {}, /--initdata is for --tee tdx/],
      [['--tee', 'dev', '--bogus'], {}, /unknown option/],
    ];
    for (const [args, env, message] of refusals) {
      const result = run(INSTALL, args, env);
      expect(result.status, args.join(' ')).not.toBe(0);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
    // The seed's variable names work as well.
    expect(run(INSTALL, [], { teeMode: 'sgx' }).stderr).toMatch(/TDX/);
  });

  it('keeps every secret out of the repository: the secrets directory must be outside it', () => {
    const text = readFileSync(INSTALL, 'utf8');
    expect(text).toMatch(/--secrets-dir must be outside the repository/);
    // Secret values reach kubectl as files (--from-file), never as command-line literals.
    expect(text).not.toMatch(/--from-literal/);
    expect(text).toMatch(/--from-file=/);
  });

  describe.skipIf(kubectl === undefined)('--dry-run: the generated kustomization, rendered by kubectl kustomize', () => {
    const digest = `sha256:${'ab'.repeat(32)}`;
    const work = mkdtempSync(join(tmpdir(), 'tee-kms-dry-run-'));
    temps.push(work);
    const result = run(INSTALL, [
      '--dry-run',
      '--tee', 'tdx',
      '--image', `registry.example.com/tee-kms:1.2.3@${digest}`,
      '--namespace', 'kms-prod',
      '--domain', 'kms.example.org',
      '--gateway-class', 'example-gateway-class',
      '--storage-size', '20Gi',
      '--storage-class', 'fast-ssd',
      '--bucket', 'kms-keys',
      '--work-dir', work,
    ]);
    const resources = (result.status === 0 ? parseAllDocuments(result.stdout).map((d) => d.toJS()).filter(Boolean) : []) as Resource[];

    it('succeeds without a cluster and writes nothing secret', () => {
      expect(result.stderr).not.toMatch(/error/);
      expect(result.status).toBe(0);
      expect(resources.length).toBeGreaterThan(15);
      expect(resources.filter((r) => r.kind === 'Secret')).toEqual([]);
      expect(readKustomization(work).resources).toEqual([join(KNATIVE, 'overlays', 'tdx')]);
    });

    it('puts everything in the chosen namespace, with the given image digest and parameters', () => {
      for (const r of resources) expect(r.metadata.namespace, id(r)).toBe('kms-prod');
      const images = resources.flatMap((r) => containersOf(r).map(({ container }) => container.image as string));
      expect(images.filter((i) => i.includes('tee-kms'))).toHaveLength(routes.length + 1);
      for (const image of images.filter((i) => i.includes('tee-kms'))) expect(image).toBe(`registry.example.com/tee-kms@${digest}`);
      const config = resources.find((r) => r.kind === 'ConfigMap')!;
      expect(config.data.KMS_S3_BUCKET).toBe('kms-keys');
      const minio = resources.find((r) => r.kind === 'StatefulSet')!;
      expect(minio.spec.volumeClaimTemplates[0].spec).toMatchObject({ storageClassName: 'fast-ssd', resources: { requests: { storage: '20Gi' } } });
      for (const s of resources.filter((r) => r.kind === 'Service' && r.apiVersion === 'serving.knative.dev/v1')) {
        expect(s.spec.template.metadata.annotations['tee-kms/config-revision']).toBeDefined();
        expect(s.spec.template.spec.runtimeClassName).toBe('kata-qemu-tdx');
      }
    });

    it('routes the single host to the functions of that namespace', () => {
      const route = resources.find((r) => r.kind === 'HTTPRoute')!;
      const gateway = resources.find((r) => r.kind === 'Gateway')!;
      expect(route.spec.hostnames).toEqual(['kms.example.org']);
      expect(gateway.spec.gatewayClassName).toBe('example-gateway-class');
      expect(gateway.spec.listeners[0].hostname).toBe('kms.example.org');
      for (const rule of route.spec.rules) {
        const host: string = rule.filters.find((f: Json) => f.type === 'URLRewrite').urlRewrite.hostname;
        expect(host).toMatch(/^[a-z-]+\.kms-prod\.svc\.cluster\.local$/);
      }
    });
  });

  it.skipIf(kubectl === undefined)('--initdata is carried gzip+base64 in the cc_init_data annotation (dry run)', () => {
    const work = mkdtempSync(join(tmpdir(), 'tee-kms-initdata-'));
    temps.push(work);
    const initdata = join(work, 'initdata.toml');
    execFileSync('bash', ['-c', `printf 'version = "0.1.0"\\nalgorithm = "sha384"\\n[data]\\n' > '${initdata}'`]);
    const result = run(INSTALL, ['--dry-run', '--tee', 'tdx', '--image', `r.example/tee-kms@sha256:${'cd'.repeat(32)}`, '--initdata', initdata, '--work-dir', join(work, 'k')]);
    expect(result.status, result.stderr).toBe(0);
    const resources = parseAllDocuments(result.stdout).map((d) => d.toJS()).filter(Boolean) as Resource[];
    const pods = resources.filter((r) => r.kind === 'Deployment' || r.apiVersion === 'serving.knative.dev/v1');
    expect(pods.length).toBe(routes.length + 1);
    for (const r of pods) {
      const value = r.spec.template.metadata.annotations['io.katacontainers.config.hypervisor.cc_init_data'];
      expect(execFileSync('bash', ['-c', 'base64 -d | gunzip'], { input: value, encoding: 'utf8' })).toContain('algorithm = "sha384"');
    }
  });
});

describe('Dockerfile and .dockerignore', () => {
  const dockerfile = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
  const [build, runtime] = dockerfile.stages;
  const runs = (stage: typeof build) => stage!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);

  it('is multi-stage: a build stage compiles (npm ci, npm run build), the runtime has production dependencies only', () => {
    expect(dockerfile.stages).toHaveLength(2);
    expect(build!.name).toBe('build');
    expect(runs(build).join('\n')).toMatch(/npm ci\b/);
    expect(runs(build).join('\n')).toMatch(/npm run build\b/);
    expect(runs(runtime).join('\n')).toMatch(/npm ci --omit=dev\b/);
    expect(runs(runtime).join('\n')).not.toMatch(/npm (install|i)\b/);
    const copies = runtime!.instructions.filter((i) => i.op === 'COPY').map((i) => i.args);
    expect(copies).toContain('--from=build /app/dist ./dist');
    expect(copies.filter((c) => !c.startsWith('--from'))).toEqual(['package.json package-lock.json ./']);
    expect(build!.from).toBe(runtime!.from);
  });

  it('runs as a non-root user with NODE_ENV=production, on 0.0.0.0 without TLS (Knative terminates it), CMD the lean host', () => {
    const user = runtime!.instructions.filter((i) => i.op === 'USER').at(-1)?.args;
    expect(user).toMatch(/^(node|1000)(:(node|1000))?$/);
    expect(dockerEnv(runtime!)).toMatchObject({ NODE_ENV: 'production', KMS_BIND: '0.0.0.0', KMS_TLS: 'off' });
    expect(dockerCmd(runtime!)).toEqual(['node', 'dist/scripts/serve.js']);
    // The manifests' runAsUser is the image's user.
    expect(readFileSync(join(KNATIVE, 'base', 'functions', 'welcome.yaml'), 'utf8')).toContain('runAsUser: 1000');
  });

  it('copies only sources that exist, and .dockerignore lets exactly those in', () => {
    const ignore = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    for (const copy of build!.instructions.filter((i) => i.op === 'COPY').map((i) => i.args.split(/\s+/))) {
      for (const source of copy.slice(0, -1)) {
        expect(existsSync(join(REPO, source)), source).toBe(true);
        expect(allowed, `.dockerignore must let ${source} in`).toContain(source);
      }
    }
    for (const never of ['**/node_modules', '**/.kms']) expect(ignore).toContain(never);
    expect(allowed).not.toContain('dist');
    expect(allowed).not.toContain('test');
  });
});

describe('docs/deploy-knative.md', () => {
  const doc = readFileSync(join(REPO, 'docs', 'deploy-knative.md'), 'utf8');

  it('walks through prerequisites, secrets and TLS, install, check, uninstall', () => {
    for (const heading of ['Prerequisites', 'Secrets', 'TLS', 'Install', 'Check', 'Uninstall']) expect(doc).toMatch(new RegExp(`^#+ .*${heading}`, 'm'));
    expect(doc).toContain('knative/install.sh');
    expect(doc).toContain('knative/uninstall.sh');
  });

  it('gives the kn service create command of every function', () => {
    for (const route of routes) expect(doc, route.name).toMatch(new RegExp(`kn service create [a-z-]+[^\\n]*(\\\\\\n[^\\n]*)*FUNCTION_TARGET=${route.name}\\b`));
  });
});
