#!/usr/bin/env bash
# Installs tee-kms on a Kubernetes cluster with Knative Serving: every function a Knative Service,
# the sealing service, MinIO. Like BigDL KMS's install-bigdl-kms.sh, with its parameters:
#
#   BigDL KMS          here (environment variable / flag)
#   imageName          KMS_IMAGE / --image          <registry>/tee-kms@sha256:… (tdx: digest required;
#                                                   dev: kind.local/tee-kms:dev, loaded with kind load)
#   dataStoragePath    KMS_STORAGE_SIZE / --storage-size, KMS_STORAGE_CLASS / --storage-class
#                                                   (a volume claim, not a host path)
#   serviceIP          KMS_DOMAIN / --domain        optional single host (https://<domain>/user/…)
#                                                   on a Gateway API Gateway; without it each
#                                                   function keeps its own Knative URL
#   rootKey            KMS_ROOT_KEY, KMS_ROOT_KEY_FILE / --root-key-file, --generate-root-key:
#                                                   mode 1 (root key from a Secret, mounted into the
#                                                   sealer as a file: components/root-key-secret).
#                                                   None of them: the Shamir mode (rotate makes the
#                                                   key in the TD)
#   teeMode            KMS_TEE_MODE / --tee         tdx (production) or dev (no TEE, insecure)
#
# Not in BigDL KMS: every function is a Knative Service reached over HTTPS (Knative's
# external-domain-tls with cert-manager: --tls), or all of them one Service (--single-service).
# With --tee tdx the sealer verifies each function's TDX quote, so it needs the
# reference values of your TDs, KMS_TDX_POLICY_FILE / --tdx-policy (required; see
# docs/attestation.md), and where DCAP collateral comes from, KMS_PCCS_URL / --pccs-url (default
# Intel PCS); the functions in turn verify the sealer's quote, against KMS_TRUSTED_SEALER_TDX_POLICY_FILE
# / --sealer-tdx-policy (required), and the sealer grants its admin operations (rotate, verify,
# recover, seal) to the functions named in KMS_ADMIN_POLICY_FILE / --admin-policy (required;
# docs/sealer-protocol.md). No policy is a ConfigMap the cluster administrator could edit: each
# goes into a measured init-data. The sealer's carries --tdx-policy and --admin-policy, which name
# the functions by the SHA-384 of their agent policy (not their MRCONFIGID), so each function's
# can carry --sealer-tdx-policy, which names the sealer's MRCONFIGID.
#
# Everything that can be checked before the cluster changes is checked first (tools, kubectl's
# version, Knative and cert-manager, the RuntimeClass, RBAC with kubectl auth can-i); any refusal
# stops the script with what to do. Run knative/install.sh --help for every option. Secrets are created with kubectl from values
# generated here (or files you give), and kept in KMS_SECRETS_DIR (outside this repository,
# mode 0700); nothing secret is ever written into the work tree.
set -euo pipefail
# A failing command inside $(…) fails the script too: no refusal goes unnoticed.
shopt -s inherit_errexit

SCRIPT_DIR="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -P "$SCRIPT_DIR/.." && pwd)"

usage() {
  cat <<'USAGE'
usage: knative/install.sh [options]     (every option also reads the environment variable shown)

  --tee dev|tdx                 KMS_TEE_MODE        dev: kind/minikube, no TEE, INSECURE; tdx: production
  --image REF                   KMS_IMAGE           tee-kms image; tdx requires REF@sha256:<digest>
                                                    (default for dev: kind.local/tee-kms:dev; Knative resolves
                                                    no kind.local/ or dev.local/ tag, so a kind-loaded image runs)
  --single-service              KMS_SINGLE_SERVICE=1  one Knative Service serving every route (small clusters,
                                                    one base URL); needs a root key Secret (mode 1)
  --tls self-signed|acme|cluster KMS_TLS_ISSUER     HTTPS for the function URLs (Knative external-domain-tls
                                                    with cert-manager): a CA made in the cluster (default;
                                                    clients trust <secrets dir>/public-ca.crt), Let's Encrypt
                                                    (HTTP-01; needs --acme-email and a real Knative domain), or
                                                    what the cluster already has configured
  --acme-email EMAIL            KMS_ACME_EMAIL      --tls acme: the ACME account's contact
  --acme-server URL             KMS_ACME_SERVER     --tls acme: default Let's Encrypt production
  --namespace NS                KMS_NAMESPACE       default tee-kms
  --storage-size SIZE           KMS_STORAGE_SIZE    MinIO volume claim (default 10Gi; dev 1Gi)
  --storage-class NAME          KMS_STORAGE_CLASS   default: the cluster's default class
  --bucket NAME                 KMS_BUCKET          default tee-kms
  --noncurrent-version-days N   KMS_NONCURRENT_VERSION_DAYS  days MinIO keeps an object's previous
                                                    versions (default 7): the undo window, and how
                                                    long records wrapped under a rotated-away root key remain
  --root-key-file FILE          KMS_ROOT_KEY_FILE   mode 1: base64 of 32 random bytes (or KMS_ROOT_KEY)
  --generate-root-key                               mode 1 with a new random key (saved in the secrets dir)
                                                    (no root key at all: the Shamir mode; with --tee tdx
                                                    mode 1 is listed in the sealer's init-data, so the
                                                    sealer's MRCONFIGID differs between the two modes)
  --replace-root-key                                allow replacing an installed mode-1 key (orphans
                                                    every key wrapped under the old one)
  --admin-token-file FILE       KMS_ADMIN_TOKEN_FILE  operator token for rotate/verify (default: generated)
  --domain HOST                 KMS_DOMAIN          single host with BigDL KMS's paths (Gateway API)
  --gateway-class NAME          KMS_GATEWAY_CLASS   GatewayClass for that host (required with --domain)
  --public-tls-cert FILE        KMS_PUBLIC_TLS_CERT_FILE  certificate chain for --domain
  --public-tls-key FILE         KMS_PUBLIC_TLS_KEY_FILE   its private key
  --public-tls-secret NAME      KMS_PUBLIC_TLS_SECRET     or: an existing kubernetes.io/tls Secret
  --tdx-policy FILE             KMS_TDX_POLICY_FILE tdx (required): the sealer's TDX reference values, JSON
                                                    {"mrTd": [...], "rtmr0": [...], ...} (docs/attestation.md),
                                                    reference values only: no mrConfigId, initData or
                                                    agentPolicies (install.sh adds the functions' agent
                                                    policy digests, the sealer its own MRCONFIGID); carried
                                                    in the sealer's init-data, so its MRCONFIGID changes with it
  --sealer-tdx-policy FILE      KMS_TRUSTED_SEALER_TDX_POLICY_FILE  tdx (required): the reference values the
                                                    functions require of the sealer's own TD (same format
                                                    as --tdx-policy, mrConfigId: the sealer's MRCONFIGID);
                                                    carried in each function's init-data, so the functions'
                                                    MRCONFIGIDs change with it
  --admin-policy FILE           KMS_ADMIN_POLICY_FILE  tdx (required): who may rotate, verify, recover, seal:
                                                    JSON {"rotate": [name...], "verify": [...], "recover": [...],
                                                    "seal": [...]}, each name a function Service of this
                                                    install (e.g. rotate-root-key; tee-kms with --single-service);
                                                    no "sealer-peer": the sealer grants it to its own;
                                                    carried in the sealer's init-data, like --tdx-policy
  --auto-unseal-kbs-url URL     KMS_AUTO_UNSEAL_KBS_URL  tdx: auto-unseal the sealer from this https:// KBS
                                                    (docs/root-key.md: whoever controls that KBS can unseal);
                                                    listed in the sealer's init-data, so its MRCONFIGID changes
  --auto-unseal-ca FILE         KMS_AUTO_UNSEAL_CA  tdx, with the URL: PEM CA of that KBS's TLS certificate
  --auto-unseal-resource PATH   KMS_AUTO_UNSEAL_RESOURCE  tdx: its resource (default tee-kms/unseal/kek)
  --custodian-keys FILE         KMS_CUSTODIAN_KEYS_FILE  tdx (required in the Shamir mode): pin the custodians
                                                    (KMS_SEALER_CUSTODIANS, docs/custodians.md): FILE as for tee-kms
                                                    rotate --custodians, their public JWKs in share order; listed
                                                    in the sealer's init-data, so its MRCONFIGID changes
  --threshold N                 KMS_CUSTODIAN_THRESHOLD  tdx, with --custodian-keys: how many of their shares
                                                    recover the root key (default 3; 2 to their number), pinned
                                                    beside them (KMS_SEALER_CUSTODIANS_THRESHOLD) and set as
                                                    KMS_THRESHOLD, with KMS_SHARES their number, in tee-kms-config
  --previous-custodian-keys FILE KMS_PREVIOUS_CUSTODIAN_KEYS_FILE  tdx, with --custodian-keys: for a change of
                                                    custodians, the previous ones' public JWKs (same format), whose
                                                    shares still recover the sealing service until the rotation to
                                                    the new ones is verified; install again without it afterwards.
                                                    Pinned as KMS_SEALER_CUSTODIANS_PREVIOUS in the sealer's init-data
  --previous-threshold N        KMS_PREVIOUS_CUSTODIAN_THRESHOLD  with --previous-custodian-keys: their threshold
                                                    (default 3; 2 to their number), pinned beside them
  --pccs-url URL                KMS_PCCS_URL        tdx: DCAP collateral source, a PCCS or Intel PCS base URL
                                                    (https://, without /sgx|tdx/certification/v4;
                                                    default https://api.trustedservices.intel.com); listed in
                                                    every TD pod's init-data, so their MRCONFIGIDs change with it
  --pccs-ca FILE                KMS_PCCS_CA_FILE    tdx: PEM CA of that PCCS's TLS certificate, for a PCCS with a
                                                    private CA (default: Node's bundled root certificates only);
                                                    listed in every TD pod's init-data like --pccs-url
  --queue-proxy-image REF       KMS_QUEUE_PROXY_IMAGE  tdx (required): Knative Serving's queue-proxy image,
                                                    REF@sha256:<digest> as the serving-core.yaml of the installed
                                                    Knative release names it (check the release's signature):
                                                    it runs in every function's TD, so it is trusted code, and
                                                    their agent policy admits only it (docs/deploy-knative.md)
  --internal-tls / --no-internal-tls  KMS_INTERNAL_TLS  Knative system-internal-tls (default: on for tdx)
  --skip-knative-config         KMS_SKIP_KNATIVE_CONFIG=1  do not patch knative-serving's ConfigMaps (then they
                                                    must already have what tee-kms needs: checked)
  --secrets-dir DIR             KMS_SECRETS_DIR     default ${XDG_CONFIG_HOME:-~/.config}/tee-kms/<namespace>
  --cluster-domain NAME         KMS_CLUSTER_DOMAIN  default cluster.local
  --minio-image REF             KMS_MINIO_IMAGE     override the MinIO image
  --mc-image REF                KMS_MC_IMAGE        override the MinIO client image (bucket Job)
  --timeout DURATION            KMS_WAIT_TIMEOUT    how long to wait for readiness (default 10m)
  --no-wait                                         apply and return
  --dry-run                                         generate the kustomization and print the manifests
                                                    (kubectl kustomize); touch no cluster, make no secret
  --work-dir DIR                KMS_WORK_DIR        where the generated kustomization goes (kept)
  -h, --help
USAGE
}

log() { printf 'tee-kms install: %s\n' "$*" >&2; }
die() {
  printf 'tee-kms install: error: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# parameters

TEE_MODE=${KMS_TEE_MODE:-${teeMode:-}}
IMAGE=${KMS_IMAGE:-${imageName:-}}
NS=${KMS_NAMESPACE:-tee-kms}
STORAGE_SIZE=${KMS_STORAGE_SIZE:-}
STORAGE_CLASS=${KMS_STORAGE_CLASS:-}
BUCKET=${KMS_BUCKET:-tee-kms}
NONCURRENT_VERSION_DAYS=${KMS_NONCURRENT_VERSION_DAYS:-7}
ROOT_KEY_VALUE=${KMS_ROOT_KEY:-${rootKey:-}}
ROOT_KEY_FILE=${KMS_ROOT_KEY_FILE:-}
GENERATE_ROOT_KEY=0
REPLACE_ROOT_KEY=0
ADMIN_TOKEN_FILE=${KMS_ADMIN_TOKEN_FILE:-}
DOMAIN=${KMS_DOMAIN:-}
GATEWAY_CLASS=${KMS_GATEWAY_CLASS:-}
PUBLIC_TLS_CERT=${KMS_PUBLIC_TLS_CERT_FILE:-}
PUBLIC_TLS_KEY=${KMS_PUBLIC_TLS_KEY_FILE:-}
PUBLIC_TLS_SECRET=${KMS_PUBLIC_TLS_SECRET:-}
QUEUE_PROXY_IMAGE=${KMS_QUEUE_PROXY_IMAGE:-}
TDX_POLICY_FILE=${KMS_TDX_POLICY_FILE:-}
SEALER_TDX_POLICY_FILE=${KMS_TRUSTED_SEALER_TDX_POLICY_FILE:-}
ADMIN_POLICY_FILE=${KMS_ADMIN_POLICY_FILE:-}
INTEL_PCS_URL=https://api.trustedservices.intel.com
PCCS_URL=${KMS_PCCS_URL:-}
PCCS_CA=${KMS_PCCS_CA_FILE:-}
AUTO_UNSEAL_KBS_URL=${KMS_AUTO_UNSEAL_KBS_URL:-}
AUTO_UNSEAL_CA=${KMS_AUTO_UNSEAL_CA:-}
AUTO_UNSEAL_RESOURCE=${KMS_AUTO_UNSEAL_RESOURCE:-}
CUSTODIAN_KEYS=${KMS_CUSTODIAN_KEYS_FILE:-}
CUSTODIAN_THRESHOLD=${KMS_CUSTODIAN_THRESHOLD:-}
PREVIOUS_CUSTODIAN_KEYS=${KMS_PREVIOUS_CUSTODIAN_KEYS_FILE:-}
PREVIOUS_CUSTODIAN_THRESHOLD=${KMS_PREVIOUS_CUSTODIAN_THRESHOLD:-}
INTERNAL_TLS=${KMS_INTERNAL_TLS:-}
SKIP_KNATIVE_CONFIG=${KMS_SKIP_KNATIVE_CONFIG:-0}
SECRETS_DIR=${KMS_SECRETS_DIR:-}
CLUSTER_DOMAIN=${KMS_CLUSTER_DOMAIN:-cluster.local}
MINIO_IMAGE=${KMS_MINIO_IMAGE:-}
MC_IMAGE=${KMS_MC_IMAGE:-}
WAIT_TIMEOUT=${KMS_WAIT_TIMEOUT:-10m}
# The sealer's replicas: knative/base/sealer-statefulset.yaml (replicas, KMS_SEALER_PEERS) and
# base/config.yaml (KMS_SEALER_URL) name as many; their names go into the sealer certificate.
SEALER_REPLICAS=3
SINGLE_SERVICE=${KMS_SINGLE_SERVICE:-0}
TLS_ISSUER=${KMS_TLS_ISSUER:-}
ACME_EMAIL=${KMS_ACME_EMAIL:-}
ACME_SERVER=${KMS_ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}
LAYOUT=per-function
WAIT=1
DRY_RUN=0
WORK_DIR=${KMS_WORK_DIR:-}

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --tee) need_value "$@"; TEE_MODE=$2; shift 2 ;;
    --image) need_value "$@"; IMAGE=$2; shift 2 ;;
    --namespace) need_value "$@"; NS=$2; shift 2 ;;
    --storage-size) need_value "$@"; STORAGE_SIZE=$2; shift 2 ;;
    --storage-class) need_value "$@"; STORAGE_CLASS=$2; shift 2 ;;
    --bucket) need_value "$@"; BUCKET=$2; shift 2 ;;
    --noncurrent-version-days) need_value "$@"; NONCURRENT_VERSION_DAYS=$2; shift 2 ;;
    --root-key-file) need_value "$@"; ROOT_KEY_FILE=$2; shift 2 ;;
    --generate-root-key) GENERATE_ROOT_KEY=1; shift ;;
    --replace-root-key) REPLACE_ROOT_KEY=1; shift ;;
    --admin-token-file) need_value "$@"; ADMIN_TOKEN_FILE=$2; shift 2 ;;
    --domain) need_value "$@"; DOMAIN=$2; shift 2 ;;
    --gateway-class) need_value "$@"; GATEWAY_CLASS=$2; shift 2 ;;
    --public-tls-cert) need_value "$@"; PUBLIC_TLS_CERT=$2; shift 2 ;;
    --public-tls-key) need_value "$@"; PUBLIC_TLS_KEY=$2; shift 2 ;;
    --public-tls-secret) need_value "$@"; PUBLIC_TLS_SECRET=$2; shift 2 ;;
    --queue-proxy-image) need_value "$@"; QUEUE_PROXY_IMAGE=$2; shift 2 ;;
    --initdata) die "--initdata is gone: each TD pod's init-data is knative/components/tdx/init-data/<name>.toml (npm run generate:manifests), with the image digests filled in here" ;;
    --tdx-policy) need_value "$@"; TDX_POLICY_FILE=$2; shift 2 ;;
    --sealer-tdx-policy) need_value "$@"; SEALER_TDX_POLICY_FILE=$2; shift 2 ;;
    --admin-policy) need_value "$@"; ADMIN_POLICY_FILE=$2; shift 2 ;;
    --pccs-url) need_value "$@"; PCCS_URL=$2; shift 2 ;;
    --pccs-ca) need_value "$@"; PCCS_CA=$2; shift 2 ;;
    --auto-unseal-kbs-url) need_value "$@"; AUTO_UNSEAL_KBS_URL=$2; shift 2 ;;
    --auto-unseal-ca) need_value "$@"; AUTO_UNSEAL_CA=$2; shift 2 ;;
    --auto-unseal-resource) need_value "$@"; AUTO_UNSEAL_RESOURCE=$2; shift 2 ;;
    --custodian-keys) need_value "$@"; CUSTODIAN_KEYS=$2; shift 2 ;;
    --threshold) need_value "$@"; CUSTODIAN_THRESHOLD=$2; shift 2 ;;
    --previous-custodian-keys) need_value "$@"; PREVIOUS_CUSTODIAN_KEYS=$2; shift 2 ;;
    --previous-threshold) need_value "$@"; PREVIOUS_CUSTODIAN_THRESHOLD=$2; shift 2 ;;
    --internal-tls) INTERNAL_TLS=1; shift ;;
    --no-internal-tls) INTERNAL_TLS=0; shift ;;
    --skip-knative-config) SKIP_KNATIVE_CONFIG=1; shift ;;
    --secrets-dir) need_value "$@"; SECRETS_DIR=$2; shift 2 ;;
    --cluster-domain) need_value "$@"; CLUSTER_DOMAIN=$2; shift 2 ;;
    --minio-image) need_value "$@"; MINIO_IMAGE=$2; shift 2 ;;
    --mc-image) need_value "$@"; MC_IMAGE=$2; shift 2 ;;
    --timeout) need_value "$@"; WAIT_TIMEOUT=$2; shift 2 ;;
    --single-service) SINGLE_SERVICE=1; shift ;;
    --tls) need_value "$@"; TLS_ISSUER=$2; shift 2 ;;
    --acme-email) need_value "$@"; ACME_EMAIL=$2; shift 2 ;;
    --acme-server) need_value "$@"; ACME_SERVER=$2; shift 2 ;;
    --no-wait) WAIT=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --work-dir) need_value "$@"; WORK_DIR=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# validation

case $TEE_MODE in
  dev | tdx) ;;
  sgx) die "--tee sgx: tee-kms runs in Intel TDX trust domains (Confidential Containers); use --tee tdx, or dev" ;;
  '') die "choose the TEE mode: --tee tdx (production) or --tee dev (no TEE, insecure)" ;;
  *) die "--tee must be dev or tdx, got '$TEE_MODE'" ;;
esac
[[ $TEE_MODE == tdx || -z $AUTO_UNSEAL_KBS_URL$AUTO_UNSEAL_CA$AUTO_UNSEAL_RESOURCE ]] \
  || die "--auto-unseal-* is for --tee tdx, where the sealer's init-data lists it; under --tee dev set KMS_SEALER_UNSEAL_* on the sealer yourself (docs/root-key.md)"
[[ $TEE_MODE == tdx || -z $CUSTODIAN_KEYS ]] \
  || die "--custodian-keys is for --tee tdx, where the sealer's init-data lists it; under --tee dev set KMS_SEALER_CUSTODIANS on the sealer yourself (docs/custodians.md)"
[[ -n $CUSTODIAN_KEYS || -z $CUSTODIAN_THRESHOLD ]] \
  || die "--threshold pins the threshold of the custodians that --custodian-keys pins, and goes with it; without pinned custodians set KMS_THRESHOLD in tee-kms-config"
[[ $TEE_MODE == tdx || -z $PREVIOUS_CUSTODIAN_KEYS ]] \
  || die "--previous-custodian-keys is for --tee tdx, where the sealer's init-data lists it; under --tee dev set KMS_SEALER_CUSTODIANS_PREVIOUS on the sealer yourself (docs/custodians.md)"
[[ -n $CUSTODIAN_KEYS || -z $PREVIOUS_CUSTODIAN_KEYS ]] \
  || die "--previous-custodian-keys names the custodians that the ones of --custodian-keys replace, and goes with it: give the new custodians' keys too"
[[ -n $PREVIOUS_CUSTODIAN_KEYS || -z $PREVIOUS_CUSTODIAN_THRESHOLD ]] \
  || die "--previous-threshold pins the threshold of the custodians that --previous-custodian-keys pins, and goes with it"

DNS_LABEL='[a-z0-9]([-a-z0-9]*[a-z0-9])?'
[[ $NS =~ ^$DNS_LABEL$ && ${#NS} -le 63 ]] || die "--namespace must be a DNS label, got '$NS'"
[[ $BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "--bucket must be an S3 bucket name, got '$BUCKET'"
[[ $NONCURRENT_VERSION_DAYS =~ ^[1-9][0-9]{0,4}$ ]] || die "--noncurrent-version-days must be a whole number of days from 1, got '$NONCURRENT_VERSION_DAYS'"
[[ $CLUSTER_DOMAIN =~ ^$DNS_LABEL(\.$DNS_LABEL)*$ ]] || die "--cluster-domain is not a domain name: '$CLUSTER_DOMAIN'"
[[ -z $STORAGE_SIZE || $STORAGE_SIZE =~ ^[0-9]+(Mi|Gi|Ti)$ ]] || die "--storage-size must look like 10Gi, got '$STORAGE_SIZE'"
[[ -z $STORAGE_CLASS || $STORAGE_CLASS =~ ^$DNS_LABEL(\.$DNS_LABEL)*$ ]] || die "--storage-class is not a valid name: '$STORAGE_CLASS'"
[[ $WAIT_TIMEOUT =~ ^[0-9]+[smh]$ ]] || die "--timeout must look like 10m, got '$WAIT_TIMEOUT'"

IMAGE_REF_RE='^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*(:[A-Za-z0-9._-]{1,128})?(@sha256:[0-9a-f]{64})?$'
if [[ -z $IMAGE ]]; then
  [[ $TEE_MODE == dev ]] || die "--tee tdx needs --image <registry>/tee-kms@sha256:<digest> (build it from the Dockerfile, push it, pin it)"
  IMAGE=kind.local/tee-kms:dev
fi
for ref in "$IMAGE" "$MINIO_IMAGE" "$MC_IMAGE" "$QUEUE_PROXY_IMAGE"; do
  [[ -z $ref || $ref =~ $IMAGE_REF_RE ]] || die "not an image reference: '$ref'"
done
if [[ $TEE_MODE == tdx ]]; then
  for ref in "$IMAGE" "$MINIO_IMAGE" "$MC_IMAGE" "$QUEUE_PROXY_IMAGE"; do
    [[ -z $ref || $ref == *@sha256:* ]] || die "--tee tdx pins images by digest: '$ref' has no @sha256:<digest>"
  done
  [[ $IMAGE != *@sha256:0000000000000000000000000000000000000000000000000000000000000000 ]] || die "--image: that is the overlay's placeholder digest"
fi

ROOT_KEY_MODE=shares
if [[ -n $ROOT_KEY_VALUE || -n $ROOT_KEY_FILE || $GENERATE_ROOT_KEY == 1 ]]; then
  ROOT_KEY_MODE=secret
  n=0
  [[ -n $ROOT_KEY_VALUE ]] && n=$((n + 1))
  [[ -n $ROOT_KEY_FILE ]] && n=$((n + 1))
  [[ $GENERATE_ROOT_KEY == 1 ]] && n=$((n + 1))
  [[ $n -eq 1 ]] || die "give the root key one way: KMS_ROOT_KEY, --root-key-file or --generate-root-key"
  [[ -z $ROOT_KEY_FILE || -r $ROOT_KEY_FILE ]] || die "--root-key-file: cannot read $ROOT_KEY_FILE"
fi
[[ -z $ADMIN_TOKEN_FILE || -r $ADMIN_TOKEN_FILE ]] || die "--admin-token-file: cannot read $ADMIN_TOKEN_FILE"

if [[ -n $DOMAIN ]]; then
  [[ $DOMAIN =~ ^$DNS_LABEL(\.$DNS_LABEL)+$ ]] || die "--domain must be a host name (BigDL KMS's serviceIP is a Gateway address here: point DNS at it), got '$DOMAIN'"
  [[ -n $GATEWAY_CLASS ]] || die "--domain needs --gateway-class (the GatewayClass of your Gateway API implementation)"
  [[ $GATEWAY_CLASS =~ ^$DNS_LABEL(\.$DNS_LABEL)*$ ]] || die "--gateway-class is not a valid name: '$GATEWAY_CLASS'"
  if [[ -n $PUBLIC_TLS_SECRET ]]; then
    [[ -z $PUBLIC_TLS_CERT && -z $PUBLIC_TLS_KEY ]] || die "give either --public-tls-secret or --public-tls-cert/--public-tls-key"
    [[ $PUBLIC_TLS_SECRET =~ ^$DNS_LABEL(\.$DNS_LABEL)*$ ]] || die "--public-tls-secret is not a valid name"
  elif [[ $DRY_RUN == 0 ]]; then
    [[ -r $PUBLIC_TLS_CERT && -r $PUBLIC_TLS_KEY ]] || die "--domain needs its certificate: --public-tls-cert and --public-tls-key, or --public-tls-secret"
  fi
fi
if [[ -z $INTERNAL_TLS ]]; then
  if [[ $TEE_MODE == tdx ]]; then INTERNAL_TLS=1; else INTERNAL_TLS=0; fi
fi

case $SINGLE_SERVICE in
  0) LAYOUT=per-function ;;
  1) LAYOUT=single-service ;;
  *) die "KMS_SINGLE_SERVICE must be 0 or 1, got '$SINGLE_SERVICE'" ;;
esac
if [[ $SINGLE_SERVICE == 1 ]]; then
  # The one Service is public, and the first rotate initializes an uninitialized sealer without a
  # token: in the Shamir mode anyone who reaches it first would receive the shares.
  [[ $ROOT_KEY_MODE == secret ]] \
    || die "--single-service serves rotate-root-key publicly, and the first rotate of the Shamir mode needs no token: give the root key as a Secret (--generate-root-key or --root-key-file), or keep the per-function layout (rotate is cluster-local there)"
  [[ -z $DOMAIN ]] || die "--domain maps BigDL KMS's paths onto the per-function Services; --single-service already has one base URL (map a domain to it with a DomainMapping: knative/base/routing/domain-mapping.example.yaml)"
fi
case $TLS_ISSUER in
  '' | self-signed | cluster) ;;
  acme)
    [[ $ACME_EMAIL =~ ^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$ ]] || die "--tls acme needs --acme-email (the ACME account's contact address)"
    [[ $ACME_SERVER =~ ^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~%/-]*)?$ ]] || die "--acme-server must be an https:// URL, got '$ACME_SERVER'"
    ;;
  *) die "--tls must be self-signed, acme or cluster, got '$TLS_ISSUER'" ;;
esac
[[ $TLS_ISSUER == acme || -z $ACME_EMAIL ]] || die "--acme-email is for --tls acme"

# The TDX policy is the security policy: which TDs get the root key. The sealer checks it again at
# start and refuses to start on a policy it cannot apply; checking it here, with the sealer's own
# loader (scripts/check-policy.ts), means a bad file never reaches the cluster (where it would stop
# the sealer, or in the Shamir mode seal it). Prints a one-line summary.
# $1: the file, $2: the option that named it, then check-policy's options (--within FILE).
check_tdx_policy() {
  command -v node >/dev/null 2>&1 || die "node (>= 20.19) is needed to check $2 with the sealer's own checks"
  local summary
  summary=$(node "$REPO_ROOT/scripts/run-built.mjs" dist/scripts/check-policy.js "$1" "${@:3}" 2>&1) \
    || die "$2 ${summary##*$'\n'} (see docs/attestation.md)"
  printf '%s\n' "${summary##*$'\n'}" # the last line: run-built.mjs may say it builds dist/ first
}

# The admin policy decides which functions may rotate, verify, recover and seal. The sealer refuses
# to start on one it cannot read (sealer/admin-policy.ts): the same rules here, so a bad file never
# reaches the cluster. It names the function Services of this install ($2...), which install.sh
# replaces by their agent policy digests ("policy.rego:<sha384>", sealer_policies): a function's
# MRCONFIGID covers --sealer-tdx-policy, which names the sealer's, so the sealer's own document
# cannot name it. No "sealer-peer" either (the sealer grants that to its own MRCONFIGID, and refuses
# a document naming it). Prints how many functions each operation is granted to.
check_admin_policy() {
  local summary
  # shellcheck disable=SC2016 # JavaScript, not shell
  summary=$(node -e '
    const ops = ["rotate", "verify", "recover", "seal"];
    const [file, ...known] = process.argv.slice(1);
    const fail = (m) => { console.log(m); process.exit(1); };
    let json;
    try { json = JSON.parse(require("fs").readFileSync(file, "utf8")); } catch (e) { fail(`not JSON: ${String(e.message).replace(/\s+/g, " ")}`); }
    if (typeof json !== "object" || json === null || Array.isArray(json)) fail("must be a JSON object {\"rotate\": [service, ...], \"verify\": [...], \"recover\": [...], \"seal\": [...]}");
    if (Object.hasOwn(json, "sealer-peer")) fail("must not grant \"sealer-peer\": the sealer grants it to its own MRCONFIGID, and to nothing else, because its init-data carries this policy and cannot name its own digest; remove the entry");
    for (const [op, names] of Object.entries(json)) {
      if (!ops.includes(op)) fail(`unknown operation "${op.slice(0, 32)}" (known: ${ops.join(", ")})`);
      if (!Array.isArray(names)) fail(`"${op}" must be a list of function Service names`);
      names.forEach((name, i) => {
        if (typeof name !== "string") fail(`${op}[${i}] must be a function Service name (known: ${known.join(", ")})`);
        if (/^(0x)?[0-9a-f]{96}$/i.test(name)) fail(`${op}[${i}] is a TD identity (96 hex digits): name the function Service instead (known: ${known.join(", ")}); install.sh puts in its agent policy digest`);
        if (name === "tee-kms-sealer") fail(`${op}[${i}] names the sealer: a sealer TD calls no admin operation (docs/replicas.md)`);
        if (!known.includes(name)) fail(`${op}[${i}] ${JSON.stringify(name.slice(0, 64))} is not a function Service of this install (known: ${known.join(", ")})`);
      });
    }
    console.log(ops.map((op) => `${op} ${new Set(json[op] ?? []).size}`).join(", "));
  ' "$1" "${@:2}" 2>&1) || die "--admin-policy $1: ${summary##*$'\n'} (see docs/sealer-protocol.md)"
  printf '%s\n' "$summary"
}

# ---------------------------------------------------------------------------------------------
# init-data: each TD pod's identity (knative/components/tdx/init-data, scripts/init-data.ts)

# The Services of this layout and the sealer: every pod that runs in a TD.
TD_PODS=()
for manifest in "$SCRIPT_DIR/functions/$LAYOUT"/*.yaml; do
  pod=${manifest##*/}
  pod=${pod%.yaml}
  [[ $pod == kustomization ]] || TD_PODS+=("$pod")
done
TD_PODS+=(tee-kms-sealer)
INIT_DATA_DIR=$SCRIPT_DIR/components/tdx/init-data
PLACEHOLDER_DIGEST=sha256:0000000000000000000000000000000000000000000000000000000000000000
# The tee-kms image as the pods will name it: the kustomize images entry keeps name@digest only.
pod_image_ref() {
  local name=${1%%@*}
  [[ ${name##*/} != *:* ]] || name=${name%:*}
  printf '%s@%s\n' "$name" "${1#*@}"
}
# Auto-unseal (docs/root-key.md): its variables reach the sealer only as its init-data lists them
# (auto_unseal_env), so they go into both, from one JSON array of [NAME, VALUE] pairs made here.
AUTO_UNSEAL_ENV_JSON=
check_auto_unseal() {
  [[ -n $AUTO_UNSEAL_KBS_URL$AUTO_UNSEAL_CA$AUTO_UNSEAL_RESOURCE ]] || return 0
  [[ $AUTO_UNSEAL_KBS_URL =~ ^https://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?/?$ ]] \
    || die "--auto-unseal-kbs-url must be an https:// KBS address such as https://kbs.example:8080, got '$AUTO_UNSEAL_KBS_URL'"
  if [[ -z $AUTO_UNSEAL_CA || ! -f $AUTO_UNSEAL_CA || ! -r $AUTO_UNSEAL_CA ]] || ! grep -q -- '^-----BEGIN CERTIFICATE' "$AUTO_UNSEAL_CA"; then
    die "--auto-unseal-kbs-url needs --auto-unseal-ca FILE, the PEM CA of the KBS's TLS certificate (it is pinned in the sealer's init-data)"
  fi
  [[ -z $AUTO_UNSEAL_RESOURCE || $AUTO_UNSEAL_RESOURCE =~ ^[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*$ ]] \
    || die "--auto-unseal-resource must be <repository>/<type>/<tag>, got '$AUTO_UNSEAL_RESOURCE'"
  AUTO_UNSEAL_ENV_JSON=$(node -e '
    const [url, caFile, resource] = process.argv.slice(1);
    const ca = require("node:fs").readFileSync(caFile, "utf8").replace(/\s+$/, "");
    const env = [["KMS_SEALER_UNSEAL_KBS_URL", url.replace(/\/$/, "")], ["KMS_SEALER_UNSEAL_CA", ca]];
    if (resource !== "") env.push(["KMS_SEALER_UNSEAL_RESOURCE", resource]);
    process.stdout.write(JSON.stringify(env));
  ' "$AUTO_UNSEAL_KBS_URL" "$AUTO_UNSEAL_CA" "$AUTO_UNSEAL_RESOURCE") || die "node is needed for --auto-unseal-*"
}

# The collateral source (docs/attestation.md, "Collateral"): the PCCS URL and, with --pccs-ca, the
# CA its TLS certificate must chain to reach the sealer (KMS_SEALER_PCCS_*) and the functions
# (KMS_TRUSTED_SEALER_PCCS_*) only as their init-data lists them (pccs_env), so they go into both,
# from one JSON array of [NAME, VALUE] pairs each (scripts/pccs-env.ts, which checks the CA as the
# pods check it).
SEALER_PCCS_ENV_JSON='[]'
FUNCTION_PCCS_ENV_JSON='[]'
check_pccs() {
  local lists
  [[ -z $PCCS_CA || ( -f $PCCS_CA && -r $PCCS_CA ) ]] || die "--pccs-ca $PCCS_CA: no such readable file"
  lists=$(node "$REPO_ROOT/scripts/run-built.mjs" dist/scripts/pccs-env.js "$PCCS_URL" "$PCCS_CA") || die "--pccs-ca: see above (node is needed for it)"
  SEALER_PCCS_ENV_JSON=${lists%%$'\n'*}
  FUNCTION_PCCS_ENV_JSON=${lists#*$'\n'}
  [[ $SEALER_PCCS_ENV_JSON == '[['* && $FUNCTION_PCCS_ENV_JSON == '[['* ]] || die "internal: scripts/pccs-env.ts printed no lists"
}

# The root key mode (docs/root-key.md): the sealer's agent policy admits KMS_SEALER_ROOT_KEY and
# KMS_SEALER_ROOT_KEY_FILE only as its init-data lists them (root_key_env), so mode 1 is measured.
# In mode 1 components/root-key-secret sets KMS_SEALER_ROOT_KEY_FILE on the sealer; the entry listed
# is read from that component's patch, so the two cannot differ. [[NAME, VALUE]] as JSON, or [].
ROOT_KEY_PATCH=$SCRIPT_DIR/components/root-key-secret/patches/sealer-root-key-file.yaml
ROOT_KEY_ENV_JSON='[]'
check_root_key_env() {
  [[ $ROOT_KEY_MODE == secret ]] || return 0
  local file
  file=$(sed -n '/^    name: KMS_SEALER_ROOT_KEY_FILE$/{n;s|^    value: \(/[A-Za-z0-9/._-]*\)$|\1|p;}' "$ROOT_KEY_PATCH")
  [[ $file =~ ^/[A-Za-z0-9/._-]+$ ]] \
    || die "cannot read the KMS_SEALER_ROOT_KEY_FILE that $ROOT_KEY_PATCH sets (name: line, then value: /path): the sealer's init-data must list it"
  ROOT_KEY_ENV_JSON=$(printf '[["KMS_SEALER_ROOT_KEY_FILE", "%s"]]' "$file")
}

# What a recovery takes, as the messages below say it: the pinned threshold of custodians, each
# sealing their share with their recovery challenge; unpinned, KMS_THRESHOLD of tee-kms-config.
if [[ -n $CUSTODIAN_KEYS ]]; then
  RECOVERY_SHARES="${CUSTODIAN_THRESHOLD:-3} shares, each sealed by its custodian with their recovery challenge (custodian seal-share --key, docs/custodians.md)"
  [[ -z $PREVIOUS_CUSTODIAN_KEYS ]] || RECOVERY_SHARES+=", or ${PREVIOUS_CUSTODIAN_THRESHOLD:-3} of the previous custodians'"
else
  RECOVERY_SHARES="the threshold of shares (KMS_THRESHOLD in tee-kms-config, 3 unless changed)"
fi

# Pinned custodians (docs/custodians.md): KMS_SEALER_CUSTODIANS and KMS_SEALER_CUSTODIANS_THRESHOLD
# reach the sealer only as its init-data lists them (custodians_env), so they go into both. The
# first is the RFC 7638 SHA-256 thumbprint of each key of --custodian-keys (the JSON array of public
# JWKs that tee-kms rotate --custodians reads), in its order, checked as the sealer checks a
# rotation's custodians; the second is --threshold. A change of custodians adds
# KMS_SEALER_CUSTODIANS_PREVIOUS and its _THRESHOLD the same way, from --previous-custodian-keys and
# --previous-threshold: the current root key's shares are still theirs, and a recovery needs them
# until a rotation to the new custodians is verified. [[NAME, VALUE]] as JSON, or [].
CUSTODIANS_ENV_JSON='[]'
# Prints "<thumbprints, comma-separated> <threshold>" for a file of custodians' keys, or refuses it.
# $1: its option, $2: the file, $3: the threshold's option, $4: the threshold (empty: 3).
custodian_pin() {
  [[ -f $2 && -r $2 ]] || die "$1 $2: no such readable file"
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const { createHash, createPublicKey } = require("node:crypto");
    const [option, file, thresholdOption, given] = process.argv.slice(1);
    const fail = (why) => { console.error(`${option} ${file}: ${why}`); process.exit(1); };
    let keys;
    try { keys = JSON.parse(require("node:fs").readFileSync(file, "utf8")); } catch { fail("not JSON"); }
    if (!Array.isArray(keys) || keys.length < 2 || keys.length > 255) fail("must hold a JSON array of 2 to 255 public JWKs, one per share, in share order");
    const thumbprints = keys.map((jwk, i) => {
      if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) fail(`[${i}] is not a JWK object`);
      if (["d", "p", "q", "dp", "dq", "qi", "k"].some((m) => m in jwk)) fail(`[${i}] holds private key material: give the public keys only`);
      if (jwk.kty !== "EC" || jwk.crv !== "P-256") fail(`[${i}] is not an EC P-256 key`);
      for (const c of ["x", "y"])
        if (typeof jwk[c] !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(jwk[c]) || Buffer.from(jwk[c], "base64url").toString("base64url") !== jwk[c]) fail(`[${i}]: ${c} is not a base64url P-256 coordinate`);
      try { createPublicKey({ key: { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y }, format: "jwk" }); } catch { fail(`[${i}] is not a point on the P-256 curve`); }
      // RFC 7638: the required members of an EC key, in lexicographic order, no whitespace.
      return createHash("sha256").update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })).digest("base64url");
    });
    thumbprints.forEach((t, i) => { if (thumbprints.indexOf(t) !== i) fail(`[${i}] is the same key as [${thumbprints.indexOf(t)}]`); });
    const threshold = given || "3";
    if (!/^[1-9][0-9]{0,2}$/.test(threshold) || Number(threshold) < 2 || Number(threshold) > keys.length)
      fail(`${thresholdOption} must be a whole number from 2 to the ${keys.length} keys, got ${given ? `"${threshold}"` : "3 (the default)"}`);
    process.stdout.write(`${thumbprints.join(",")} ${threshold}`);
  ' -- "$@" || die "$1, $3: see above (node is needed for them)"
}
# $1: the variable, $2: what custodian_pin printed. Thumbprints (base64url) and a threshold (digits)
# need no JSON escaping.
custodian_env_pairs() { printf '["%s", "%s"], ["%s_THRESHOLD", "%s"]' "$1" "${2% *}" "$1" "${2#* }"; }
check_custodian_keys() {
  [[ -n $CUSTODIAN_KEYS ]] || return 0
  local current previous pairs
  current=$(custodian_pin --custodian-keys "$CUSTODIAN_KEYS" --threshold "$CUSTODIAN_THRESHOLD") || exit 1
  pairs=$(custodian_env_pairs KMS_SEALER_CUSTODIANS "$current")
  if [[ -n $PREVIOUS_CUSTODIAN_KEYS ]]; then
    previous=$(custodian_pin --previous-custodian-keys "$PREVIOUS_CUSTODIAN_KEYS" --previous-threshold "$PREVIOUS_CUSTODIAN_THRESHOLD") || exit 1
    # The same keys under another threshold are a change too: their shares recover as before.
    [[ $previous != "$current" ]] \
      || die "--previous-custodian-keys $PREVIOUS_CUSTODIAN_KEYS: the same custodians, in the same order and with the same threshold, as --custodian-keys: that is no change of custodians; leave --previous-custodian-keys out"
    pairs+=", $(custodian_env_pairs KMS_SEALER_CUSTODIANS_PREVIOUS "$previous")"
  fi
  CUSTODIANS_ENV_JSON="[$pairs]"
}

# A pod's init-data: the shipped document with this run's digests in place of its placeholders
# (and, for the sealer, the variables of auto-unseal, of mode 1 and of pinned custodians in place
# of the empty auto_unseal_env, root_key_env and custodians_env, as far as this run sets them; each
# list must be there, once), then the measured policies appended to its [data] table, the
# document's last (append_json_entries): the sealer's gets "tdx-policy.json" and
# "admin-policy.json" (sealer_policies), each function's "sealer-tdx-policy.json"
# (--sealer-tdx-policy). So they are measured, not ConfigMaps the cluster administrator could edit
# (each pod reads them from its init-data file after checking its digest against its own
# MRCONFIGID). Rendered once (render_pod_init_data) and kept in INIT_DATA: its exact bytes matter
# (their SHA-384 is the TD's MRCONFIGID), and only those lines change.
declare -A INIT_DATA=()
render_init_data() {
  [[ -v "INIT_DATA[$1]" ]] || die "internal: the init-data of $1 is not rendered yet"
  printf '%s' "${INIT_DATA[$1]}"
}
# $1: pod. Keeps its document in INIT_DATA (the trailing x keeps $(…) from dropping final newlines).
render_pod_init_data() {
  local document
  if [[ $1 == tee-kms-sealer ]]; then
    document=$(render_lists "$1" | append_json_entries tdx-policy.json "$SEALER_TDX_POLICY_JSON" admin-policy.json "$SEALER_ADMIN_POLICY_JSON" && printf x)
  else
    document=$(render_lists "$1" | append_json_entries sealer-tdx-policy.json "$(<"$SEALER_TDX_POLICY_FILE")" && printf x)
  fi
  INIT_DATA[$1]=${document%x}
}
# $1: pod. Its shipped document with this run's images, and its closed lists filled in: the
# sealer's auto_unseal_env, root_key_env, custodians_env and pccs_env, a function's pccs_env.
render_lists() {
  if [[ $1 == tee-kms-sealer ]]; then
    render_placeholders "$1" | fill_lists "$1" auto_unseal_env "${AUTO_UNSEAL_ENV_JSON:-[]}" root_key_env "$ROOT_KEY_ENV_JSON" \
      custodians_env "$CUSTODIANS_ENV_JSON" pccs_env "$SEALER_PCCS_ENV_JSON"
  else
    render_placeholders "$1" | fill_lists "$1" pccs_env "$FUNCTION_PCCS_ENV_JSON"
  fi
}
# stdin: a document; $1: its pod; then LIST JSON pairs: each empty `LIST := []` (there once)
# replaced by the NAME=VALUE entries of JSON, [[NAME, VALUE], ...], unless that is empty.
fill_lists() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    let text = require("node:fs").readFileSync(0, "utf8");
    const [pod, ...args] = process.argv.slice(1);
    const fail = (why) => { console.error(`the init-data of ${pod} ${why}`); process.exit(1); };
    for (let i = 0; i < args.length; i += 2) {
      const [list, json] = [args[i], args[i + 1]];
      const parts = text.split(`\n${list} := []\n`);
      if (parts.length !== 2) fail(`has no empty ${list}`);
      const pairs = JSON.parse(json);
      if (pairs.length > 0) text = parts.join(`\n${list} := ${JSON.stringify(pairs.map(([n, v]) => `${n}=${v}`))}\n`);
    }
    process.stdout.write(text);
  ' "$@"
}
# stdin: a document; stdout: the same with each KEY JSON pair of the arguments appended as a
# ''' string holding the JSON on one line: compact, every ' written \u0027, so that no value can
# end the string early, and DEL written \u007f (TOML refuses it in a literal string;
# JSON.stringify escapes the other control characters TOML refuses). Still the same JSON.
append_json_entries() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    let text = require("node:fs").readFileSync(0, "utf8");
    const pairs = process.argv.slice(1);
    // Appended entries belong to the last table: it must be [data], and the document end there.
    if (!text.endsWith("\n") || !text.startsWith("\n[data]\n", text.lastIndexOf("\n["))) {
      console.error("an init-data document does not end with its [data] table");
      process.exit(1);
    }
    for (let i = 0; i < pairs.length; i += 2) {
      const json = JSON.stringify(JSON.parse(pairs[i + 1])).replaceAll("\u0027", "\\u0027").replaceAll("\u007f", "\\u007f");
      text += `"${pairs[i]}" = \u0027\u0027\u0027\n${json}\n\u0027\u0027\u0027\n`;
    }
    process.stdout.write(text);
  ' "$@"
}
render_placeholders() {
  sed -e "s|\"tee-kms@$PLACEHOLDER_DIGEST\"|\"$TEE_KMS_POD_IMAGE\"|" \
    -e "s|\"queue-proxy@$PLACEHOLDER_DIGEST\"|\"$QUEUE_PROXY_IMAGE\"|" "$INIT_DATA_DIR/$1.toml"
}
# MRCONFIGID: SHA-384 of the document, 48 bytes (the TDX field's whole width), 96 hex digits.
init_data_digest() { render_init_data "$1" | openssl dgst -sha384 -r | cut -c1-96; }
# A function's agent policy digest: SHA-384 of the text of its "policy.rego" entry as the project's
# TOML parser returns it (scripts/init-data-entries.ts), in its document with this run's images
# and PCCS (pccs_env). It depends on nothing else, so the sealer's policies can name it before any
# MRCONFIGID exists.
agent_policy_digest() {
  local entries digest
  entries=$(render_lists "$1" | node "$REPO_ROOT/scripts/run-built.mjs" dist/scripts/init-data-entries.js - 2>&1) \
    || die "cannot read the entries of $1's init-data: ${entries##*$'\n'}"
  digest=$(sed -n 's/^policy\.rego \([0-9a-f]\{96\}\)$/\1/p' <<<"$entries")
  [[ $digest =~ ^[0-9a-f]{96}$ ]] || die "$1's init-data has no policy.rego entry (npm run generate:manifests)"
  printf '%s\n' "$digest"
}
# The sealer's two measured policies, compact JSON, one a line: --tdx-policy with "agentPolicies"
# added (every function's agent policy digest, in FUNCTION_PODS order), and --admin-policy with
# each Service name replaced by "policy.rego:<its agent policy digest>" (keys and lists in order).
# Both files are checked above. $@: pod=digest, one per function.
sealer_policies() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const fs = require("node:fs");
    const [tdxFile, adminFile, ...pairs] = process.argv.slice(1);
    const digests = new Map(pairs.map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]));
    const tdx = JSON.parse(fs.readFileSync(tdxFile, "utf8"));
    tdx.agentPolicies = [...digests.values()];
    const admin = JSON.parse(fs.readFileSync(adminFile, "utf8"));
    for (const op of Object.keys(admin)) admin[op] = admin[op].map((name) => `policy.rego:${digests.get(name)}`);
    console.log(JSON.stringify(tdx));
    console.log(JSON.stringify(admin));
  ' "$TDX_POLICY_FILE" "$ADMIN_POLICY_FILE" "$@"
}
# The MRCONFIGIDs --sealer-tdx-policy names (checked above), normalized, one a line.
sealer_policy_ids() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const sealer = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    for (const id of sealer.mrConfigId ?? []) console.log(String(id).toLowerCase().replace(/^0x/, ""));
  ' "$SEALER_TDX_POLICY_FILE"
}
# Refuses a policy whose mrConfigId is not exactly the MRCONFIGIDs of the given pods: missing ones
# would refuse those TDs; any other (the all-zero one of a TD without init-data, whose Kata agent
# allows kubectl exec) would admit a TD this install does not run.
# $1: option, $2: file, $3: its ids (one a line), $4: what to add to the refusal of another id,
# $5...: pods.
check_mr_config_ids() {
  local option=$1 file=$2 listed=$3 hint=$4 pod id zero
  shift 4
  zero=$(printf '0%.0s' {1..96})
  [[ -n $listed ]] \
    || die "$option $file has no mrConfigId: it would admit a TD with any init-data, or none (then Kata's agent allows kubectl exec into it). Set \"mrConfigId\" to the MRCONFIGIDs printed above: $(for pod in "$@"; do printf '%s ' "${MR_CONFIG_ID[$pod]}"; done)(docs/attestation.md)"
  while read -r id; do
    [[ $id != "$zero" ]] || die "$option $file: mrConfigId lists the all-zero MRCONFIGID, a TD without init-data (no agent policy: kubectl exec reads it); list the MRCONFIGIDs printed above instead"
    for pod in "$@"; do [[ $id != "${MR_CONFIG_ID[$pod]}" ]] || continue 2; done
    die "$option $file: mrConfigId $id is not the init-data digest of any pod this install runs there ($*): it would admit a TD with other init-data. Use the MRCONFIGIDs printed above$hint"
  done <<<"$listed"
  for pod in "$@"; do
    grep -qx "${MR_CONFIG_ID[$pod]}" <<<"$listed" \
      || die "$option $file: mrConfigId does not list ${MR_CONFIG_ID[$pod]}, the MRCONFIGID of $pod's init-data with these images: that TD would be refused. Use the MRCONFIGIDs printed above"
  done
}

declare -A MR_CONFIG_ID=()
declare -A AGENT_POLICY=()
FUNCTION_PODS=("${TD_PODS[@]:0:${#TD_PODS[@]}-1}")
TDX_POLICY_SUMMARY=""
SEALER_TDX_POLICY_SUMMARY=""
ADMIN_POLICY_SUMMARY=""
if [[ $TEE_MODE == tdx ]]; then
  [[ -n $TDX_POLICY_FILE ]] \
    || die "--tee tdx needs --tdx-policy FILE: the TDX reference values (mrTd, rtmr0-2) the sealer accepts; without them it refuses every TD. Take them from a quote of your TD with: npm run --silent verify-quote -- <quote> (docs/attestation.md)"
  [[ -f $TDX_POLICY_FILE && -r $TDX_POLICY_FILE ]] || die "--tdx-policy: cannot read $TDX_POLICY_FILE"
  command -v node >/dev/null 2>&1 || die "node (>= 20.19) is needed to check --tdx-policy with the sealer's own checks"
  # Reference values only: which TDs the sealer admits is install.sh's to say. It adds the
  # functions' agent policy digests (agentPolicies), and the sealer its own MRCONFIGID; mrConfigId
  # cannot name the functions (their documents carry --sealer-tdx-policy, which names the sealer's
  # MRCONFIGID, which covers this policy), and initData would refuse the sealer's replicas, which
  # attest without init-data. Before the loader, which does not know agentPolicies. (Not JSON:
  # the loader says so.)
  # shellcheck disable=SC2016 # JavaScript, not shell
  for field in $(node -e '
    let policy;
    try { policy = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); } catch { process.exit(0); }
    if (typeof policy === "object" && policy !== null) console.log(["mrConfigId", "initData", "agentPolicies"].filter((f) => Object.hasOwn(policy, f)).join(" "));
  ' "$TDX_POLICY_FILE"); do
    die "--tdx-policy $TDX_POLICY_FILE: remove $field: install.sh admits the functions by their agent policies (it adds agentPolicies, each function's policy.rego digest) and the sealer adds its own MRCONFIGID itself$([[ $field != initData ]] || echo "; its replicas, which attest without init-data, would be refused") (docs/attestation.md)"
  done
  TDX_POLICY_SUMMARY=$(check_tdx_policy "$TDX_POLICY_FILE" --tdx-policy) || exit 1
  # MRCONFIGID is what the host wrote at TD creation; it means the init-data was checked only in a
  # guest whose firmware configuration, kernel and initrd (RTMR0-2) are the genuine ones.
  # shellcheck disable=SC2016 # JavaScript, not shell
  for field in $(node -e '
    const policy = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(["rtmr0", "rtmr1", "rtmr2"].filter((f) => !Object.hasOwn(policy, f)).join(" "));
  ' "$TDX_POLICY_FILE"); do
    die "--tdx-policy $TDX_POLICY_FILE: pin $field: rtmr0, rtmr1 and rtmr2 measure the firmware configuration, kernel and initrd, the guest that checks a TD's init-data; without them a TD the host boots with a kernel of its own under a genuine MRCONFIGID would pass. Take them from a quote with: npm run --silent verify-quote -- <quote> (docs/attestation.md)"
  done
  # The loader saw no mrConfigId: the sealer admits its own, and the functions by agentPolicies.
  admitted="mrConfigId the sealer's own, agentPolicies ${#FUNCTION_PODS[@]} (the functions', added by install.sh)"
  TDX_POLICY_SUMMARY=${TDX_POLICY_SUMMARY/mrConfigId any/$admitted}
  [[ -n $SEALER_TDX_POLICY_FILE ]] \
    || die "--tee tdx needs --sealer-tdx-policy FILE: the TDX reference values (mrTd, rtmr0-2, mrConfigId) of the sealer's own TD, which the functions check before they trust it; without them every function refuses the sealer. Take them from a quote of the sealer's TD with: npm run --silent verify-quote -- <quote> (docs/attestation.md)"
  [[ -f $SEALER_TDX_POLICY_FILE && -r $SEALER_TDX_POLICY_FILE ]] || die "--sealer-tdx-policy: cannot read $SEALER_TDX_POLICY_FILE"
  # No wider than --tdx-policy: the sealer admits only functions whose policy for it admits no TD
  # its own refuses (a TD the host made with the sealer's MRCONFIGID in another guest, say).
  SEALER_TDX_POLICY_SUMMARY=$(check_tdx_policy "$SEALER_TDX_POLICY_FILE" --sealer-tdx-policy --within "$TDX_POLICY_FILE") || exit 1
  [[ -n $ADMIN_POLICY_FILE ]] \
    || die "--tee tdx needs --admin-policy FILE: which functions (their Service names) may rotate, verify, recover and seal, JSON {\"rotate\": [\"rotate-root-key\"], \"verify\": [...], \"recover\": [...], \"seal\": [...]}; without it nobody can (docs/sealer-protocol.md, docs/attestation.md)"
  [[ -f $ADMIN_POLICY_FILE && -r $ADMIN_POLICY_FILE ]] || die "--admin-policy: cannot read $ADMIN_POLICY_FILE"
  ADMIN_POLICY_SUMMARY=$(check_admin_policy "$ADMIN_POLICY_FILE" "${FUNCTION_PODS[@]}") || exit 1
  PCCS_URL=${PCCS_URL:-$INTEL_PCS_URL}
  # https only: the collateral is signed, but over plain HTTP an on-path attacker could replay an
  # older, still-valid CRL and hide a recent revocation. Quoted into YAML below: no quotes, no spaces.
  [[ $PCCS_URL =~ ^https://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?$ ]] \
    || die "--pccs-url must be an https:// base URL such as $INTEL_PCS_URL or https://pccs.example:8081, got '$PCCS_URL'"
  while [[ $PCCS_URL == */ ]]; do PCCS_URL=${PCCS_URL%/}; done
  check_pccs
  check_auto_unseal
  check_root_key_env
  # In the Shamir mode the first rotate takes no token and its body names the custodians whose keys
  # the shares are encrypted to: unpinned, whoever reaches it first (the cluster administrator
  # through a port-forward, or the ingress, which can also rewrite the operator's request) chooses
  # them and reads every share, and so the root key. Pinned in the sealer's measured init-data, a
  # rotate naming other keys is refused, the first and every later one (docs/custodians.md).
  [[ $ROOT_KEY_MODE == secret || -n $CUSTODIAN_KEYS ]] \
    || die "--tee tdx in the Shamir mode needs --custodian-keys FILE: the custodians' public keys (tee-kms custodian keygen), in share order, which every rotation must encrypt its shares to; without them whoever reaches the first rotate first, which takes no token (the cluster administrator, or the ingress on the way), chooses the custodians and reads every share (docs/custodians.md)"
  check_custodian_keys
  # Each TD pod's identity, from its init-data with this run's images.
  [[ -n $QUEUE_PROXY_IMAGE ]] \
    || die "--tee tdx needs --queue-proxy-image REF@sha256:<digest>: Knative's queue-proxy runs in every function's TD, beside its attestation agent, so it is part of their trusted code, and their agent policy admits it by digest. Take the digest from the serving-core.yaml of the Knative Serving release installed, after checking the release's signature, not from the cluster's config-deployment, which the cluster administrator can edit (docs/deploy-knative.md, \"The queue-proxy image\")"
  command -v openssl >/dev/null 2>&1 || die "openssl is required"
  TEE_KMS_POD_IMAGE=$(pod_image_ref "$IMAGE")
  for pod in "${TD_PODS[@]}"; do
    [[ -f $INIT_DATA_DIR/$pod.toml ]] || die "no init-data for $pod: $INIT_DATA_DIR/$pod.toml is missing (npm run generate:manifests)"
  done
  # In this order, each from what comes before it: the functions' agent policy digests (the images
  # only), the sealer's document with its two policies, which name those digests, and so its
  # MRCONFIGID, which --sealer-tdx-policy must name; then each function's document with
  # --sealer-tdx-policy, and so the functions' MRCONFIGIDs.
  agent_policies=()
  for pod in "${FUNCTION_PODS[@]}"; do
    AGENT_POLICY[$pod]=$(agent_policy_digest "$pod")
    agent_policies+=("$pod=${AGENT_POLICY[$pod]}")
    log "agent policy $pod: ${AGENT_POLICY[$pod]}"
  done
  sealer_policies_json=$(sealer_policies "${agent_policies[@]}") || die "cannot read --tdx-policy and --admin-policy"
  { read -r SEALER_TDX_POLICY_JSON && read -r SEALER_ADMIN_POLICY_JSON; } <<<"$sealer_policies_json"
  render_pod_init_data tee-kms-sealer
  MR_CONFIG_ID[tee-kms-sealer]=$(init_data_digest tee-kms-sealer)
  log "MRCONFIGID tee-kms-sealer: ${MR_CONFIG_ID[tee-kms-sealer]}"
  # The functions admit only this sealer: its MRCONFIGID covers --tdx-policy and --admin-policy.
  check_mr_config_ids --sealer-tdx-policy "$SEALER_TDX_POLICY_FILE" "$(sealer_policy_ids)" "" tee-kms-sealer
  for pod in "${FUNCTION_PODS[@]}"; do
    render_pod_init_data "$pod"
    MR_CONFIG_ID[$pod]=$(init_data_digest "$pod")
    log "MRCONFIGID $pod: ${MR_CONFIG_ID[$pod]}"
  done
  log "the functions' MRCONFIGIDs cover --sealer-tdx-policy: they change with it (and with the images), so clients that pin them need the new ones"
else
  [[ -z $TDX_POLICY_FILE ]] || die "--tdx-policy is for --tee tdx (the dev sealer accepts only sample evidence)"
  [[ -z $PCCS_URL ]] || die "--pccs-url is for --tee tdx"
  [[ -z $PCCS_CA ]] || die "--pccs-ca is for --tee tdx"
  [[ -z $SEALER_TDX_POLICY_FILE ]] || die "--sealer-tdx-policy is for --tee tdx (the dev functions accept the sealer's sample evidence)"
  [[ -z $ADMIN_POLICY_FILE ]] || die "--admin-policy is for --tee tdx (the dev component grants its development identity every operation)"
  [[ -z $QUEUE_PROXY_IMAGE ]] || die "--queue-proxy-image is for --tee tdx (it pins queue-proxy in the functions' agent policy)"
fi

for tool in kubectl openssl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# kubectl's own kustomize renders the manifests: components and label-selected patches need
# kustomize v5 (kubectl 1.27 or later). Debian 12's kubectl 1.20 cannot read them.
KUBECTL_MIN_MINOR=27
kubectl_minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/^ *"minor": *"\([0-9]*\).*/\1/p' | head -n 1 || true)
[[ $kubectl_minor =~ ^[0-9]+$ && $kubectl_minor -ge $KUBECTL_MIN_MINOR ]] \
  || die "kubectl 1.${kubectl_minor:-?} is too old to render knative/ (kustomize components): install kubectl 1.$KUBECTL_MIN_MINOR or later (https://kubernetes.io/docs/tasks/tools/)"

# ---------------------------------------------------------------------------------------------
# the generated kustomization (references the overlay; adds namespace, images, parameters)

if [[ -n $WORK_DIR ]]; then
  mkdir -p "$WORK_DIR"
  WORK_DIR="$(cd -P "$WORK_DIR" && pwd)"
  KEEP_WORK_DIR=1
else
  WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tee-kms-install.XXXXXX")"
  KEEP_WORK_DIR=0
fi
SECRET_TMP=""
cleanup() {
  [[ $KEEP_WORK_DIR == 1 ]] || rm -rf "$WORK_DIR"
  [[ -z $SECRET_TMP ]] || rm -rf "$SECRET_TMP"
}
trap cleanup EXIT

# Relative paths: kustomize loads resources from outside the kustomization root, files only inside.
relpath() { python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$1" "$2" 2>/dev/null || realpath --relative-to="$2" "$1"; }
# The base, a function layout (generated from functions/catalog.ts) and the TEE component: what
# overlays/<tee> holds, with the layout this run chose.
BASE_REL="$(relpath "$SCRIPT_DIR/base" "$WORK_DIR")"
LAYOUT_REL="$(relpath "$SCRIPT_DIR/functions/$LAYOUT" "$WORK_DIR")"
COMPONENT_REL="$(relpath "$SCRIPT_DIR/components/$TEE_MODE" "$WORK_DIR")"
# Mode 1 only: mounts the Secret tee-kms-root-key into the sealer as a file (never an environment
# variable). Its volume is not optional, so it is added only when this run creates that Secret: a
# missing Secret then stops the sealer's pod instead of starting it in the Shamir mode.
ROOT_KEY_COMPONENT_REL="$(relpath "$SCRIPT_DIR/components/root-key-secret" "$WORK_DIR")"

# image reference -> kustomize images entry (name, newName, newTag | digest)
image_entry() {
  local logical=$1 ref=$2 name digest="" tag=""
  name=$ref
  if [[ $name == *@* ]]; then digest=${name#*@}; name=${name%%@*}; fi
  if [[ ${name##*/} == *:* ]]; then tag=${name##*:}; name=${name%:*}; fi
  printf '  - name: %s\n    newName: %s\n' "$logical" "$name"
  if [[ -n $digest ]]; then
    printf '    digest: %s\n' "$digest"
  else
    printf '    newTag: "%s"\n' "${tag:-latest}"
  fi
}


# Each TD pod's init-data (tdx): the document Kata hands the TD, in the pod annotation
# io.katacontainers.config.hypervisor.cc_init_data as base64 of its gzip, which makes the TD's
# MRCONFIGID its SHA-384; and the same bytes as a file, mounted by the tdx component from the
# configmap tee-kms-init-data (made by this kustomization's configMapGenerator) and named by
# KMS_INIT_DATA_FILE, which a function sends with its evidence and from which it reads its policy
# for the sealer, or for the sealer by KMS_SEALER_INIT_DATA_FILE, from which it reads its TDX and
# admin policies: each once it has checked the file's digest against its own MRCONFIGID (an edited
# ConfigMap stops the pod, never admits a TD).
# Writes the documents to $WORK_DIR/init-data and, to stdout, the kustomization's patches and
# generator for them.
write_init_data() {
  local pod kind group version env_name
  rm -rf "$WORK_DIR/init-data"
  mkdir -p "$WORK_DIR/init-data"
  for pod in "${TD_PODS[@]}"; do
    render_init_data "$pod" >"$WORK_DIR/init-data/$pod.toml"
    if [[ $pod == tee-kms-sealer ]]; then
      group=apps version=v1 kind=StatefulSet env_name=KMS_SEALER_INIT_DATA_FILE
    else
      group=serving.knative.dev version=v1 kind=Service env_name=KMS_INIT_DATA_FILE
    fi
    printf '  - target:\n      group: %s\n      version: %s\n      kind: %s\n      name: %s\n' "$group" "$version" "$kind" "$pod"
    printf '    patch: |-\n'
    printf '      - op: add\n        path: /spec/template/metadata/annotations/io.katacontainers.config.hypervisor.cc_init_data\n'
    printf '        value: "%s"\n' "$(gzip -9 -n -c "$WORK_DIR/init-data/$pod.toml" | base64 | tr -d '\n')"
    if [[ -n $env_name ]]; then
      printf '      - op: add\n        path: /spec/template/spec/containers/0/env/-\n'
      printf '        value: { name: %s, value: /var/run/tee-kms/init-data/%s.toml }\n' "$env_name" "$pod"
    fi
    if [[ $pod == tee-kms-sealer && ( -n $AUTO_UNSEAL_ENV_JSON || $CUSTODIANS_ENV_JSON != '[]' ) ]]; then
      # Exactly the values its init-data lists (JSON strings are YAML): auto-unseal's, the pinned custodians.
      # shellcheck disable=SC2016 # JavaScript, not shell
      node -e '
        for (const [name, value] of process.argv.slice(1).flatMap((json) => JSON.parse(json))) {
          console.log("      - op: add\n        path: /spec/template/spec/containers/0/env/-");
          console.log(`        value: ${JSON.stringify({ name, value })}`);
        }
      ' "${AUTO_UNSEAL_ENV_JSON:-[]}" "$CUSTODIANS_ENV_JSON"
    fi
  done
  printf 'configMapGenerator:\n  - name: tee-kms-init-data\n    options:\n      disableNameSuffixHash: true\n'
  printf '      labels: { app.kubernetes.io/part-of: tee-kms }\n    files:\n'
  for pod in "${TD_PODS[@]}"; do printf '      - init-data/%s.toml\n' "$pod"; done
}

# What the functions and the sealer read at start: a change rolls them (a new revision / rollout).
CONFIG_INPUTS="bucket=$BUCKET pccs=$PCCS_URL"

write_kustomization() {
  local function_rev=$1 sealer_rev=$2
  {
    printf '# Generated by knative/install.sh; do not edit (re-run the script instead).\n'
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
    printf 'namespace: %s\n' "$NS"
    printf 'resources:\n  - %s\n  - %s\n' "$BASE_REL" "$LAYOUT_REL"
    printf 'components:\n  - %s\n' "$COMPONENT_REL"
    if [[ -n $DOMAIN ]]; then printf '  - single-host\n'; fi
    if [[ $ROOT_KEY_MODE == secret ]]; then printf '  - %s\n' "$ROOT_KEY_COMPONENT_REL"; fi
    printf 'images:\n'
    image_entry tee-kms "$IMAGE"
    [[ -z $MINIO_IMAGE ]] || image_entry quay.io/minio/minio "$MINIO_IMAGE"
    [[ -z $MC_IMAGE ]] || image_entry quay.io/minio/mc "$MC_IMAGE"
    printf 'patches:\n'
    printf '  - patch: |-\n'
    printf '      apiVersion: v1\n      kind: ConfigMap\n      metadata:\n        name: tee-kms-config\n'
    printf '      data:\n        KMS_S3_BUCKET: "%s"\n' "$BUCKET"
    # The functions fetch collateral for the sealer's quotes where the sealer does for theirs:
    # exactly the values their init-data lists (JSON strings are YAML).
    # shellcheck disable=SC2016 # JavaScript, not shell
    [[ $TEE_MODE != tdx ]] || node -e '
      for (const [name, value] of JSON.parse(process.argv[1])) console.log(`        ${name}: ${JSON.stringify(value)}`);
    ' "$FUNCTION_PCCS_ENV_JSON"
    # A rotation's t and n as the sealer pins them (which refuses any other): its custodians'
    # threshold, and one share per custodian.
    # shellcheck disable=SC2016 # JavaScript, not shell
    [[ $CUSTODIANS_ENV_JSON == '[]' ]] || node -e '
      const pin = Object.fromEntries(JSON.parse(process.argv[1]));
      console.log(`        KMS_SHARES: "${pin.KMS_SEALER_CUSTODIANS.split(",").length}"`);
      console.log(`        KMS_THRESHOLD: "${pin.KMS_SEALER_CUSTODIANS_THRESHOLD}"`);
    ' "$CUSTODIANS_ENV_JSON"
    printf '  - patch: |-\n'
    printf '      apiVersion: batch/v1\n      kind: Job\n      metadata:\n        name: tee-kms-minio-bucket\n'
    printf '      spec:\n        template:\n          spec:\n            containers:\n              - name: mc\n'
    printf '                env:\n                  - name: KMS_S3_NONCURRENT_VERSION_DAYS\n                    value: "%s"\n' "$NONCURRENT_VERSION_DAYS"
    if [[ -n $STORAGE_SIZE || -n $STORAGE_CLASS ]]; then
      printf '  - target:\n      group: apps\n      version: v1\n      kind: StatefulSet\n      name: tee-kms-minio\n'
      printf '    patch: |-\n'
      if [[ -n $STORAGE_SIZE ]]; then
        printf '      - op: replace\n        path: /spec/volumeClaimTemplates/0/spec/resources/requests/storage\n        value: "%s"\n' "$STORAGE_SIZE"
      fi
      if [[ -n $STORAGE_CLASS ]]; then
        printf '      - op: add\n        path: /spec/volumeClaimTemplates/0/spec/storageClassName\n        value: "%s"\n' "$STORAGE_CLASS"
      fi
    fi
    printf '  - target:\n      group: serving.knative.dev\n      version: v1\n      kind: Service\n'
    printf '      labelSelector: app.kubernetes.io/component=function\n'
    printf '    patch: |-\n'
    printf '      - op: add\n        path: /spec/template/metadata/annotations/tee-kms~1config-revision\n        value: "%s"\n' "$function_rev"
    printf '  - target:\n      group: apps\n      version: v1\n      kind: StatefulSet\n      name: tee-kms-sealer\n'
    printf '    patch: |-\n'
    printf '      - op: add\n        path: /spec/template/metadata/annotations/tee-kms~1config-revision\n        value: "%s"\n' "$sealer_rev"
    if [[ $TEE_MODE == tdx ]]; then
      # The sealer's collateral source (the overlay's KMS_SEALER_PCCS_URL, merged by name), exactly
      # as its init-data lists it.
      printf '  - patch: |-\n'
      printf '      apiVersion: apps/v1\n      kind: StatefulSet\n      metadata:\n        name: tee-kms-sealer\n'
      printf '      spec:\n        template:\n          spec:\n            containers:\n              - name: sealer\n'
      printf '                env:\n'
      # shellcheck disable=SC2016 # JavaScript, not shell
      node -e '
        for (const [name, value] of JSON.parse(process.argv[1])) console.log(`                  - name: ${name}\n                    value: ${JSON.stringify(value)}`);
      ' "$SEALER_PCCS_ENV_JSON"
      write_init_data
    fi
  } >"$WORK_DIR/kustomization.yaml"

  rm -rf "$WORK_DIR/single-host"
  if [[ -n $DOMAIN ]]; then
    mkdir -p "$WORK_DIR/single-host"
    cp "$SCRIPT_DIR/base/routing/single-host/"*.yaml "$WORK_DIR/single-host/"
    local tls_secret=${PUBLIC_TLS_SECRET:-tee-kms-public-tls}
    local f
    for f in gateway.yaml httproute.yaml; do
      sed -e "s/REPLACE_WITH_GATEWAY_CLASS/$GATEWAY_CLASS/" \
        -e "s/kms\\.example\\.com/$DOMAIN/" \
        -e "s/\\.tee-kms\\.svc\\.cluster\\.local/.$NS.svc.$CLUSTER_DOMAIN/" \
        -e "s/name: tee-kms-public-tls/name: $tls_secret/" \
        "$WORK_DIR/single-host/$f" >"$WORK_DIR/single-host/$f.tmp"
      mv "$WORK_DIR/single-host/$f.tmp" "$WORK_DIR/single-host/$f"
    done
  fi
}

if [[ $TEE_MODE == tdx ]]; then
  log "TDX policy $TDX_POLICY_FILE: $TDX_POLICY_SUMMARY; DCAP collateral from $PCCS_URL"
  log "the functions' policy for the sealer's TD $SEALER_TDX_POLICY_FILE: $SEALER_TDX_POLICY_SUMMARY"
  log "admin policy $ADMIN_POLICY_FILE: functions granted $ADMIN_POLICY_SUMMARY"
fi

if [[ $DRY_RUN == 1 ]]; then
  write_kustomization dry-run dry-run
  log "generated kustomization: $WORK_DIR/kustomization.yaml"
  [[ $TEE_MODE != tdx ]] || log "no policy is a ConfigMap: $TDX_POLICY_FILE and $ADMIN_POLICY_FILE are in the sealer's init-data, $SEALER_TDX_POLICY_FILE in each function's (tee-kms-init-data, and the cc_init_data annotations)"
  kubectl kustomize "$WORK_DIR"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# cluster checks: everything that can be known before the cluster changes. Nothing below this
# block runs unless every check passes; each refusal says what to do.

CERT_MANAGER_NS=${KMS_CERT_MANAGER_NAMESPACE:-cert-manager}
KNATIVE_MIN_MINOR=15
PREFLIGHT=()
refuse() { PREFLIGHT+=("$*"); }

kubectl version --request-timeout=10s >/dev/null 2>&1 || die "kubectl cannot reach the cluster (check your kubeconfig context)"

has_crd() { kubectl get crd "$1" >/dev/null 2>&1; }
has_crd services.serving.knative.dev \
  || refuse "Knative Serving is not installed (CRD services.serving.knative.dev is missing): https://knative.dev/docs/install/"
for crd in certificates.cert-manager.io clusterissuers.cert-manager.io; do
  has_crd "$crd" || refuse "cert-manager is not installed (CRD $crd is missing): HTTPS for the function URLs needs it (https://cert-manager.io/docs/installation/)"
done
knative_version=$(kubectl get namespace knative-serving -o jsonpath='{.metadata.labels.app\.kubernetes\.io/version}' 2>/dev/null || true)
if [[ $knative_version =~ ^v?1\.([0-9]+) ]] && ((BASH_REMATCH[1] < KNATIVE_MIN_MINOR)); then
  refuse "Knative Serving $knative_version has no built-in cert-manager integration for external-domain-tls: upgrade to 1.$KNATIVE_MIN_MINOR or later"
fi
for configmap in config-network config-certmanager config-domain config-features; do
  kubectl get configmap "$configmap" -n knative-serving >/dev/null 2>&1 || refuse "knative-serving/$configmap is missing: is Knative Serving installed in namespace knative-serving?"
done
if [[ $TEE_MODE == tdx ]]; then
  kubectl get runtimeclass kata-qemu-tdx >/dev/null 2>&1 \
    || refuse "RuntimeClass kata-qemu-tdx is missing: install Confidential Containers (Kata with QEMU-TDX) on your TDX nodes (docs/deploy-knative.md, Prerequisites)"
  # The functions' agent policy admits the queue-proxy image of --queue-proxy-image only: the one
  # Knative runs must be that one, or no function's TD would start. The cluster's answer is the
  # administrator's to write, so a mismatch is settled against Knative's release, never by
  # adopting it: queue-proxy shares the TD's loopback with the attestation agent.
  queue_sidecar_image=$(kubectl get configmap config-deployment -n knative-serving -o jsonpath='{.data.queue-sidecar-image}' 2>/dev/null || true)
  [[ $queue_sidecar_image == "$QUEUE_PROXY_IMAGE" ]] \
    || refuse "knative-serving/config-deployment runs queue-proxy ${queue_sidecar_image:-(unset)}, not --queue-proxy-image $QUEUE_PROXY_IMAGE: the functions' agent policy would refuse it. Check both against the serving-core.yaml of the Knative Serving release installed${knative_version:+ ($knative_version, as the cluster reports it)}, after checking the release's signature, before changing either: queue-proxy runs inside every function's TD, and an image that is not the release's could fetch the root key (docs/deploy-knative.md, \"The queue-proxy image\")"
fi
if [[ -n $DOMAIN ]]; then
  has_crd httproutes.gateway.networking.k8s.io || refuse "--domain needs the Gateway API CRDs and an implementation (GatewayClass $GATEWAY_CLASS)"
  kubectl get service kourier-internal -n kourier-system >/dev/null 2>&1 \
    || refuse "--domain routes through Kourier's internal gateway (kourier-system/kourier-internal), which is missing: use Kourier as Knative's networking layer"
fi

# The Knative domain of the function URLs: example.com (Knative's default) resolves nowhere.
# shellcheck disable=SC2016 # a Go template, not a shell expansion
knative_domains=$(kubectl get configmap config-domain -n knative-serving -o go-template='{{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}' 2>/dev/null | grep -v '^_' || true)
if [[ -z $knative_domains || $knative_domains == example.com ]]; then
  refuse "Knative has no real domain (config-domain): set one, e.g. on kind: kubectl patch configmap config-domain -n knative-serving --type merge -p '{\"data\":{\"127.0.0.1.sslip.io\":\"\"}}' (docs/deploy-knative.md)"
fi

# HTTPS for the function URLs: Knative's external-domain-tls, certificates from a cert-manager
# ClusterIssuer named in config-certmanager. Both are cluster-wide: an issuer someone else set is kept.
external_tls=$(kubectl get configmap config-network -n knative-serving -o jsonpath='{.data.external-domain-tls}' 2>/dev/null || true)
issuer_ref=$(kubectl get configmap config-certmanager -n knative-serving -o jsonpath='{.data.issuerRef}' 2>/dev/null || true)
issuer_name=$(printf '%s\n' "$issuer_ref" | sed -n 's/^ *name: *//p' | head -n 1)
if [[ -z $TLS_ISSUER ]]; then
  if [[ $external_tls == Enabled && -n $issuer_name ]]; then TLS_ISSUER=cluster; else TLS_ISSUER=self-signed; fi
fi
case $TLS_ISSUER in
  self-signed) PUBLIC_ISSUER=tee-kms-ca ;;
  acme) PUBLIC_ISSUER=tee-kms-acme ;;
  cluster) PUBLIC_ISSUER=$issuer_name ;;
esac
if [[ $TLS_ISSUER == cluster ]]; then
  [[ $external_tls == Enabled && -n $issuer_name ]] \
    || refuse "--tls cluster: knative-serving/config-network has no external-domain-tls: Enabled, or config-certmanager no issuerRef; use --tls self-signed or --tls acme"
elif [[ -n $issuer_name && $issuer_name != "$PUBLIC_ISSUER" ]]; then
  refuse "knative-serving/config-certmanager already names the issuer $issuer_name for every Knative Service in the cluster: keep it with --tls cluster"
fi
if [[ $SKIP_KNATIVE_CONFIG == 1 ]]; then
  [[ $external_tls == Enabled && $issuer_name == "$PUBLIC_ISSUER" ]] \
    || refuse "--skip-knative-config: Knative's external-domain-tls is not set up with issuer $PUBLIC_ISSUER; configure it (docs/deploy-knative.md, HTTPS) or drop --skip-knative-config"
  if [[ $TEE_MODE == tdx ]]; then
    [[ $(kubectl get configmap config-features -n knative-serving -o jsonpath='{.data.kubernetes\.podspec-runtimeclassname}' 2>/dev/null || true) == enabled ]] \
      || refuse "--skip-knative-config: config-features must have kubernetes.podspec-runtimeclassname: enabled for --tee tdx"
  fi
fi
if [[ $TLS_ISSUER != cluster ]]; then
  kubectl get namespace "$CERT_MANAGER_NS" >/dev/null 2>&1 \
    || refuse "cert-manager's namespace $CERT_MANAGER_NS is missing (its cluster resource namespace, where a ClusterIssuer's secrets live): set KMS_CERT_MANAGER_NAMESPACE"
fi

# RBAC: every write this run will make, asked of the API server before any is made.
can() {
  local verb=$1 resource=$2 namespace=${3:-}
  if [[ -n $namespace ]]; then
    kubectl auth can-i "$verb" "$resource" -n "$namespace" --quiet >/dev/null 2>&1 || refuse "RBAC: you cannot $verb $resource in namespace $namespace"
  else
    kubectl auth can-i "$verb" "$resource" --quiet >/dev/null 2>&1 || refuse "RBAC: you cannot $verb $resource (cluster-wide)"
  fi
}
kubectl get namespace "$NS" >/dev/null 2>&1 || can create namespaces
for resource in secrets configmaps services services.serving.knative.dev statefulsets.apps jobs.batch networkpolicies.networking.k8s.io poddisruptionbudgets.policy; do
  can create "$resource" "$NS"
  can patch "$resource" "$NS"
done
can delete jobs.batch "$NS"
# An install from before the replicas ran the sealer as a Deployment: this run replaces it.
if kubectl get deployment tee-kms-sealer -n "$NS" >/dev/null 2>&1; then
  can delete deployments.apps "$NS"
fi
if [[ -n $DOMAIN ]]; then
  for resource in gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io; do
    can create "$resource" "$NS"
    can patch "$resource" "$NS"
  done
  can create referencegrants.gateway.networking.k8s.io kourier-system
  can patch referencegrants.gateway.networking.k8s.io kourier-system
fi
if [[ $SKIP_KNATIVE_CONFIG == 0 ]]; then
  [[ $TLS_ISSUER == cluster ]] || can patch configmaps/config-certmanager knative-serving
  can patch configmaps/config-network knative-serving
  [[ $TEE_MODE != tdx ]] || can patch configmaps/config-features knative-serving
  if [[ $INTERNAL_TLS == 1 ]]; then
    can patch deployments.apps/activator knative-serving
    can patch deployments.apps/controller knative-serving
  fi
fi
if [[ $TLS_ISSUER != cluster ]]; then
  can create clusterissuers.cert-manager.io
  can patch clusterissuers.cert-manager.io
fi
if [[ $TLS_ISSUER == self-signed ]]; then
  can create certificates.cert-manager.io "$CERT_MANAGER_NS"
  can patch certificates.cert-manager.io "$CERT_MANAGER_NS"
  can get secrets/tee-kms-ca "$CERT_MANAGER_NS"
fi

# The manifests this run will apply, rendered now by this kubectl (revision stamps come later).
write_kustomization preflight preflight
render_error=$(kubectl kustomize "$WORK_DIR" 2>&1 >/dev/null) \
  || refuse "kubectl 1.$kubectl_minor cannot render the manifests: ${render_error##*$'\n'}"

if ((${#PREFLIGHT[@]} > 0)); then
  printf 'tee-kms install: error: %s\n' "${PREFLIGHT[@]}" >&2
  die "nothing was changed: fix the above and run again"
fi
log "checks passed: kubectl 1.$kubectl_minor, Knative Serving ${knative_version:-(version unknown)}, cert-manager, HTTPS via ClusterIssuer $PUBLIC_ISSUER ($TLS_ISSUER)$([[ $TEE_MODE == tdx ]] && echo ", RuntimeClass kata-qemu-tdx"), RBAC"

# The volume claim template of a StatefulSet cannot change: keep what is installed.
if kubectl get statefulset tee-kms-minio -n "$NS" >/dev/null 2>&1; then
  installed_size=$(kubectl get statefulset tee-kms-minio -n "$NS" -o jsonpath='{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}')
  installed_class=$(kubectl get statefulset tee-kms-minio -n "$NS" -o jsonpath='{.spec.volumeClaimTemplates[0].spec.storageClassName}')
  if [[ -n $STORAGE_SIZE && $STORAGE_SIZE != "$installed_size" ]]; then
    log "MinIO's volume claim template is immutable: keeping $installed_size (resize the PVC itself if your storage class allows)"
  fi
  STORAGE_SIZE=$installed_size
  STORAGE_CLASS=$installed_class
fi

# ---------------------------------------------------------------------------------------------
# secrets: generated once, kept outside the repository, created in the cluster with kubectl

if [[ -z $SECRETS_DIR ]]; then
  SECRETS_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/tee-kms/$NS"
fi
mkdir -p "$SECRETS_DIR"
chmod 700 "$SECRETS_DIR"
SECRETS_DIR="$(cd -P "$SECRETS_DIR" && pwd)"
case "$SECRETS_DIR/" in
  "$REPO_ROOT"/*) die "--secrets-dir must be outside the repository ($SECRETS_DIR)" ;;
esac
log "secrets are kept in $SECRETS_DIR"

# Writes a generated value once (mode 0600); later runs reuse it.
ensure_generated() {
  local file=$SECRETS_DIR/$1
  shift
  if [[ ! -s $file ]]; then
    (umask 077 && "$@" >"$file.tmp" && mv "$file.tmp" "$file")
  fi
}
random_name() { printf 'kms%s' "$(openssl rand -hex 8)"; }
random_secret() { openssl rand -hex 32; }
random_token() { openssl rand -base64 33 | tr '+/' '-_' | tr -d '=\n'; }
random_key() { openssl rand -base64 32 | tr -d '\n'; }

ensure_generated minio-root-user random_name
ensure_generated minio-root-password random_secret
ensure_generated s3-access-key-id random_name
ensure_generated s3-secret-access-key random_secret
if [[ -n $ADMIN_TOKEN_FILE ]]; then
  (umask 077 && tr -d '\r\n' <"$ADMIN_TOKEN_FILE" >"$SECRETS_DIR/admin-token")
else
  ensure_generated admin-token random_token
fi

if [[ $ROOT_KEY_MODE == secret ]]; then
  if [[ -n $ROOT_KEY_VALUE ]]; then
    (umask 077 && printf '%s' "$ROOT_KEY_VALUE" | tr -d ' \r\n' >"$SECRETS_DIR/root-key")
  elif [[ -n $ROOT_KEY_FILE ]]; then
    (umask 077 && tr -d ' \r\n' <"$ROOT_KEY_FILE" >"$SECRETS_DIR/root-key.new" && mv "$SECRETS_DIR/root-key.new" "$SECRETS_DIR/root-key")
  else
    ensure_generated root-key random_key
  fi
  [[ $(base64 -d <"$SECRETS_DIR/root-key" 2>/dev/null | wc -c) -eq 32 ]] \
    || die "the root key must be base64 of 32 bytes (e.g. openssl rand -base64 32)"
fi

# The installed mode must not change under the data: keys are wrapped under the installed key.
installed_root_key=$(kubectl get secret tee-kms-root-key -n "$NS" -o jsonpath='{.data.rootKey}' 2>/dev/null || true)
if [[ -n $installed_root_key ]]; then
  if [[ $ROOT_KEY_MODE == shares ]]; then
    die "this namespace runs in mode 1 (Secret tee-kms-root-key): pass the same key (--root-key-file), or uninstall with --purge first"
  fi
  if [[ "$(printf '%s' "$installed_root_key" | base64 -d)" != "$(cat "$SECRETS_DIR/root-key")" && $REPLACE_ROOT_KEY != 1 ]]; then
    die "a different root key is installed; every stored key is wrapped under it. Pass the installed key, or --replace-root-key if you really mean to orphan them"
  fi
elif [[ $ROOT_KEY_MODE == secret ]] && { kubectl get statefulset tee-kms-sealer -n "$NS" >/dev/null 2>&1 || kubectl get deployment tee-kms-sealer -n "$NS" >/dev/null 2>&1; }; then
  die "this namespace runs in the Shamir mode (no tee-kms-root-key Secret): it cannot switch to mode 1 in place"
fi

# Internal CA and the certificates of the sealer and MinIO (in-namespace names only).
CA_KEY=$SECRETS_DIR/internal-ca.key
CA_CRT=$SECRETS_DIR/internal-ca.crt
if [[ ! -s $CA_KEY || ! -s $CA_CRT ]] || ! openssl x509 -checkend 2592000 -noout -in "$CA_CRT" >/dev/null 2>&1; then
  log "creating the internal CA"
  (umask 077 && openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$CA_KEY" -out "$CA_CRT" -days 3650 -subj "/CN=tee-kms internal CA ($NS)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null)
  rm -f "$SECRETS_DIR"/sealer.crt "$SECRETS_DIR"/minio.crt
fi
# $1: file name, $2: Service, $3...: further names (DNS SANs). A certificate without one of the
# names (an install from an older version) is issued again.
issue_cert() {
  local name=$1 service=$2 sans present san missing wanted
  shift 2
  sans="DNS:$service,DNS:$service.$NS,DNS:$service.$NS.svc,DNS:$service.$NS.svc.$CLUSTER_DOMAIN,DNS:*.$service.$NS.svc.$CLUSTER_DOMAIN"
  for san in "$@"; do sans+=",DNS:$san"; done
  if [[ -s $SECRETS_DIR/$name.crt && -s $SECRETS_DIR/$name.key ]] \
    && openssl x509 -checkend 2592000 -noout -in "$SECRETS_DIR/$name.crt" >/dev/null 2>&1; then
    present=$(openssl x509 -noout -ext subjectAltName -in "$SECRETS_DIR/$name.crt" 2>/dev/null | tr ',' '\n' | sed 's/^ *//')
    missing=0
    IFS=, read -r -a wanted <<<"$sans"
    for san in "${wanted[@]}"; do grep -qxF "$san" <<<"$present" || missing=1; done
    [[ $missing == 1 ]] || return 0
  fi
  log "issuing the $name certificate"
  (
    umask 077
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$SECRETS_DIR/$name.key" -out "$SECRETS_DIR/$name.csr" -subj "/CN=$service" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$sans" >"$SECRETS_DIR/$name.ext"
    openssl x509 -req -in "$SECRETS_DIR/$name.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" \
      -set_serial "0x$(openssl rand -hex 16)" -days 825 -extfile "$SECRETS_DIR/$name.ext" \
      -out "$SECRETS_DIR/$name.crt" 2>/dev/null
    rm -f "$SECRETS_DIR/$name.csr" "$SECRETS_DIR/$name.ext"
  )
}
# The replicas' stable names (the StatefulSet's headless Service tee-kms-sealer-peers): the
# functions and the peers name each replica; all share this one certificate.
SEALER_PEER_NAMES=()
for ((i = 0; i < SEALER_REPLICAS; i++)); do
  for suffix in "" ".$NS" ".$NS.svc" ".$NS.svc.$CLUSTER_DOMAIN"; do
    SEALER_PEER_NAMES+=("tee-kms-sealer-$i.tee-kms-sealer-peers$suffix")
  done
done
issue_cert sealer tee-kms-sealer "${SEALER_PEER_NAMES[@]}"
issue_cert minio tee-kms-minio

if ! kubectl get namespace "$NS" >/dev/null 2>&1; then
  log "creating namespace $NS"
  kubectl create namespace "$NS" >/dev/null
  kubectl annotate namespace "$NS" tee-kms/created-by=knative-install.sh >/dev/null
fi

label_and_apply() {
  kubectl label --local -f - -o yaml app.kubernetes.io/part-of=tee-kms | kubectl apply -n "$NS" -f - >/dev/null
}
# kubectl create secret generic NAME KEY=FILE...: values come from files, never from arguments.
apply_generic_secret() {
  local name=$1 kv args=()
  shift
  for kv in "$@"; do args+=("--from-file=$kv"); done
  kubectl create secret generic "$name" -n "$NS" "${args[@]}" --dry-run=client -o yaml | label_and_apply
}
apply_tls_secret() {
  kubectl create secret tls "$1" -n "$NS" --cert="$2" --key="$3" --dry-run=client -o yaml | label_and_apply
}

log "creating Secrets in $NS"
apply_generic_secret tee-kms-minio-root "rootUser=$SECRETS_DIR/minio-root-user" "rootPassword=$SECRETS_DIR/minio-root-password"
apply_generic_secret tee-kms-s3-credentials "accessKeyId=$SECRETS_DIR/s3-access-key-id" "secretAccessKey=$SECRETS_DIR/s3-secret-access-key"
apply_generic_secret tee-kms-admin-token "token=$SECRETS_DIR/admin-token"
apply_tls_secret tee-kms-sealer-tls "$SECRETS_DIR/sealer.crt" "$SECRETS_DIR/sealer.key"
apply_tls_secret tee-kms-minio-tls "$SECRETS_DIR/minio.crt" "$SECRETS_DIR/minio.key"
kubectl create configmap tee-kms-internal-ca -n "$NS" --from-file="ca.crt=$CA_CRT" --dry-run=client -o yaml | label_and_apply
if [[ $ROOT_KEY_MODE == secret ]]; then
  apply_generic_secret tee-kms-root-key "rootKey=$SECRETS_DIR/root-key"
fi
if [[ $TEE_MODE == tdx ]]; then
  # The sealer's TDX and admin policies are no ConfigMaps (an administrator could edit those): its
  # init-data carries them. A changed one changes the sealer's MRCONFIGID, and a replica of the old
  # identity does not unseal one of the new as a peer (each grants sealer-peer to its own only).
  installed_sealer_init_data=$(kubectl get configmap tee-kms-init-data -n "$NS" -o jsonpath='{.data.tee-kms-sealer\.toml}' 2>/dev/null || true)
  if [[ -n $installed_sealer_init_data && $installed_sealer_init_data != "$(render_init_data tee-kms-sealer)" ]]; then
    log "the sealer's init-data changed (MRCONFIGID ${MR_CONFIG_ID[tee-kms-sealer]}): its replicas restart one at a time as TDs of that new identity, which the old replicas do not unseal$([[ $ROOT_KEY_MODE == shares ]] && echo ": send $RECOVERY_SHARES to recover-root-key once the first has restarted")"
  fi
  # No ConfigMap tee-kms-sealer-tdx-policy any more: each function's init-data carries
  # --sealer-tdx-policy (uninstall.sh deletes the one earlier installs made).
fi
if [[ -n $DOMAIN && -z $PUBLIC_TLS_SECRET ]]; then
  apply_tls_secret tee-kms-public-tls "$PUBLIC_TLS_CERT" "$PUBLIC_TLS_KEY"
fi

# Revision stamps: a pod reads its Secrets and ConfigMaps at start, so a changed input must roll
# it. Each stamp covers everything its pods read (the image and the TD's init-data too), so that
# comparing it with the installed one says what this run restarts. The sealer's replicas roll one
# at a time (StatefulSet RollingUpdate), each Ready on /readyz before the next: a peer unseals it.
FUNCTION_INPUT_NAMES="the image, the S3 credentials, the admin token, the internal CA, the bucket, tee-kms-config$([[ $TEE_MODE != tdx ]] || echo ", --sealer-tdx-policy, --pccs-url, --pccs-ca, --queue-proxy-image")"
FUNCTION_INPUTS=("$SECRETS_DIR/s3-access-key-id" "$SECRETS_DIR/s3-secret-access-key" "$SECRETS_DIR/admin-token" "$CA_CRT" "$SCRIPT_DIR/base/config.yaml")
# --sealer-tdx-policy is in each function's init-data: their MRCONFIGIDs, stamped here, change with it.
FUNCTION_IDS=""
for pod in "${FUNCTION_PODS[@]}"; do FUNCTION_IDS+="${MR_CONFIG_ID[$pod]:-} "; done
FUNCTION_REV=$(printf '%s image=%s queue-proxy=%s init-data=%s' "$CONFIG_INPUTS" "$IMAGE" "$QUEUE_PROXY_IMAGE" "$FUNCTION_IDS" | cat - "${FUNCTION_INPUTS[@]}" | openssl dgst -sha256 -r | cut -c1-16)
SEALER_INPUT_NAMES="the image, the S3 credentials, the sealer certificate, the internal CA, tee-kms-config$([[ $ROOT_KEY_MODE == shares ]] || echo ", the root key")$([[ $TEE_MODE != tdx ]] || echo ", --tdx-policy, --admin-policy, --pccs-url, --pccs-ca, --auto-unseal-*, --custodian-keys, --threshold, --previous-custodian-keys, --previous-threshold")"
SEALER_INPUTS=("$SECRETS_DIR/s3-access-key-id" "$SECRETS_DIR/s3-secret-access-key" "$SECRETS_DIR/sealer.crt" "$CA_CRT" "$SCRIPT_DIR/base/config.yaml")
[[ $ROOT_KEY_MODE == shares ]] || SEALER_INPUTS+=("$SECRETS_DIR/root-key")
# --tdx-policy and --admin-policy are in the sealer's init-data: its MRCONFIGID, stamped below,
# changes with them (and rolls it).
SEALER_REV=$(printf '%s image=%s init-data=%s' "$CONFIG_INPUTS" "$IMAGE" "${MR_CONFIG_ID[tee-kms-sealer]:-}" | cat - "${SEALER_INPUTS[@]}" | openssl dgst -sha256 -r | cut -c1-16)
write_kustomization "$FUNCTION_REV" "$SEALER_REV"

# What this run restarts, said before anything is applied.
revision_of() {
  kubectl get "$1" -n "$NS" -o jsonpath='{.spec.template.metadata.annotations.tee-kms/config-revision}' 2>/dev/null || true
}
installed_sealer_rev=$(revision_of statefulset/tee-kms-sealer)
if [[ -z $installed_sealer_rev ]]; then
  log "the sealer: $SEALER_REPLICAS replicas are created"
elif [[ $installed_sealer_rev == "$SEALER_REV" ]]; then
  log "the sealer: not restarted (unchanged: $SEALER_INPUT_NAMES)"
else
  log "the sealer: a rolling restart, one replica at a time, each ready (unsealed by a peer) before the next, because one of these changed: $SEALER_INPUT_NAMES"
fi
installed_function_rev=$(kubectl get ksvc -n "$NS" -l app.kubernetes.io/component=function -o jsonpath='{.items[0].spec.template.metadata.annotations.tee-kms/config-revision}' 2>/dev/null || true)
if [[ -z $installed_function_rev ]]; then
  log "the functions: created"
elif [[ $installed_function_rev == "$FUNCTION_REV" ]]; then
  log "the functions: no new revision (unchanged: $FUNCTION_INPUT_NAMES)"
else
  log "the functions: a new Knative revision each (traffic moves once it is ready), because one of these changed: $FUNCTION_INPUT_NAMES"
fi

# ---------------------------------------------------------------------------------------------
# Knative's own configuration (cluster-wide: changed only where tee-kms needs it)

# Merges a patch into a knative-serving ConfigMap; prints "changed" or "unchanged". Always call it
# as an assignment, `outcome=$(knative_patch …)`: then a refusal (RBAC, admission) fails the script
# (set -e with inherit_errexit), where inside [[ … ]] or an `if` it would be mistaken for an answer.
knative_patch() {
  local configmap=$1 before after
  shift
  before=$(kubectl get configmap "$configmap" -n knative-serving -o jsonpath='{.data}')
  kubectl patch configmap "$configmap" -n knative-serving --type merge "$@" >/dev/null
  after=$(kubectl get configmap "$configmap" -n knative-serving -o jsonpath='{.data}')
  if [[ $before == "$after" ]]; then echo unchanged; else echo changed; fi
}

# The ClusterIssuer of the function URLs' certificates (not for --tls cluster: the cluster's own).
# self-signed: a CA made by cert-manager (its certificate is saved for clients as public-ca.crt);
# acme: Let's Encrypt (or --acme-server) with HTTP-01, answered through Knative's own ingress.
# A ClusterIssuer named $1 whose spec (indented two spaces) comes on stdin.
cluster_issuer() {
  printf 'apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: %s\n' "$1"
  printf '  labels: { app.kubernetes.io/part-of: tee-kms }\nspec:\n'
  cat
}
apply_public_issuer() {
  case $TLS_ISSUER in
    self-signed)
      {
        cluster_issuer tee-kms-selfsigned <<<'  selfSigned: {}'
        cat <<YAML
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: tee-kms-ca
  namespace: $CERT_MANAGER_NS
  labels: { app.kubernetes.io/part-of: tee-kms }
spec:
  isCA: true
  commonName: tee-kms public CA
  secretName: tee-kms-ca
  duration: 87600h
  privateKey: { algorithm: ECDSA, size: 256 }
  issuerRef: { group: cert-manager.io, kind: ClusterIssuer, name: tee-kms-selfsigned }
---
YAML
        cluster_issuer tee-kms-ca <<<'  ca: { secretName: tee-kms-ca }'
      } | kubectl apply -f - >/dev/null
      kubectl wait --for=condition=Ready certificate/tee-kms-ca -n "$CERT_MANAGER_NS" --timeout=2m >/dev/null
      (umask 077 && kubectl get secret tee-kms-ca -n "$CERT_MANAGER_NS" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$SECRETS_DIR/public-ca.crt")
      log "HTTPS: ClusterIssuer tee-kms-ca; clients trust $SECRETS_DIR/public-ca.crt (curl --cacert)"
      ;;
    acme)
      cluster_issuer tee-kms-acme <<YAML | kubectl apply -f - >/dev/null
  acme:
    server: "$ACME_SERVER"
    email: "$ACME_EMAIL"
    privateKeySecretRef: { name: tee-kms-acme-account }
    solvers:
      - http01:
          ingress: {}
YAML
      log "HTTPS: ClusterIssuer tee-kms-acme ($ACME_SERVER, HTTP-01): the Knative domain must resolve to your ingress"
      ;;
  esac
}

if [[ $SKIP_KNATIVE_CONFIG == 1 ]]; then
  log "not touching knative-serving's ConfigMaps (--skip-knative-config; checked above): see docs/deploy-knative.md"
else
  if [[ $TLS_ISSUER != cluster ]]; then
    apply_public_issuer
    printf -v issuer_patch '{"data":{"issuerRef":"kind: ClusterIssuer\\nname: %s\\n"}}' "$PUBLIC_ISSUER"
    outcome=$(knative_patch config-certmanager -p "$issuer_patch")
    [[ $outcome == unchanged ]] || log "knative-serving/config-certmanager: issuerRef is ClusterIssuer $PUBLIC_ISSUER"
  fi
  outcome=$(knative_patch config-network -p '{"data":{"external-domain-tls":"Enabled"}}')
  [[ $outcome == unchanged ]] || log "knative-serving/config-network: external-domain-tls enabled (the function URLs are https://)"
  if [[ $TEE_MODE == tdx ]]; then
    outcome=$(knative_patch config-features --patch-file "$SCRIPT_DIR/components/tdx/knative-serving/config-features.yaml")
    [[ $outcome == unchanged ]] || log "knative-serving/config-features: kubernetes.podspec-runtimeclassname enabled"
  fi
  if [[ $INTERNAL_TLS == 1 ]]; then
    ingress_class=$(kubectl get configmap config-network -n knative-serving -o jsonpath='{.data.ingress-class}' 2>/dev/null || true)
    [[ $ingress_class == *kourier* ]] \
      || log "warning: Knative's system-internal-tls works with Kourier only; ingress-class is '${ingress_class:-unset}'"
    kubectl get configmap config-certmanager -n knative-serving -o jsonpath='{.data.systemInternalIssuerRef}' 2>/dev/null | grep -q . \
      || log "warning: config-certmanager has no systemInternalIssuerRef: install cert-manager and Knative's cert-manager integration first"
    outcome=$(knative_patch config-network --patch-file "$SCRIPT_DIR/components/tdx/knative-serving/config-network.yaml")
    if [[ $outcome == changed ]]; then
      log "knative-serving/config-network: system-internal-tls enabled; restarting activator and controller"
      kubectl rollout restart deployment/activator deployment/controller -n knative-serving >/dev/null
    fi
  fi
fi

if [[ -n $DOMAIN ]]; then
  sed -e "s/^  name: tee-kms-to-kourier-internal$/  name: tee-kms-$NS/" \
    -e "s/^      namespace: tee-kms$/      namespace: $NS/" \
    "$SCRIPT_DIR/base/routing/kourier-system/reference-grant.yaml" | kubectl apply -f - >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# apply

# Jobs are immutable: the bucket Job runs again on every install (it is idempotent).
# An install from before the replicas ran one sealer as a Deployment: the StatefulSet replaces it.
if kubectl get deployment tee-kms-sealer -n "$NS" >/dev/null 2>&1; then
  log "the sealer Deployment (one replica) is replaced by the StatefulSet of $SEALER_REPLICAS$([[ $ROOT_KEY_MODE == shares ]] && echo ": they start sealed; send $RECOVERY_SHARES to recover-root-key once, and they unseal each other from then on")"
  kubectl delete deployment tee-kms-sealer -n "$NS" --ignore-not-found >/dev/null
fi
kubectl delete job tee-kms-minio-bucket -n "$NS" --ignore-not-found >/dev/null
log "applying the $TEE_MODE overlay to namespace $NS"
kubectl apply -k "$WORK_DIR"

if [[ $WAIT == 1 ]]; then
  log "waiting for MinIO, the bucket, the sealer and the functions (up to $WAIT_TIMEOUT each)"
  kubectl rollout status statefulset/tee-kms-minio -n "$NS" --timeout="$WAIT_TIMEOUT"
  kubectl wait --for=condition=complete job/tee-kms-minio-bucket -n "$NS" --timeout="$WAIT_TIMEOUT"
  # One replica at a time, each Ready (/readyz: unsealed by a peer, or its shares needed) first.
  kubectl rollout status statefulset/tee-kms-sealer -n "$NS" --timeout="$WAIT_TIMEOUT"
  kubectl wait --for=condition=Ready ksvc -l app.kubernetes.io/part-of=tee-kms -n "$NS" --timeout="$WAIT_TIMEOUT"
fi

# The URLs Knative gives: https:// for public Services once their certificate is issued;
# cluster-local ones (rotate, verify) are reachable inside the cluster only.
CURL_CA=""
[[ $TLS_ISSUER != self-signed ]] || CURL_CA="--cacert $SECRETS_DIR/public-ca.crt "
PUBLIC_URL=""
printf '\n%-20s %s\n' SERVICE URL >&2
while read -r name url; do
  [[ -n $name ]] || continue
  case $url in
    https://*)
      printf '%-20s %s\n' "$name" "$url" >&2
      [[ $name != welcome && $name != tee-kms ]] || PUBLIC_URL=$url
      ;;
    http://*.svc.*) printf '%-20s %s\n' "$name" "inside the cluster only ($url)" >&2 ;;
    *) printf '%-20s %s\n' "$name" "${url:-no URL yet}: not HTTPS yet (kubectl get ksvc $name -n $NS; kubectl get certificates -n $NS)" >&2 ;;
  esac
done < <(kubectl get ksvc -n "$NS" -l app.kubernetes.io/part-of=tee-kms -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.url}{"\n"}{end}')
cat >&2 <<DONE

tee-kms is installed in namespace $NS ($TEE_MODE, $([[ $SINGLE_SERVICE == 1 ]] && echo "one Service" || echo "one Service per function"), root key: $([[ $ROOT_KEY_MODE == secret ]] && echo "mode 1, Secret tee-kms-root-key" || echo "Shamir shares")).
Secrets generated for it are in $SECRETS_DIR (keep them; the admin token is admin-token).
DONE
if [[ -n $PUBLIC_URL ]]; then
  printf 'Try it (BigDL KMS flow: docs/deploy-knative.md, Quickstart):\n  curl %s%s/\n' "$CURL_CA" "$PUBLIC_URL" >&2
fi
[[ -z $DOMAIN ]] || printf 'BigDL KMS paths also answer at https://%s/ once DNS points at the Gateway tee-kms.\n' "$DOMAIN" >&2
if [[ $ROOT_KEY_MODE == shares ]]; then
  cat >&2 <<NEXT
The sealer starts uninitialized (the functions report it: GET <seal-status URL>/rootKey/status).
rotate-root-key is cluster-local; create the root key inside the TD and receive its shares once,
through a kubectl port-forward (the tunnel runs inside your API server connection):
  kubectl port-forward -n kourier-system svc/kourier-internal 8081:80 &
  curl -X POST -H "Host: rotate-root-key.$NS.svc.$CLUSTER_DOMAIN" http://127.0.0.1:8081/rootKey/rotate
After any sealer restart, send $RECOVERY_SHARES to recover-root-key (PUT /rootKey/recover).
NEXT
fi
if [[ $TEE_MODE == dev ]]; then
  log "dev mode: no TEE, the sample attester proves nothing. Never store real keys in this deployment."
else
  log "the sealer accepts its own replicas and the functions' TDs (by their agent policies) that match $TDX_POLICY_FILE ($TDX_POLICY_SUMMARY), as its init-data carries it; the functions accept only the sealer $SEALER_TDX_POLICY_FILE names, as theirs carry it. The TDs' agent policy denies exec and log streaming: kubectl exec and kubectl logs get nothing out of them"
fi
