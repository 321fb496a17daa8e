# shellcheck shell=bash
# cert-manager on the local cluster: its controllers for issuers, Certificates and ACME
# (hack/certmanager, on cert-manager's public packages at CERT_MANAGER_VERSION), run on
# this machine with a client certificate of its own, and a CA ClusterIssuer whose CA the
# tests trust. ACME issuers solve HTTP-01 through the Gateway: cert-manager makes an
# HTTPRoute to a solver pod (image $ACMESOLVER_IMAGE, hack/acmesolver) on the real node.
# Sourced by hack/cluster.
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
# certificates and issuers, Events; for HTTP-01 challenges, the solver's pod, Service and
# HTTPRoute (and Ingresses, which its solver looks for to clean up).
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
- apiGroups: [acme.cert-manager.io]
  resources: [orders, orders/status, orders/finalizers, challenges, challenges/status,
    challenges/finalizers]
  verbs: [get, list, watch, create, update, patch, delete]
- {apiGroups: [""], resources: [secrets], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [""], resources: [pods, services], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [gateway.networking.k8s.io], resources: [httproutes], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [networking.k8s.io], resources: [ingresses], verbs: [get, list, watch]}
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
  # Before it asks the ACME server to validate, cert-manager fetches the challenge itself
  # from http://<hostname>/.well-known/acme-challenge/<token>. In a cluster the hostname's
  # DNS points at the gateway; here cert-manager runs on this machine and test hostnames
  # have no DNS, so that request goes to the gateway's HTTP port as to a proxy (which
  # routes it by hostname as for any visitor). Loopback (the apiserver, the ACME server)
  # is never proxied.
  HTTP_PROXY=http://127.0.0.1:$GATEWAY_HTTP_PORT NO_PROXY=127.0.0.1,localhost \
    start cert-manager -kubeconfig "$dir/kubeconfig" -cluster-resource-namespace "$CERT_MANAGER_NAMESPACE" \
    -acme-http01-solver-image "$ACMESOLVER_IMAGE"
  wait_for "ClusterIssuer $CERT_MANAGER_ISSUER to be Ready (cert-manager)" 60 certmanager_issuer_ready
}
