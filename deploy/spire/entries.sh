#!/usr/bin/env bash
# The SPIRE registration entries of clusterspiffeid-*.yaml, for clusters
# without spire-controller-manager: `spire-server entry create` with the
# Kubernetes workload attestor's selectors.
#
#   TRUST_DOMAIN=example.org CLUSTER=prod deploy/spire/entries.sh
#   DRY_RUN=1 deploy/spire/entries.sh          # print the commands only
#
# SPIRE_SERVER is how to run the server CLI; the default execs into the
# server pod of the SPIRE Helm chart. LOADER_NAMESPACE / LOADER_SA name the
# inference workload (one entry per workload: without the controller manager
# there is no label-based template, so each loader is registered explicitly).
set -euo pipefail

TRUST_DOMAIN="${TRUST_DOMAIN:-example.org}"
CLUSTER="${CLUSTER:-demo-cluster}"
KBS_NAMESPACE="${KBS_NAMESPACE:-cml-system}"
LOADER_NAMESPACE="${LOADER_NAMESPACE:-inference}"
LOADER_SA="${LOADER_SA:-vllm-llama-3-8b}"
SPIRE_SERVER="${SPIRE_SERVER:-kubectl -n spire-server exec -i spire-server-0 -c spire-server -- /opt/spire/bin/spire-server}"

td="spiffe://$TRUST_DOMAIN"
# Every agent in the cluster, as one node alias: workload entries below name
# it as their parent, so a workload can get its SVID on any node.
nodes="$td/k8s-cluster/$CLUSTER/nodes"

run() {
	if [[ -n "${DRY_RUN:-}" ]]; then
		printf '%s' "$SPIRE_SERVER"
		printf ' %q' "$@"
		printf '\n'
	else
		# shellcheck disable=SC2086 # SPIRE_SERVER is a command line on purpose.
		$SPIRE_SERVER "$@"
	fi
}

# Node alias: agents attested with k8s_psat in this cluster.
run entry create -node \
	-spiffeID "$nodes" \
	-selector "k8s_psat:cluster:$CLUSTER"

# The key broker: namespace, ServiceAccount and component label.
run entry create \
	-parentID "$nodes" \
	-spiffeID "$td/ns/$KBS_NAMESPACE/sa/kbs" \
	-selector "k8s:ns:$KBS_NAMESPACE" \
	-selector "k8s:sa:kbs" \
	-selector "k8s:pod-label:app.kubernetes.io/component:key-broker" \
	-dns "kbs.$KBS_NAMESPACE.svc"

# The admin toolbox (kbsctl).
run entry create \
	-parentID "$nodes" \
	-spiffeID "$td/ns/$KBS_NAMESPACE/sa/kbs-admin" \
	-selector "k8s:ns:$KBS_NAMESPACE" \
	-selector "k8s:sa:kbs-admin" \
	-selector "k8s:pod-label:cml-project.io/kbs-admin:true" \
	-x509SVIDTTL 3600

# One inference workload's loader.
run entry create \
	-parentID "$nodes" \
	-spiffeID "$td/ns/$LOADER_NAMESPACE/sa/$LOADER_SA" \
	-selector "k8s:ns:$LOADER_NAMESPACE" \
	-selector "k8s:sa:$LOADER_SA" \
	-selector "k8s:pod-label:cml-project.io/loader:true" \
	-x509SVIDTTL 3600
