# shellcheck shell=bash
# cert-manager on the local cluster: its controllers for issuers and Certificates
# (hack/certmanager, on cert-manager's public packages at CERT_MANAGER_VERSION), run on
# this machine with a client certificate of its own, and a CA ClusterIssuer whose CA the
# tests trust. Sourced by hack/cluster.
#
# The CA is made at every `up` (openssl, 30 days) and kept in the state directory:
#   $STATE/cert-manager/ca.crt   the CA certificate (tests trust it; nothing else does)
# The ClusterIssuer is `clouddeck-local-ca`; its Secret lives in the namespace
# `cert-manager` (cert-manager's cluster resource namespace).

CERT_MANAGER_ISSUER=clouddeck-local-ca
CERT_MANAGER_NAMESPACE=cert-manager

certmanager_issuer_ready() {
  condition_true Ready clusterissuer "$CERT_MANAGER_ISSUER"
}

# What cert-manager's controllers read and write: its own kinds, the Secrets of
# certificates and issuers, Events.
certmanager_rbac() {
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "clouddeck:cert-manager"}
rules:
- apiGroups: [cert-manager.io]
  resources: [certificates, certificates/status, certificates/finalizers, certificaterequests,
    certificaterequests/status, certificaterequests/finalizers, issuers, issuers/status,
    clusterissuers, clusterissuers/status]
  verbs: [get, list, watch, create, update, patch, delete]
- {apiGroups: [""], resources: [secrets], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [""], resources: [events], verbs: [create, patch]}
- {apiGroups: [events.k8s.io], resources: [events], verbs: [create, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "clouddeck:cert-manager"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "clouddeck:cert-manager"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "clouddeck:cert-manager"}
EOF
}

certmanager_up() {
  local dir=$STATE/cert-manager
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 \
    -subj "/CN=clouddeck local issuer CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  node_kubeconfig "$dir/kubeconfig" "/CN=clouddeck:cert-manager"
  certmanager_rbac
  kubectl create namespace "$CERT_MANAGER_NAMESPACE" --dry-run=client -o yaml |
    kubectl apply --server-side -f - >/dev/null
  kubectl create secret tls "$CERT_MANAGER_ISSUER" -n "$CERT_MANAGER_NAMESPACE" \
    --cert "$dir/ca.crt" --key "$dir/ca.key" --dry-run=client -o yaml |
    kubectl apply --server-side -f - >/dev/null
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: $CERT_MANAGER_ISSUER}
spec:
  ca: {secretName: $CERT_MANAGER_ISSUER}
EOF
  start cert-manager -kubeconfig "$dir/kubeconfig" -cluster-resource-namespace "$CERT_MANAGER_NAMESPACE"
  wait_for "ClusterIssuer $CERT_MANAGER_ISSUER to be Ready (cert-manager)" 60 certmanager_issuer_ready
}
