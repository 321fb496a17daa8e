# shellcheck shell=bash
# Builds the local control plane's binaries from their Go modules, pinned in
# hack/versions.env, into a cache outside the repository. Sourced by hack/cluster.
#
# Each tool gets its own wrapper module so that their k8s.io versions never clash.

# Each tool's binaries live under a folder named by its pinned version, so a version bump
# rebuilds only that tool and never mixes binaries of two versions.
tool_bin_dir() { echo "$CACHE_DIR/$1/bin"; }

# go_wrapper DIR: starts a wrapper go.mod in DIR; the caller appends require/tool lines.
go_wrapper() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<GOMOD
module clouddeck.local/controlplane/$(basename "$dir")

go 1.26.0
GOMOD
}

log_build() { printf '  build  %s\n' "$*" >&2; }

# The staging modules k8s.io/kubernetes replaces with ./staging paths; a
# dependent module must point each at its published v0.Y.Z release instead.
k8s_replace_lines() {
  local mod_file staging_version
  mod_file=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  staging_version="v0.${K8S_VERSION#v1.}"
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$mod_file" |
    while read -r name; do echo "replace $name => $name $staging_version"; done
}

build_k8s() {
  local out dir minor
  out=$(tool_bin_dir "kubernetes-$K8S_VERSION")
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=0 cmd
  for cmd in "${cmds[@]}"; do [[ -x $out/$cmd ]] || missing=1; done
  ((missing)) || return 0
  log_build "${cmds[*]} $K8S_VERSION (first build: about 12 minutes on 2 cores, then cached)"
  dir=$CACHE_DIR/kubernetes-$K8S_VERSION/src
  go_wrapper "$dir"
  mkdir -p "$out"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    k8s_replace_lines
    for cmd in "${cmds[@]}"; do echo "tool k8s.io/kubernetes/cmd/$cmd"; done
  } >>"$dir/go.mod"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "$ldflags" -o "$out/" \
    "${cmds[@]/#/k8s.io/kubernetes/cmd/}")
}

build_etcd() {
  local out dir
  out=$(tool_bin_dir "etcd-$ETCD_VERSION")
  [[ -x $out/etcd ]] && return
  log_build "etcd $ETCD_VERSION"
  dir=$CACHE_DIR/etcd-$ETCD_VERSION/src
  go_wrapper "$dir"
  mkdir -p "$out"
  printf 'require go.etcd.io/etcd/server/v3 %s\ntool go.etcd.io/etcd/server/v3\n' "$ETCD_VERSION" >>"$dir/go.mod"
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  local out dir
  out=$(tool_bin_dir "kwok-$KWOK_VERSION")
  [[ -x $out/kwok ]] && return
  log_build "kwok $KWOK_VERSION"
  dir=$CACHE_DIR/kwok-$KWOK_VERSION/src
  go_wrapper "$dir"
  mkdir -p "$out"
  printf 'require sigs.k8s.io/kwok %s\ntool sigs.k8s.io/kwok/cmd/kwok\n' "$KWOK_VERSION" >>"$dir/go.mod"
  (cd "$dir" && go mod tidy && go build -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)
}

build_helm() {
  local out dir minor
  out=$(tool_bin_dir "helm-$HELM_VERSION")
  [[ -x $out/helm ]] && return
  log_build "helm $HELM_VERSION"
  dir=$CACHE_DIR/helm-$HELM_VERSION/src
  go_wrapper "$dir"
  mkdir -p "$out"
  printf 'require helm.sh/helm/v3 %s\ntool helm.sh/helm/v3/cmd/helm\n' "$HELM_VERSION" >>"$dir/go.mod"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" -o "$out/helm" helm.sh/helm/v3/cmd/helm)
}

# Programs of our own, hack/NAME/main.go, each a few lines on one library: cached by the
# library's version and the program's hash, so an edit rebuilds it.
#   kstatus: sigs.k8s.io/cli-utils' kstatus library; the e2e tests judge CloudDeck's
#            conditions by what Flux and cli-utils appliers compute.
#   image:   go-containerregistry; assembles the real node's images from local files.
#   certmanager: cert-manager's controllers (issuers, Certificates, ACME) on its public
#            packages; its own controller command is a module the proxy does not serve.
#   acmesolver: cert-manager's HTTP-01 solver (its image cannot be pulled; its command
#            is another unserved module), put in an image by hack/lib/certmanager.sh.
own_tool() { echo "$1-$2-$(sha256sum "$ROOT/hack/$1/main.go" | cut -c1-12)"; }
kstatus_tool() { own_tool kstatus "$CLI_UTILS_VERSION"; }
image_tool() { own_tool image "$GO_CONTAINERREGISTRY_VERSION"; }
gitserver_tool() { own_tool gitserver stdlib; }
certmanager_tool() { own_tool certmanager "$CERT_MANAGER_VERSION"; }
acmesolver_tool() { own_tool acmesolver "$CERT_MANAGER_VERSION"; }

# build_own_tool NAME MODULE VERSION: hack/NAME/main.go against MODULE@VERSION, or
# against the standard library alone when MODULE is empty (VERSION then only names it).
build_own_tool() {
  local name=$1 module=$2 version=$3 out dir
  out=$(tool_bin_dir "$(own_tool "$name" "$version")")
  [[ -x $out/$name ]] && return
  log_build "$name ($module $version)"
  dir=$CACHE_DIR/$(own_tool "$name" "$version")/src
  go_wrapper "$dir"
  mkdir -p "$out"
  cp "$ROOT/hack/$name/main.go" "$dir/main.go"
  [[ -z $module ]] || printf 'require %s %s\n' "$module" "$version" >>"$dir/go.mod"
  (cd "$dir" && go mod tidy && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name" .)
}

build_kstatus() { build_own_tool kstatus sigs.k8s.io/cli-utils "$CLI_UTILS_VERSION"; }
build_image_tool() { build_own_tool image github.com/google/go-containerregistry "$GO_CONTAINERREGISTRY_VERSION"; }
build_gitserver() { build_own_tool gitserver "" stdlib; }
build_certmanager() { build_own_tool certmanager github.com/cert-manager/cert-manager "$CERT_MANAGER_VERSION"; }
build_acmesolver() { build_own_tool acmesolver github.com/cert-manager/cert-manager "$CERT_MANAGER_VERSION"; }


# The real node's container runtime. containerd's module has no replace lines, so plain
# `go install` builds it; CGO_ENABLED=0 avoids the btrfs headers it would otherwise need.
build_containerd() {
  local out pkg=github.com/containerd/containerd/v2
  out=$(tool_bin_dir "containerd-$CONTAINERD_VERSION")
  [[ -x $out/containerd && -x $out/containerd-shim-runc-v2 && -x $out/ctr ]] && return
  log_build "containerd $CONTAINERD_VERSION"
  mkdir -p "$out"
  GOBIN=$out CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION" \
    "$pkg/cmd/containerd@$CONTAINERD_VERSION" "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$pkg/cmd/ctr@$CONTAINERD_VERSION"
}

# runc with cgo and seccomp (Debian's libseccomp-dev, installed by hack/node).
build_runc() {
  local out
  out=$(tool_bin_dir "runc-$RUNC_VERSION")
  [[ -x $out/runc ]] && return
  log_build "runc $RUNC_VERSION"
  mkdir -p "$out"
  GOBIN=$out CGO_ENABLED=1 go install -trimpath -tags seccomp \
    -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
}

# go_install_static TOOL BIN PACKAGE@VERSION: a command of a served module without replace
# lines, static, into TOOL's bin directory as BIN.
go_install_static() {
  local tool=$1 bin=$2 package=$3 out
  out=$(tool_bin_dir "$tool")
  [[ -x $out/$bin ]] && return
  log_build "$bin (${package#*@} of ${package%@*})"
  mkdir -p "$out"
  GOBIN=$out CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$package"
}

# The local registry (distribution).
build_registry() {
  go_install_static "distribution-$DISTRIBUTION_VERSION" registry \
    "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"
}

# CoreDNS: its main package is the module's root.
build_coredns() {
  go_install_static "coredns-$COREDNS_VERSION" coredns "github.com/coredns/coredns@$COREDNS_VERSION"
}

# Pebble, the ACME server the e2e tests run.
build_pebble() {
  go_install_static "pebble-$PEBBLE_VERSION" pebble \
    "github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION"
}

# rootlesskit.
build_rootlesskit() {
  go_install_static "rootlesskit-$ROOTLESSKIT_VERSION" rootlesskit \
    "github.com/rootless-containers/rootlesskit/v2/cmd/rootlesskit@$ROOTLESSKIT_VERSION"
}

# BuildKit's go.mod has exclude lines, which `go install pkg@version` refuses: it is built
# inside a copy of its own module instead, where they apply.
build_buildkit() {
  local out src
  out=$(tool_bin_dir "buildkit-$BUILDKIT_VERSION")
  [[ -x $out/buildkitd && -x $out/buildctl && -f $out/buildctl-daemonless.sh ]] && return
  log_build "buildkitd, buildctl $BUILDKIT_VERSION"
  src=$CACHE_DIR/buildkit-$BUILDKIT_VERSION/src
  rm -rf "$src" && mkdir -p "$(dirname "$src")" "$out"
  cp -r "$(go_module_dir github.com/moby/buildkit "$BUILDKIT_VERSION")" "$src"
  chmod -R u+w "$src"
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -o "$out/" \
    -ldflags "-s -w -X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" \
    ./cmd/buildkitd ./cmd/buildctl)
  install -m 0755 "$src/examples/buildctl-daemonless/buildctl-daemonless.sh" "$out/"
  rm -rf "$src"
}

# Source directory of a module in the Go module cache (downloading it if needed).
go_module_dir() {
  go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)",/\1/p'
}

build_all() {
  # Traefik's first build spends about half its time downloading modules: run it beside
  # the others (Kubernetes' compile is CPU-bound), with its output in a log of its own.
  local traefik_pid='' traefik_log=$CACHE_DIR/traefik-build.log
  if real_node_enabled && [[ ! -x $(tool_bin_dir "$(traefik_tool)")/traefik ]]; then
    mkdir -p "$CACHE_DIR"
    log_build "traefik $TRAEFIK_VERSION in the background (log: $traefik_log)"
    build_traefik >"$traefik_log" 2>&1 &
    traefik_pid=$!
  fi
  build_etcd
  build_kwok
  build_k8s
  build_helm
  build_kstatus
  build_containerd
  build_runc
  build_registry
  build_coredns
  build_image_tool
  build_gitserver
  build_certmanager
  build_acmesolver
  build_pebble
  build_rootlesskit
  build_buildkit
  if [[ -n $traefik_pid ]] && ! wait "$traefik_pid"; then
    tail -n 30 "$traefik_log" >&2
    die "building traefik failed (whole log: $traefik_log)"
  fi
}
