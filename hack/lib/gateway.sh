# shellcheck shell=bash
# The local cluster's Gateway API data plane: Traefik (its Kubernetes Gateway provider),
# built from its Go module and run on this machine, not in a pod, with a client
# certificate of its own. It serves the Gateway `clouddeck` in `clouddeck-system` (the
# operator's default --gateway-name/--gateway-namespace: what a platform team would
# create) on loopback ports only; its backends are pods on the real node, which it reaches
# on the node's bridge. Requests to a hostname are sent to 127.0.0.1 with that Host
# header (curl --resolve); no DNS is involved. Sourced by hack/cluster, with the real node.
#
# Why Traefik: it is the Gateway API implementation that builds from Go modules alone
# (Envoy-based ones need an Envoy binary, which cannot be built here), it passes Gateway
# API's conformance for HTTPRoute with the extended features CloudDeck's routes use
# (redirects, rewrites, header modifiers on rules and on backends, regular-expression
# matches), and its Helm chart is a common choice on clusters CloudDeck targets. It does
# not implement ListenerSet.

GATEWAY_HTTP_PORT=${CLOUDDECK_GATEWAY_HTTP_PORT:-18080}
GATEWAY_HTTPS_PORT=${CLOUDDECK_GATEWAY_HTTPS_PORT:-18443}
# Traefik's own entry point: /ping, for `up` to wait on.
GATEWAY_ADMIN_PORT=${CLOUDDECK_GATEWAY_ADMIN_PORT:-18081}
GATEWAY_CLASS=clouddeck-traefik
GATEWAY_NAME=clouddeck
GATEWAY_NAMESPACE=clouddeck-system

traefik_tool() { echo "traefik-$TRAEFIK_VERSION"; }

# Traefik's go.mod cannot be built as it is published: it replaces a nested module
# (pkg/config/dynamic/ext, left out of the module's zip) by a path, and a fork of
# go-http-auth the module proxy does not serve; and lego's DNS provider registry imports
# six providers whose SDKs the proxy does not serve either. So it is built inside a copy
# of its own module (where its other replace and exclude lines apply), with:
#   - the ext module written here: the open-source build's extensions are empty types;
#   - go-http-auth's upstream release plus hack/gateway/go-http-auth-compat.go (the two
#     functions only the fork has);
#   - a copy of lego in which those six DNS providers answer with an error naming them
#     (ACME by DNS-01 through Traefik itself is not something CloudDeck uses).
build_traefik() {
  local out work src lego auth lego_version provider
  out=$(tool_bin_dir "$(traefik_tool)")
  [[ -x $out/traefik ]] && return
  log_build "traefik $TRAEFIK_VERSION (first build: about 10 minutes on 2 cores, then cached)"
  work=$CACHE_DIR/$(traefik_tool)/work
  src=$work/traefik lego=$work/lego auth=$work/go-http-auth
  rm -rf "$work" && mkdir -p "$work" "$out"
  cp -r "$(go_module_dir github.com/traefik/traefik/v3 "$TRAEFIK_VERSION")" "$src"
  mkdir -p "$src/pkg/config/dynamic/ext"
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' >"$src/pkg/config/dynamic/ext/go.mod"
  cat >"$src/pkg/config/dynamic/ext/ext.go" <<'EOF'
// Package ext: the extension points of Traefik's dynamic configuration, empty in its
// open-source build.
package ext

type HTTP struct{}

type Router struct{}

type RouterIng struct{}

func (RouterIng) ToRouter() Router { return Router{} }
EOF
  cp -r "$(go_module_dir github.com/abbot/go-http-auth v0.4.0)" "$auth"
  chmod -R u+w "$auth"
  printf 'module github.com/abbot/go-http-auth\n\ngo 1.21\n' >"$auth/go.mod"
  cp "$ROOT/hack/gateway/go-http-auth-compat.go" "$auth/"
  lego_version=$(sed -n 's#^[[:space:]]*github.com/go-acme/lego/v5 \(v[^ ]*\)$#\1#p' "$src/go.mod")
  cp -r "$(go_module_dir github.com/go-acme/lego/v5 "$lego_version")" "$lego"
  chmod -R u+w "$src" "$lego"
  for provider in edgedns huaweicloud oraclecloud sakuracloud ucloud yandexcloud; do
    sed -i -e "\#\"github.com/go-acme/lego/v5/providers/dns/$provider\"#d" \
      -e "s#return $provider\.NewDNSProvider()#return nil, fmt.Errorf(\"DNS provider %q is not in this build\", name)#" \
      "$lego/providers/dns/zz_gen_dns_providers.go"
  done
  (cd "$src" &&
    go mod edit -replace github.com/abbot/go-http-auth="$auth" -replace github.com/go-acme/lego/v5="$lego" &&
    CGO_ENABLED=0 go build -mod=mod -trimpath -o "$out/traefik" \
      -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" ./cmd/traefik)
  rm -rf "$work"
}

gateway_ready() {
  condition_true Programmed gateway -n "$GATEWAY_NAMESPACE" "$GATEWAY_NAME"
}

# Traefik's identity: it reads routes, Services, EndpointSlices and Secrets (listeners'
# certificates) everywhere and writes the status of what it serves.
gateway_rbac() {
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "clouddeck:gateway"}
rules:
- {apiGroups: [""], resources: [namespaces, services, secrets, configmaps], verbs: [get, list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses, gateways, httproutes, grpcroutes, tlsroutes, referencegrants, backendtlspolicies]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status, tlsroutes/status, backendtlspolicies/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "clouddeck:gateway"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "clouddeck:gateway"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "clouddeck:gateway"}
EOF
}

# The GatewayClass and the Gateway a platform team would create: one plain-HTTP listener
# that takes routes from every namespace (CloudDeck's tenants).
gateway_objects() {
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: $GATEWAY_CLASS}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: $GATEWAY_NAMESPACE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: $GATEWAY_NAME, namespace: $GATEWAY_NAMESPACE}
spec:
  gatewayClassName: $GATEWAY_CLASS
  listeners:
  - name: http
    protocol: HTTP
    port: $GATEWAY_HTTP_PORT
    allowedRoutes: {namespaces: {from: All}}
EOF
}

gateway_up() {
  real_node_enabled || return 0
  local dir=$STATE/gateway port
  for port in "$GATEWAY_HTTP_PORT" "$GATEWAY_HTTPS_PORT" "$GATEWAY_ADMIN_PORT"; do
    port_in_use "$port" && die "port $port on 127.0.0.1 is taken by another process; stop it or set CLOUDDECK_GATEWAY_*_PORT"
  done
  mkdir -p "$dir"
  node_kubeconfig "$dir/kubeconfig" "/CN=clouddeck:gateway"
  gateway_rbac
  # A Gateway listener is served by the entry point with the same port. Nothing is sent
  # anywhere but to the apiserver and the backends: no version check, no usage report.
  # Request headers whose names alias another's (X_Forwarded_For for X-Forwarded-For) are
  # dropped: CGI backends, like the tests' busybox httpd, would read them as the real one.
  KUBECONFIG=$dir/kubeconfig start gateway \
    --global.checkNewVersion=false --global.sendAnonymousUsage=false \
    --entryPoints.web.address="127.0.0.1:$GATEWAY_HTTP_PORT" \
    --entryPoints.web.http.aliasHeadersStrategy=delete \
    --entryPoints.websecure.address="127.0.0.1:$GATEWAY_HTTPS_PORT" \
    --entryPoints.websecure.http.aliasHeadersStrategy=delete \
    --entryPoints.traefik.address="127.0.0.1:$GATEWAY_ADMIN_PORT" --ping=true \
    --providers.kubernetesGateway=true \
    --providers.kubernetesGateway.statusAddress.ip=127.0.0.1 \
    --log.level=INFO --log.noColor=true --accessLog=true
  wait_for "the gateway (Traefik)" 60 curl -fsS "http://127.0.0.1:$GATEWAY_ADMIN_PORT/ping"
  gateway_objects
  wait_for "Gateway $GATEWAY_NAMESPACE/$GATEWAY_NAME to be Programmed" 60 gateway_ready
}
