/**
 * The Confidential Containers init-data of each tdx pod (knative/components/tdx/init-data/<name>.toml),
 * written by scripts/generate-manifests.ts. Kata hands the document to the TD through the pod
 * annotation io.katacontainers.config.hypervisor.cc_init_data (base64 of its gzip), and the TD's
 * MRCONFIGID is SHA-384 of its exact bytes: the document is the TD's identity (docs/attestation.md).
 * install.sh appends the measured policies to the documents it deploys: the sealer's TDX and admin
 * policies to the sealer's, which name each function by the SHA-384 of its policy.rego entry (so
 * they do not depend on the rest of its document), and the functions' policy for the sealer to
 * each function's.
 *
 * Its one entry as generated, policy.rego, is the Kata agent policy: the host talks to the TD only through the
 * agent's API, and without a policy (Kata's default allows every request) `kubectl exec` and
 * `kubectl logs` read the TD from outside. Each document pins its pod's containers (image by digest,
 * command, FUNCTION_TARGET, NODE_ENV; for the sealer, the variables of auto-unseal and of the root key
 * mode), so no two tee-kms pods share an identity and no other workload can claim one, and refuses
 * environment variables that would make the C library, OpenSSL or Node.js run code of the host's
 * choosing in the TD (DENIED_ENV).
 *
 * The image digests are install-time inputs: the documents hold the placeholders below, which
 * knative/install.sh replaces (--image, --queue-proxy-image) before it hashes them.
 */

/** Replaced by knative/install.sh with the tee-kms image, <registry>/tee-kms@sha256:<digest> (--image). */
export const TEE_KMS_IMAGE_PLACEHOLDER = `tee-kms@sha256:${'0'.repeat(64)}`;
/**
 * Replaced with Knative Serving's queue-proxy image (--queue-proxy-image): the one the installed release's
 * serving-core.yaml names, which config-deployment's queue-sidecar-image must name too. It runs in every
 * function's TD, beside the attestation agent: trusted code, so never taken from the cluster alone.
 */
export const QUEUE_PROXY_IMAGE_PLACEHOLDER = `queue-proxy@sha256:${'0'.repeat(64)}`;

/**
 * Environment variables that no workload container of a TD may have (the Rego lists denied_env and
 * denied_env_prefixes, checked by env_denied_none): each makes the C library, OpenSSL or Node.js load
 * code or data from a path the environment names, or lowers what they trust. The environment is the
 * host's (the pod spec, and tee-kms-config through envFrom), so without this the cluster
 * administrator could run code of their choosing inside a genuine TD, e.g.
 * NODE_OPTIONS=--require /a/mounted/configmap.js or LD_PRELOAD. A deny list, from vetted sources
 * rather than invented: every other variable is still admitted. Nothing the manifests or install.sh
 * set may be on it (NODE_EXTRA_CA_CERTS, which they set, is not).
 */
export const DENIED_ENV = {
  /**
   * glibc's unsecure variables, which it removes from the environment of set-user-ID programs
   * (sysdeps/generic/unsecvars.h: those of glibc 2.36, Debian 12's and so the node image's, and
   * GLIBC_TUNABLES, which later releases add), without those starting with LD_:
   * DENIED_ENV_PREFIXES denies the dynamic loader's variables (LD_PRELOAD, LD_LIBRARY_PATH,
   * LD_AUDIT, …) all together.
   */
  glibc: [
    'GCONV_PATH',
    'GETCONF_DIR',
    'GLIBC_TUNABLES',
    'HOSTALIASES',
    'LOCALDOMAIN',
    'LOCPATH',
    'MALLOC_TRACE',
    'NIS_PATH',
    'NLSPATH',
    'RESOLV_HOST_CONF',
    'RES_OPTIONS',
    'TMPDIR',
    'TZDIR',
  ],
  /**
   * OpenSSL's (openssl-env(7); Node.js links its own OpenSSL): the configuration file and its
   * includes (which load providers and engines), the provider and engine directories, certificate
   * transparency logs, the TLS key log, and the CPU capability mask (which can turn off the
   * constant-time hardware AES). SSL_CERT_FILE and SSL_CERT_DIR are DENIED_CA_ENV.
   */
  openssl: ['CTLOG_FILE', 'OPENSSL_CONF', 'OPENSSL_CONF_INCLUDE', 'OPENSSL_ENGINES', 'OPENSSL_MODULES', 'OPENSSL_ia32cap', 'SSLKEYLOGFILE'],
  /**
   * Node.js's (doc/api/cli.md, "Environment variables", Node.js 20 and 24) that load code or data
   * (NODE_OPTIONS: --require, --import, --experimental-loader, --openssl-config, --inspect, …; the
   * module path, the REPL module, ICU data, the compile cache, how symbolic links resolve), write
   * where the environment says (coverage, warnings, debug output), or lower trust (certificate
   * checks off, the system CA store, requests through an environment proxy, io_uring, off by
   * default for security reasons). NODE_ENV is pinned instead, NODE_EXTRA_CA_CERTS admitted.
   */
  node: [
    'NODE_COMPILE_CACHE',
    'NODE_COMPILE_CACHE_PORTABLE',
    'NODE_DEBUG',
    'NODE_DEBUG_NATIVE',
    'NODE_ICU_DATA',
    'NODE_OPTIONS',
    'NODE_PATH',
    'NODE_PRESERVE_SYMLINKS',
    'NODE_REDIRECT_WARNINGS',
    'NODE_REPL_EXTERNAL_MODULE',
    'NODE_TLS_REJECT_UNAUTHORIZED',
    'NODE_USE_ENV_PROXY',
    'NODE_USE_SYSTEM_CA',
    'NODE_V8_COVERAGE',
    'UV_USE_IO_URING',
  ],
} as const;

/** Name prefixes denied like DENIED_ENV: the dynamic loader's variables, those of glibc's unsecure list and any other. */
export const DENIED_ENV_PREFIXES = ['LD_'] as const;

/**
 * OpenSSL's CA certificate file and directory (Node.js reads them with --use-openssl-ca or
 * --use-system-ca), denied in the tee-kms image's containers only. In Knative's queue-proxy, a Go
 * program, they are the system roots, which its image's own environment may set.
 */
export const DENIED_CA_ENV = ['SSL_CERT_DIR', 'SSL_CERT_FILE'] as const;
/**
 * tee-kms's own mode 1 without a sealing service (shared/config.ts): a function given a root key in
 * its environment would serve keys wrapped under it, and derive the sealed channel's service key
 * from it, all behind genuine evidence. In a TD the root key comes from the attested sealing service
 * only (the sealer's own KMS_SEALER_ROOT_KEY is closed apart, by root_key_env).
 */
export const DENIED_KMS_ENV = ['KMS_ROOT_KEY', 'KMS_ROOT_KEY_FILE'] as const;
/**
 * The sealer's TDX and admin policies as files (sealer/options.ts): under TDX its init-data carries
 * both (knative/install.sh appends them), so they are measured. Set, either would replace the
 * measured one with a file the host provides, e.g. a ConfigMap the cluster administrator edits to
 * admit a TD of their own and pull the root key: the sealer's rule refuses them (denied_policy_env),
 * in the sealer's document only, so the functions' documents and MRCONFIGIDs do not change.
 */
export const DENIED_POLICY_ENV = ['KMS_SEALER_TDX_POLICY_FILE', 'KMS_SEALER_ADMIN_POLICY_FILE'] as const;
/**
 * Where the sealer asks for its own evidence, which its check of its own init-data reads
 * (sealer/measured-policies.ts): with KMS_SEALER_ATTESTER pinned to tdx-aa, the attestation agent
 * on the TD's own loopback, the default. Another address could relay the quote of a TD the host
 * made with init-data of its own, and the sealer would take that document's policies for its own.
 */
export const DENIED_ATTESTER_ENV = ['KMS_SEALER_AA_URL', 'KMS_SEALER_TSM_ROOT'] as const;
/**
 * Development relaxations of the sealer that no measured setting needs: KMS_SEALER_PLAINTEXT_SHARES
 * (`allow` would let shares leave and enter it unencrypted, readable by every hop between the TD and
 * a custodian). Its code refuses `allow` under NODE_ENV=production, which the policy pins; refused
 * here too, whatever the value, so that no environment the host writes reaches that choice
 * (denied_development_env, in the sealer's document).
 */
export const DENIED_DEVELOPMENT_ENV = ['KMS_SEALER_PLAINTEXT_SHARES'] as const;
/**
 * The sealer's DCAP collateral from a file (sealer/options.ts): under TDX it comes from the PCCS
 * its init-data lists (pccs_env), never from a file the host provides, which could hold older
 * collateral that is still valid (denied_collateral_env, in the sealer's document).
 */
export const DENIED_COLLATERAL_ENV = ['KMS_SEALER_TDX_COLLATERAL_FILE'] as const;
/**
 * What a function trusts the sealer by: its policy for the sealer's TD, which knative/install.sh
 * appends to the function's own init-data ("sealer-tdx-policy.json"), the collateral its quotes
 * are checked with (from the PCCS pccs_env lists), and its own quote, which vouches for that
 * document, from the attestation agent on the TD's loopback (KMS_ATTESTER and KMS_AA_URL pinned).
 * Set, the first would replace the measured policy with a file the host provides (a sealer TD of
 * the host's own would be trusted); the second would replace the PCCS with a file of older
 * collateral; the third would take the function's quote from a configfs-tsm tree the host names
 * (denied_trust_env, in the functions' documents).
 */
export const DENIED_TRUST_ENV = ['KMS_TRUSTED_SEALER_TDX_POLICY_FILE', 'KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE', 'KMS_TSM_ROOT'] as const;
/** Where the tdx component mounts the ConfigMap tee-kms-init-data (knative/components/tdx/patches/*-tdx.yaml). */
export const INIT_DATA_MOUNT = '/var/run/tee-kms/init-data';

/** A container the agent may create in the TD. */
export interface AllowedContainer {
  /** Its name in the pod spec (the CRI container-name annotation). */
  readonly name: string;
  /** The Rego variable holding its image reference. */
  readonly image: 'tee_kms_image' | 'queue_proxy_image';
  /** The exact process arguments (the pod's command), or undefined: any (Knative's own queue-proxy). */
  readonly args?: readonly string[];
  /** Environment variables that must be present, each exactly once or with one value only. */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Variables that may appear only as the policy lists them, each group by name prefix and the Rego
   * variable holding its allowed `NAME=VALUE` entries (none as generated). The environment is the
   * host's (a ConfigMap, the pod spec), so what they switch on is then decided by the measured
   * init-data, not by the host.
   */
  readonly closedEnv?: readonly ClosedEnv[];
  /**
   * Lists of variables refused besides those every tee-kms container refuses, each a Rego list
   * assigned before the rule (with its one-line why) and checked with env_denied_none.
   */
  readonly deniedEnv?: readonly DeniedEnv[];
}

/** One list of AllowedContainer.deniedEnv. */
export interface DeniedEnv {
  /** The Rego variable. */
  readonly list: string;
  readonly names: readonly string[];
  /** The one-line comment above it. */
  readonly why: string;
}

/** One group of AllowedContainer.closedEnv: install.sh fills in `<allowed> := []` (knative/install.sh render_init_data). */
export interface ClosedEnv {
  readonly prefix: string;
  readonly allowed: string;
  /** The comment above `<allowed> := []`: what the variables switch on, and who writes the list. */
  readonly why: readonly string[];
  /**
   * Whether every listed entry must also be set (env_present): for a variable whose absence switches
   * a protection off, so that a measured list cannot be undone by leaving the variable out.
   */
  readonly required?: boolean;
}

/** Which pod a document is for. */
export interface InitDataPod {
  /** The Service or Deployment name: also the file name. */
  readonly name: string;
  /** One line saying what runs there. */
  readonly summary: string;
  readonly containers: readonly AllowedContainer[];
}

const rego = (value: string) => JSON.stringify(value);

function containerRule(container: AllowedContainer): string {
  const lines = [
    `# ${container.name}: ${container.image === 'tee_kms_image' ? 'the tee-kms image' : "Knative Serving's queue-proxy (terminates TLS inside the TD)"}.`,
    'CreateContainerRequest if {',
    '\tworkload_container',
    `\tinput.OCI.Annotations["io.kubernetes.cri.container-name"] == ${rego(container.name)}`,
    '\tnothing_the_host_runs',
    `\tpulled_in_guest(${container.image})`,
  ];
  if (container.args !== undefined) lines.push(`\tinput.OCI.Process.Args == [${container.args.map(rego).join(', ')}]`);
  for (const [name, value] of Object.entries(container.env ?? {})) lines.push(`\tenv_pinned(${rego(name)}, ${rego(value)})`);
  const closed = container.closedEnv ?? [];
  for (const { prefix, allowed, required } of closed) {
    lines.push(`\tenv_closed(${rego(prefix)}, ${allowed})`);
    if (required === true) lines.push(`\tenv_present(${allowed})`);
  }
  lines.push('\tenv_denied_none(denied_env, denied_env_prefixes)');
  if (container.image === 'tee_kms_image') {
    lines.push('\tenv_denied_none(denied_ca_env, [])', '\tenv_denied_none(denied_kms_env, [])');
    // The command's relative paths resolve against the working directory and PATH (pinned above).
    lines.push(`\tinput.OCI.Process.Cwd == ${rego(APP_DIR)}`, '\tmounts_within(volume_roots)', '\truns_unprivileged');
  } else lines.push('\tmounts_outside(code_dirs)');
  const denied = container.deniedEnv ?? [];
  for (const { list } of denied) lines.push(`\tenv_denied_none(${list}, [])`);
  lines.push('}');
  return [
    ...closed.flatMap(({ allowed, why }) => [...why.map((line) => `# ${line}`), `${allowed} := []`, '']),
    ...denied.flatMap(({ list, names, why }) => [`# ${why}`, `${list} := ${JSON.stringify(names).replace(/,/g, ', ')}`, '']),
    ...lines,
  ].join('\n');
}

/** A Rego array of strings, one line per group: also JSON, so tests read it back as the document has it. */
const regoList = (lines: readonly (readonly string[])[]) => `[\n${lines.map((names) => `\t${names.map(rego).join(', ')}`).join(',\n')}\n]`;

/** The tee-kms image's user and group (the Dockerfile's USER), whom every manifest runs its containers as. */
export const IMAGE_USER = { uid: 1000, gid: 1000 } as const;
/** What every tee-kms container's rule requires of the process: the image's user, no capability, no way to gain one. */
const PROCESS_RULES = `
# The tee-kms containers run as the image's user and group alone, with no capability and no way to
# gain one (the manifests' runAsUser, runAsGroup, allowPrivilegeEscalation false and capabilities
# drop ALL). As root, in another group, or with a capability, a flaw in what runs would reach the
# rest of the TD: the attestation agent, the other container, the guest's own files.
runs_unprivileged if {
	input.OCI.Process.User.UID == ${IMAGE_USER.uid}
	input.OCI.Process.User.GID == ${IMAGE_USER.gid}
	only_image_group
	input.OCI.Process.NoNewPrivileges == true
	no_capabilities
}

only_image_group if absent_or_empty(object.get(input.OCI.Process.User, "AdditionalGids", null))

only_image_group if {
	is_array(input.OCI.Process.User.AdditionalGids)
	every gid in input.OCI.Process.User.AdditionalGids {
		gid == ${IMAGE_USER.gid}
	}
}

no_capabilities if absent_or_empty(object.get(input.OCI.Process, "Capabilities", null))

no_capabilities if {
	is_object(input.OCI.Process.Capabilities)
	every set in ["Ambient", "Bounding", "Effective", "Inheritable", "Permitted"] {
		absent_or_empty(object.get(input.OCI.Process.Capabilities, set, null))
	}
}
`;

/** DENIED_ENV and the helper that applies it: in every document, every workload container's rule calls it. */
const DENIED_ENV_RULES = `
# Refused in the environment of every container above (env_denied_none): variables that make the C
# library, OpenSSL or Node.js load code or data from a path the environment names, or lower what
# they trust. One line per source: glibc's unsecure variables (sysdeps/generic/unsecvars.h), less
# LD_*, which denied_env_prefixes denies whole; OpenSSL's (openssl-env(7)); Node.js's
# (doc/api/cli.md). A container with any of them is not created. Every other variable is admitted.
denied_env := ${regoList([DENIED_ENV.glibc, DENIED_ENV.openssl, DENIED_ENV.node])}

denied_env_prefixes := ${JSON.stringify(DENIED_ENV_PREFIXES).replace(/,/g, ', ')}

# OpenSSL's CA locations, refused for the tee-kms image (Node.js reads them with --use-openssl-ca or
# --use-system-ca); Knative's queue-proxy, a Go program, takes its system roots from them.
denied_ca_env := ${JSON.stringify(DENIED_CA_ENV).replace(/,/g, ', ')}

# tee-kms's root key from the environment (mode 1 without a sealing service), refused for the
# tee-kms image: in a TD the root key comes only from the attested sealing service.
denied_kms_env := ${JSON.stringify(DENIED_KMS_ENV).replace(/,/g, ', ')}

# No variable in the environment is one of NAMES or starts with one of PREFIXES.
env_denied_none(names, prefixes) if {
	every entry in input.OCI.Process.Env {
		not denied_entry(entry, names, prefixes)
	}
}

denied_entry(entry, names, _) if {
	parts := split(entry, "=")
	parts[0] in names
}

denied_entry(entry, _, prefixes) if {
	some prefix in prefixes
	startswith(entry, prefix)
}
`;

/** The tee-kms image's working directory (the Dockerfile's WORKDIR): its command's paths are relative to it. */
const APP_DIR = '/app';
/**
 * The tee-kms image's PATH (the Dockerfile's ENV PATH), pinned: the command names `node`, which
 * the agent looks up in PATH; another PATH could name a directory of a volume.
 */
export const IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The runtime's own file systems by destination, with their types as containerd's defaults give them: only these may have mounts below them. */
const RUNTIME_FILE_SYSTEMS = { '/dev': 'tmpfs', '/proc': 'proc', '/sys': 'sysfs' } as const;
/** The runtime's other mounts (containerd's defaults, CRI's /etc files, /dev/shm and termination log), each at exactly its destination. */
const RUNTIME_MOUNTS = [
  '/dev/mqueue',
  '/dev/pts',
  '/dev/shm',
  '/dev/termination-log',
  '/etc/hostname',
  '/etc/hosts',
  '/etc/resolv.conf',
  '/sys/fs/cgroup',
] as const;
/**
 * Where a tee-kms container may have the pod's volumes, at or below: directories the image does
 * not have, so nothing it runs or reads at start can be shadowed there.
 */
const VOLUME_ROOTS = ['/tmp', '/var/lib/tee-kms-sealer', '/var/run/secrets', '/var/run/tee-kms'] as const;
/** Where queue-proxy (a Go program, /ko-app/queue) may not have a volume, at or below: its program, the system's programs and libraries, /etc. */
const CODE_DIRS = ['/bin', '/etc', '/ko-app', '/lib', '/lib32', '/lib64', '/libx32', '/opt', '/sbin', '/usr'] as const;

const regoStrings = (list: readonly string[]) => JSON.stringify(list).replace(/,/g, ', ');

/** The mount rules, in every document: each tee-kms container's rule calls mounts_within, queue-proxy's mounts_outside. */
const MOUNT_RULES = `
# Mounts (input.OCI.Mounts, read as Kata's genpolicy rules read them). A volume over what runs
# (the image's application, node, the libraries, /etc/ld.so.preload, OpenSSL's configuration,
# which Node.js reads at start) would run other code under this document's MRCONFIGID. So a
# tee-kms container has the pod's volumes only at or below volume_roots, queue-proxy none at or
# below code_dirs, and both the runtime's own mounts at exactly their destinations: its file
# systems (runtime_file_systems, by type) and runtime_mounts. In every container each destination
# is a plain absolute path, mounted once, below no other mount but the runtime's file systems (a
# symbolic link in a volume would lead a later mount elsewhere), and not at or below /run or
# /var/lock, which the image links /var/run and /var/lock to: each directory has one spelling.
runtime_file_systems := ${JSON.stringify(RUNTIME_FILE_SYSTEMS).replace(/,/g, ', ').replace(/:/g, ': ')}

runtime_mounts := ${regoStrings(RUNTIME_MOUNTS)}

volume_roots := ${regoStrings(VOLUME_ROOTS)}

code_dirs := ${regoStrings(CODE_DIRS)}

mounts_within(roots) if {
	mounts := object.get(input.OCI, "Mounts", [])
	mounts_apart(mounts)
	every mount in mounts {
		within(mount, roots)
	}
}

within(mount, _) if runtime_mount(mount)

within(mount, roots) if {
	some root in roots
	at_or_below(mount.destination, root)
}

mounts_outside(dirs) if {
	mounts := object.get(input.OCI, "Mounts", [])
	mounts_apart(mounts)
	every mount in mounts {
		outside(mount, dirs)
	}
}

outside(mount, _) if runtime_mount(mount)

outside(mount, dirs) if {
	every dir in dirs {
		not at_or_below(mount.destination, dir)
	}
}

runtime_mount(mount) if runtime_file_systems[mount.destination] == mount.type_

runtime_mount(mount) if mount.destination in runtime_mounts

mounts_apart(mounts) if {
	count({mount.destination | some mount in mounts}) == count(mounts)
	every mount in mounts {
		plain_path(mount.destination)
		not nested_mount(mount.destination, mounts)
		not at_or_below(mount.destination, "/run")
		not at_or_below(mount.destination, "/var/lock")
	}
}

plain_path(path) if {
	regex.match("^(/[^/]+)+$", path)
	not regex.match("(^|/)[.][.]?(/|$)", path)
}

nested_mount(path, mounts) if {
	some other in mounts
	other.destination != path
	startswith(path, concat("", [other.destination, "/"]))
	not runtime_file_systems[other.destination] == other.type_
}

at_or_below(path, dir) if path == dir

at_or_below(path, dir) if startswith(path, concat("", [dir, "/"]))
`;

/** The Rego helper of AllowedContainer.closedEnv, written only into documents that use it (it is part of their digest). */
const CLOSED_ENV_RULES = `
# Every variable whose name starts with PREFIX is one of ALLOWED (NAME=VALUE, exactly).
env_closed(prefix, allowed) if {
	every entry in input.OCI.Process.Env {
		unprefixed_or_allowed(entry, prefix, allowed)
	}
}

unprefixed_or_allowed(entry, prefix, _) if not startswith(entry, prefix)

unprefixed_or_allowed(entry, _, allowed) if entry in allowed
`;

/** The Rego helper of ClosedEnv.required, written only into documents that use it. */
const PRESENT_ENV_RULES = `
# Every entry of LISTED (NAME=VALUE) is in the environment: what the list switches on stays on.
env_present(listed) if {
	every entry in listed {
		entry in input.OCI.Process.Env
	}
}
`;

/** The Kata agent policy of one pod: Rego, package agent_policy. */
export function agentPolicy(pod: InitDataPod): string {
  return `# Kata agent policy for ${pod.name}: ${pod.summary}
# Generated by scripts/generate-manifests.ts (scripts/init-data.ts); docs/attestation.md.
package agent_policy

import future.keywords.every
import future.keywords.if
import future.keywords.in

# install.sh replaces both placeholders with the digests it deploys, then hashes this document.
tee_kms_image := ${rego(TEE_KMS_IMAGE_PLACEHOLDER)}
queue_proxy_image := ${rego(QUEUE_PROXY_IMAGE_PLACEHOLDER)}

# A request that fails the policy is refused, never let through.
default AllowRequestsFailingPolicy := false

# Denied: the host's ways into the TD. Exec is kubectl exec, and kubectl cp (tar over exec);
# ReadStream carries a process's stdout and stderr out of the TD (kubectl logs, attach);
# WriteStream and CloseStdin feed stdin; SetPolicy would replace this policy at run time.
default ExecProcessRequest := false
default ReadStreamRequest := false
default WriteStreamRequest := false
default CloseStdinRequest := false
default SetPolicyRequest := false

# Only the containers below (and the pod's sandbox), by the rules that follow.
default CreateContainerRequest := false

# CopyFile writes host files into the TD: Kata copies ConfigMap and Secret volumes this way when
# the TD shares no file system with the host (it reads nothing out). Allowed into a container's
# volume staging directory only, never over the image or the guest's own files: no "..", and a
# symbolic link (a ConfigMap's ..data) only to a relative target inside it.
default CopyFileRequest := false

CopyFileRequest if {
	regex.match("^/run/kata-containers/shared/containers(/passthrough)?/(watchable/)?[0-9a-f]{64}-[a-z0-9]{16}-[^/]", input.path)
	no_parent(input.path)
	symlink_inside
}

no_parent(path) if not regex.match("(^|/)[.][.]($|/)", path)

symlink_inside if not input.symlink_target

symlink_inside if {
	not startswith(input.symlink_target, "/")
	no_parent(input.symlink_target)
}

# The sandbox container: /pause from the bundle in the TD's own measured image (guest pull
# source "pause"), nothing pulled besides, and only the runtime's own mounts (a volume at /pause
# would be what runs).
CreateContainerRequest if {
	input.OCI.Annotations["io.kubernetes.cri.container-type"] == "sandbox"
	input.OCI.Annotations["io.katacontainers.pkg.oci.container_type"] == "pod_sandbox"
	input.OCI.Process.Args == ["/pause"]
	pulled_in_guest_only("pause")
	nothing_the_host_runs
	mounts_within([])
}

${pod.containers.map(containerRule).join('\n\n')}

# A workload as containerd annotates it. The agent also reads CRI-O's key, and with "sandbox" there
# would run the pause bundle's process in place of the one checked above: containerd sets none.
workload_container if {
	input.OCI.Annotations["io.kubernetes.cri.container-type"] == "container"
	input.OCI.Annotations["io.katacontainers.pkg.oci.container_type"] == "pod_container"
	not input.OCI.Annotations["io.kubernetes.cri-o.ContainerType"]
}

# The image is pulled inside the TD (CoCo guest pull) by this digest, and nothing else is: a
# root file system the host provides is never run.
pulled_in_guest(image) if {
	input.OCI.Annotations["io.kubernetes.cri.image-name"] == image
	pulled_in_guest_only(image)
}

pulled_in_guest_only(image) if {
	count([pull | some pull in input.storages; pull.driver == "image_guest_pull"]) == 1
	some pulled in input.storages
	pulled.driver == "image_guest_pull"
	pulled.source == image
	pulled.mount_point == own_root_file_system
	input.OCI.Root.Path == own_root_file_system
	pull_as_container(pulled)
	every storage in input.storages {
		not_pulled_or(storage, image)
	}
}

# Where the agent pulls this container's image, and so its root: another Root.Path, or another
# storage there, would run a tree the host wrote.
own_root_file_system := concat("", ["/run/kata-containers/", input.container_id, "/rootfs"])

# The agent unpacks the pause bundle of the TD's own image instead of pulling the source when the
# pull's metadata (its one image_guest_pull driver option, where Kata's runtime copies the
# container's annotations) gives the container type "sandbox" under either CRI's key. The pause
# container's must say so, or the agent would pull "pause" from a registry; no other's may.
pull_as_container(pull) if {
	options := [option | some option in pull.driver_options; startswith(option, "image_guest_pull=")]
	count(options) == 1
	text := trim_prefix(options[0], "image_guest_pull=")
	json.is_valid(text)
	metadata := json.unmarshal(text).metadata
	container_type := input.OCI.Annotations["io.kubernetes.cri.container-type"]
	metadata["io.kubernetes.cri.container-type"] == container_type
	object.get(metadata, "io.kubernetes.cri-o.ContainerType", container_type) == container_type
}

# Any other storage holds nothing of the host's: a tmpfs (ephemeral) or a directory of the TD's
# own (local), as Kata makes for the sandbox and emptyDirs, under its sandbox or shared directory
# and never in or over a root file system. A storage the host fills (virtio-fs, a block device, a
# bind), or one over the directory of a root file system, would replace what runs.
not_pulled_or(storage, _) if own_storage(storage)

not_pulled_or(storage, image) if {
	storage.driver == "image_guest_pull"
	storage.source == image
}

# A tmpfs of the guest's, or a directory it makes: nothing of the host's in either.
own_storage(storage) if {
	storage.driver == "ephemeral"
	storage.fstype == "tmpfs"
	storage.source in ["shm", "tmpfs"]
	guest_storage(storage)
}

own_storage(storage) if {
	storage.driver == "local"
	storage.fstype == "local"
	storage.source == "local"
	guest_storage(storage)
}

guest_storage(storage) if {
	plain_path(storage.mount_point)
	some dir in ["/run/kata-containers/sandbox/", "/run/kata-containers/shared/containers/"]
	startswith(storage.mount_point, dir)
	not regex.match("^/run/kata-containers/[^/]+/rootfs(/.*)?$", storage.mount_point)
}

# Nothing of the host's runs in the TD around a container: no OCI hooks (the agent runs them as
# root in the guest, with the host's path and arguments), no sysctl (written as root before the
# process starts), and no shared mounts (another container's mount moved into this one, over its
# code, before it starts). Nor does a container join a namespace the host names (another
# container's PID namespace, where it could read that one's memory; the guest's own) or a user
# namespace (whose mappings would make its user root), or get a device (/dev/mem, say) or a
# device cgroup rule. Kubernetes and Kata's runtime send none of these for these pods (namespaces
# without paths; the agent sets the network one).
nothing_the_host_runs if {
	no_hooks
	linux := object.get(input.OCI, "Linux", {})
	absent_or_empty(object.get(linux, "Sysctl", null))
	absent_or_empty(object.get(input, "shared_mounts", []))
	absent_or_empty(object.get(linux, "Devices", []))
	absent_or_empty(object.get(object.get(linux, "Resources", {}), "Devices", []))
	absent_or_empty(object.get(input, "devices", []))
	absent_or_empty(object.get(linux, "UIDMappings", []))
	absent_or_empty(object.get(linux, "GIDMappings", []))
	every namespace in object.get(linux, "Namespaces", []) {
		own_namespace(namespace)
	}
}

own_namespace(namespace) if namespace.Type == "network"

own_namespace(namespace) if {
	namespace.Type != "user"
	absent_or_empty(object.get(namespace, "Path", ""))
}

no_hooks if absent_or_empty(object.get(input.OCI, "Hooks", null))

no_hooks if {
	is_object(input.OCI.Hooks)
	every hooks in [list | some list in input.OCI.Hooks] {
		absent_or_empty(hooks)
	}
}

absent_or_empty(value) if is_null(value)

absent_or_empty(value) if count(value) == 0

# NAME=VALUE is in the environment, and NAME has no other value there.
env_pinned(name, value) if {
	concat("=", [name, value]) in input.OCI.Process.Env
	every entry in input.OCI.Process.Env {
		other_or_equal(entry, name, value)
	}
}

other_or_equal(entry, name, _) if not startswith(entry, concat("", [name, "="]))

other_or_equal(entry, name, value) if entry == concat("=", [name, value])
${DENIED_ENV_RULES}${MOUNT_RULES}${PROCESS_RULES}${pod.containers.some((container) => (container.closedEnv ?? []).length > 0) ? CLOSED_ENV_RULES : ''}${pod.containers.some((container) => (container.closedEnv ?? []).some((group) => group.required === true)) ? PRESENT_ENV_RULES : ''}
# The sandbox: no guest hook directory (its executables would run around every container), no
# kernel module (modprobe as root, with the host's arguments), no PID namespace shared between the
# containers, and only storages of the TD's own (own_storage).
default CreateSandboxRequest := false

CreateSandboxRequest if {
	absent_or_empty(object.get(input, "guest_hook_path", ""))
	absent_or_empty(object.get(input, "kernel_modules", []))
	not object.get(input, "sandbox_pidns", false)
	every storage in object.get(input, "storages", []) {
		own_storage(storage)
	}
}

# Denied, as in Kata's genpolicy: the agent would mount what it names (a bind of the TD's own
# directories, say, through which CopyFile then writes into a container's root); Kata sends it only
# to resize an emptyDir's tmpfs.
default UpdateEphemeralMountsRequest := false

# Denied, as in Kata's genpolicy: AddSwap would page the containers' memory (keys, tokens) onto a
# disk the host provides; UpdateContainer would apply the host's resources to a running container;
# SetGuestDateTime would move the clock that token and collateral validity are read against;
# ReseedRandomDev would credit the host's bytes as entropy. Kata sends none of them to start or
# stop these pods.
default AddSwapRequest := false
default ReseedRandomDevRequest := false
default SetGuestDateTimeRequest := false
default UpdateContainerRequest := false

# The network: the host sets up the pod's interface, its routes and its ARP entries, never the
# loopback, where the attestation agent (127.0.0.1:8006) and the function queue-proxy forwards to
# listen. No request names the loopback device; an interface takes no flag but IFF_NOARP and no
# loopback address, and its hardware address (by which the agent finds the link: lo's is all
# zeros) is written as the runtime writes it and is not all zeros; a route has no loopback source;
# an ARP entry is for an address outside 127.0.0.0/8 and ::1, with no mask, a permanent or
# reachable state (NUD_PERMANENT, NUD_REACHABLE) and no flags but NTF_PROXY and NTF_ROUTER. As in
# Kata's genpolicy, but for the spellings the agent's parsers also accept, and the interface's
# addresses, which it does not check.
default UpdateInterfaceRequest := false

UpdateInterfaceRequest if {
	input.interface.name != "lo"
	bits.and(input.interface.raw_flags, bits.negate(128)) == 0
	regex.match("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", input.interface.hwAddr)
	input.interface.hwAddr != "00:00:00:00:00:00"
	every address in object.get(input.interface, "IPAddresses", []) {
		outside_loopback(address.address)
	}
}

default UpdateRoutesRequest := false

UpdateRoutesRequest if {
	every route in input.routes.Routes {
		route.device != "lo"
		no_loopback_source(route.source)
	}
}

no_loopback_source(source) if source == ""

no_loopback_source(source) if outside_loopback(source)

default AddARPNeighborsRequest := false

AddARPNeighborsRequest if {
	every neighbor in input.neighbors.ARPNeighbors {
		neighbor.device != "lo"
		neighbor.toIPAddress.mask == ""
		outside_loopback(neighbor.toIPAddress.address)
		neighbor.state in [2, 128]
		bits.or(neighbor.flags, 136) == 136
	}
}

# An address as Kata's runtime writes it (Go's net.IP.String(): dotted decimal, or lowercase hex
# digits and colons), outside 127.0.0.0/8 and other than ::1 however its zeros are written. Any
# other spelling is refused: the agent's parsers also take a prefix length or an IPv4 address
# inside an IPv6 one, which no pattern here could follow.
outside_loopback(address) if {
	regex.match("^[0-9]{1,3}([.][0-9]{1,3}){3}$", address)
	not startswith(address, "127.")
}

outside_loopback(address) if {
	regex.match("^[0-9a-f:]+$", address)
	not regex.match("^(0{0,4}:){0,7}0{0,3}1$", address)
}

# Everything else the runtime needs to run and stop the pod.
default DestroySandboxRequest := true
default GetMetricsRequest := true
default GetOOMEventRequest := true
default GuestDetailsRequest := true
default ListInterfacesRequest := true
default ListRoutesRequest := true
default MemHotplugByProbeRequest := true
default OnlineCPUMemRequest := true
default PauseContainerRequest := true
default PullImageRequest := true
default ReadContainerTerminationMessage := true
default RemoveContainerRequest := true
default RemoveStaleVirtiofsShareMountsRequest := true
default ResumeContainerRequest := true
default SignalProcessRequest := true
default StartContainerRequest := true
default StartTracingRequest := true
default StatsContainerRequest := true
default StopTracingRequest := true
default TtyWinResizeRequest := true
default WaitProcessRequest := true
`;
}

/** The init-data document (initdata spec 0.1.0, TOML): its exact bytes are the TD's identity. */
export function initDataToml(pod: InitDataPod): string {
  const policy = agentPolicy(pod);
  // A TOML multi-line literal string: no escapes, ends at the first '''.
  if (policy.includes("'''")) throw new Error(`init-data ${pod.name}: the policy may not contain '''`);
  return `# Confidential Containers init-data of ${pod.name}: ${pod.summary}
# Its SHA-384 is the TD's MRCONFIGID. Generated by scripts/generate-manifests.ts: do not edit, run
# npm run generate:manifests. knative/install.sh --tee tdx fills in the image digests, prints each
# pod's MRCONFIGID and passes the document in the cc_init_data annotation.
version = "0.1.0"
algorithm = "sha384"

[data]
"policy.rego" = '''
${policy}'''
`;
}
