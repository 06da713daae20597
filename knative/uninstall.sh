#!/usr/bin/env bash
# Removes tee-kms from a namespace: the Knative Services, the sealer, MinIO, the bucket Job, the
# NetworkPolicies, the single-host Gateway and route, and the ReferenceGrant in kourier-system.
#
# Kept unless --purge: MinIO's volume claim (the wrapped keys) and the Secrets (in mode 1 the
# root key: without it the wrapped keys are lost for good). --purge deletes them too, and the
# namespace if install.sh created it. Knative's own ConfigMaps (config-features, config-network)
# are cluster-wide and left as they are.
#
#   knative/uninstall.sh [--namespace NS] [--purge] [--yes]
#   environment: KMS_NAMESPACE, KMS_PURGE=1; teeMode (BigDL KMS's parameter) is accepted and ignored
set -euo pipefail

NS=${KMS_NAMESPACE:-tee-kms}
PURGE=${KMS_PURGE:-0}
ASSUME_YES=0

log() { printf 'tee-kms uninstall: %s\n' "$*" >&2; }
die() {
  printf 'tee-kms uninstall: error: %s\n' "$*" >&2
  exit 1
}
usage() {
  cat <<'USAGE'
usage: knative/uninstall.sh [--namespace NS] [--purge] [--yes]
  --namespace NS   KMS_NAMESPACE   default tee-kms
  --purge          KMS_PURGE=1     also delete MinIO's volume claim, the Secrets (the root key in
                                   mode 1!) and the namespace if install.sh created it
  --yes                            do not ask before --purge
USAGE
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --namespace)
      [[ $# -ge 2 && -n $2 ]] || die "--namespace needs a value"
      NS=$2
      shift 2
      ;;
    --purge) PURGE=1; shift ;;
    --yes | -y) ASSUME_YES=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[[ $NS =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--namespace must be a DNS label, got '$NS'"
command -v kubectl >/dev/null 2>&1 || die "kubectl is required"
kubectl get namespace "$NS" >/dev/null 2>&1 || die "namespace $NS does not exist"

if [[ $PURGE == 1 && $ASSUME_YES != 1 ]]; then
  printf 'Delete the stored keys (volume claim) and the Secrets of namespace %s, for good? [y/N] ' "$NS" >&2
  read -r answer || answer=""
  [[ $answer == y || $answer == Y || $answer == yes ]] || die "nothing deleted"
fi

SELECTOR=app.kubernetes.io/part-of=tee-kms
delete_kind() {
  # A kind whose CRD is not installed (Gateway API) is simply absent.
  kubectl delete "$1" -n "$NS" -l "$SELECTOR" --ignore-not-found --wait=true 2>/dev/null || true
}

log "deleting tee-kms from namespace $NS"
delete_kind httproutes.gateway.networking.k8s.io
delete_kind gateways.gateway.networking.k8s.io
delete_kind services.serving.knative.dev
delete_kind domainmappings.serving.knative.dev
delete_kind deployments.apps
delete_kind jobs.batch
delete_kind statefulsets.apps
delete_kind poddisruptionbudgets.policy
delete_kind services
delete_kind networkpolicies.networking.k8s.io
# By label: this also deletes tee-kms-tdx-policy, tee-kms-admin-policy and tee-kms-sealer-tdx-policy,
# which installs made by earlier versions created (install.sh now puts those policies into the
# sealer's and the functions' init-data).
delete_kind configmaps
kubectl delete referencegrants.gateway.networking.k8s.io "tee-kms-$NS" -n kourier-system --ignore-not-found 2>/dev/null || true

if [[ $PURGE == 1 ]]; then
  log "purging: Secrets and MinIO's volume claim"
  delete_kind secrets
  delete_kind persistentvolumeclaims
  if kubectl get namespace "$NS" -o yaml | grep -q 'tee-kms/created-by: knative-install.sh'; then
    log "deleting namespace $NS (created by install.sh)"
    kubectl delete namespace "$NS" --wait=false
  fi
else
  log "kept: MinIO's volume claim and the Secrets (re-run install.sh to come back; --purge removes them)"
fi
log "left as they are: knative-serving's ConfigMaps (cluster-wide, with external-domain-tls), the ClusterIssuers tee-kms-ca / tee-kms-acme and their CA (other namespaces may use them; kubectl get clusterissuers -l app.kubernetes.io/part-of=tee-kms), and the secrets directory install.sh wrote"
