# shellcheck shell=bash
# The local cluster's real node, next to the kwok node: a kubelet and containerd with
# runc, so that containers really run. Sourced by hack/cluster.
#
# Everything stays on this machine. The node's address lives on a bridge these functions
# create (kubelet refuses a loopback node IP); pods get addresses on that bridge from the
# CNI bridge plugin. No route, NAT or forwarding is added, so nothing a pod sends can
# leave the machine. `node_down` removes the bridge, the pods' network namespaces and
# mounts, the cgroups and the directories the kubelet and containerd write outside the
# cluster's state directory.
#
# The node is tainted clouddeck.io/real-node=true:NoSchedule: only pods that tolerate
# it (the tests that need a running container) land on it; everything else stays on kwok.

REAL_NODE=${CLOUDDECK_REAL_NODE:-1}
REAL_NODE_NAME=clouddeck-node-0
NODE_BRIDGE=${CLOUDDECK_NODE_BRIDGE:-cdnode0}
NODE_SUBNET_PREFIX=${CLOUDDECK_NODE_SUBNET_PREFIX:-10.213.0}
NODE_IP=$NODE_SUBNET_PREFIX.1
KUBELET_PORT=${CLOUDDECK_KUBELET_PORT:-20250}
KUBELET_HEALTHZ_PORT=${CLOUDDECK_KUBELET_HEALTHZ_PORT:-20248}
KUBE_PROXY_HEALTHZ_PORT=${CLOUDDECK_KUBE_PROXY_HEALTHZ_PORT:-20256}
KUBE_PROXY_METRICS_PORT=${CLOUDDECK_KUBE_PROXY_METRICS_PORT:-20249}
# hack/cluster's Service range, and kwok's pod range: routed onto the node's bridge, where
# nothing answers them, so that a ClusterIP with no real endpoint, or a kwok pod's
# address, never leaves the machine by the default route. (Not a blackhole route: a
# connect() from the node to a ClusterIP is routed before kube-proxy's rewrite, and
# a blackhole would refuse it.)
SERVICE_CIDR=10.96.0.0/16
KWOK_POD_CIDR=10.244.0.0/16
# The cgroup (in every v1 hierarchy) under which the kubelet puts all pods.
NODE_CGROUP=clouddeck
# The local registry, on the node's address so that the node and pods reach it too (a
# pod's 127.0.0.1 is the pod). Images are named by LOCAL_REGISTRY, a name that resolves
# nowhere: containerd maps it to REGISTRY_ADDRESS (hosts.toml), so nothing is ever pulled
# from outside the machine.
REGISTRY_PORT=${CLOUDDECK_REGISTRY_PORT:-5000}
REGISTRY_ADDRESS=$NODE_IP:$REGISTRY_PORT
# The local git host (hack/gitserver): clone and push over HTTP, on the node's address;
# a push creates the repository. http://$GIT_ADDRESS/<path>.git
GIT_PORT=${CLOUDDECK_GIT_PORT:-8418}
GIT_ADDRESS=$NODE_IP:$GIT_PORT
LOCAL_REGISTRY=registry.clouddeck.local
PAUSE_IMAGE=$LOCAL_REGISTRY/pause:3.10.2
BUSYBOX_IMAGE=$LOCAL_REGISTRY/busybox:local
# What CronJob `http` runs run (the operator's --http-call-image): Debian's curl.
CURL_IMAGE=$LOCAL_REGISTRY/curl:local
# cert-manager's HTTP-01 solver pods (hack/acmesolver; hack/lib/certmanager.sh names it).
ACMESOLVER_IMAGE=$LOCAL_REGISTRY/acmesolver:$CERT_MANAGER_VERSION
# The clone step of build Jobs (the operator's --git-image): Debian's git, with busybox.
GIT_IMAGE=$LOCAL_REGISTRY/git:local
# The dockerfile builder of build Jobs (the operator's --buildkit-image): rootless BuildKit.
BUILDKIT_IMAGE=$LOCAL_REGISTRY/buildkit:local
# Written outside the state directory by containerd and the kubelet whatever they are
# told; removed by node_down only if they did not exist before node_up.
NODE_FOREIGN_DIRS=(/run/containerd /var/lib/kubelet /var/lib/cni)

real_node_enabled() { [[ $REAL_NODE == 1 ]]; }

node_dir() { echo "$STATE/node"; }
containerd_socket() { echo "$(node_dir)/containerd.sock"; }
ctr() { "$(tool_bin_dir "containerd-$CONTAINERD_VERSION")/ctr" --address "$(containerd_socket)" -n k8s.io "$@"; }

# Debian packages the node needs: the CNI plugins, libseccomp for runc's seccomp support,
# and busybox-static for the test image.
node_install_packages() {
  local missing=()
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  [[ -f /usr/include/seccomp.h ]] || missing+=(libseccomp-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v socat >/dev/null || missing+=(socat)
  [[ -x /usr/lib/git-core/git-remote-http ]] || missing+=(git)
  [[ -x /usr/bin/newuidmap ]] || missing+=(uidmap)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "the real node needs root, and Debian packages: ${missing[*]} (or CLOUDDECK_REAL_NODE=0)"
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${missing[@]}" >&2
}

node_check_host() {
  [[ $(id -u) -eq 0 ]] || die "the real node needs root (bridge, mounts, cgroups); set CLOUDDECK_REAL_NODE=0 to run without it"
  for tool in ip mount umount; do
    command -v "$tool" >/dev/null || die "$tool is required for the real node"
  done
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then node_reclaim_stale; fi
  if ip -4 addr show | grep -qF " $NODE_SUBNET_PREFIX."; then
    die "addresses in $NODE_SUBNET_PREFIX.0/24 are in use here; set CLOUDDECK_NODE_SUBNET_PREFIX"
  fi
}

# Which cluster's node made the bridge: its state directory, in a file under /run (gone,
# like the bridge, when the machine restarts). node_up writes it before it adds anything
# to the host; node_down removes it last.
node_owner_file() { echo "/run/clouddeck/node-$NODE_BRIDGE"; }

# The bridge exists already. If a cluster made it whose processes are gone (killed with
# the session that started them, say; its interfaces, rules, mounts and cgroups outlive
# them), that cluster's node_down runs now. Anything else is not ours to remove.
node_reclaim_stale() {
  local owner
  owner=$(cat "$(node_owner_file)" 2>/dev/null) ||
    die "interface $NODE_BRIDGE exists already and no local cluster made it; remove it or set CLOUDDECK_NODE_BRIDGE"
  if pgrep -f "^$(k8s_bin kubelet) " >/dev/null || pgrep -f "^$(component_bin containerd) " >/dev/null; then
    die "the real node of the cluster in $owner is running; run hack/cluster down there first"
  fi
  say "removing what the cluster in $owner left on this machine when its processes ended"
  (STATE=$owner && node_down)
}

# What the node's images are made of, built here once and cached: the pause container
# (kubernetes' own pause.c, static) and busybox from Debian's busybox-static.
node_image_inputs() {
  local dir=$CACHE_DIR/node-images k8s_src deb
  mkdir -p "$dir"
  if [[ ! -x $dir/pause ]]; then
    k8s_src=$(go_module_dir k8s.io/kubernetes "$K8S_VERSION")
    log_build "pause (kubernetes $K8S_VERSION build/pause/linux/pause.c)"
    gcc -Os -Wall -static -DVERSION="v3.10.2-clouddeck" -o "$dir/pause.tmp" "$k8s_src/build/pause/linux/pause.c"
    mv "$dir/pause.tmp" "$dir/pause"
  fi
  if [[ ! -x $dir/busybox ]]; then
    log_build "busybox (Debian busybox-static)"
    rm -rf "$dir/busybox-deb" && mkdir -p "$dir/busybox-deb"
    (cd "$dir/busybox-deb" && apt-get download busybox-static >/dev/null 2>&1) ||
      die "apt-get download busybox-static failed"
    deb=$(echo "$dir"/busybox-deb/busybox-static_*.deb)
    dpkg-deb -x "$deb" "$dir/busybox-deb/root"
    mv "$dir/busybox-deb/root/bin/busybox" "$dir/busybox"
    rm -rf "$dir/busybox-deb"
  fi
}

# Assembles the node's images and pushes them to the local registry, which starts empty
# with every `up`. The same inputs give the same digests on every machine.
node_push_images() {
  local dir=$CACHE_DIR/node-images tool applet
  tool=$(tool_bin_dir "$(image_tool)")/image
  "$tool" --tag "$PAUSE_IMAGE" --push "$REGISTRY_ADDRESS/${PAUSE_IMAGE#*/}" \
    --file "$dir/pause=/pause" --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
  local args=(--file "$dir/busybox=/bin/busybox" --dir /tmp)
  local busybox_repo=${BUSYBOX_IMAGE#*/}
  busybox_repo=${busybox_repo%:*}
  for applet in sh cat echo env hostname httpd id ls nc nslookup sleep wget; do
    args+=(--link "/bin/$applet=busybox")
  done
  "$tool" --tag "$BUSYBOX_IMAGE" --push "$REGISTRY_ADDRESS/${BUSYBOX_IMAGE#*/}" "${args[@]}" \
    --cmd '["/bin/sh"]' --env PATH=/bin >/dev/null
  # The same as uid and gid 1000, for pods that set runAsNonRoot and no user (numeric:
  # the image has no /etc/passwd, and BuildKit looks a user without a group up there).
  "$tool" --tag "$BUSYBOX_IMAGE" --push "$REGISTRY_ADDRESS/$busybox_repo:nonroot" "${args[@]}" \
    --cmd '["/bin/sh"]' --env PATH=/bin --user 1000:1000 >/dev/null
  # Debian's git with what `git fetch` over HTTP runs (git-remote-http), the libraries
  # they link, and busybox for the clone script's shell; as uid 1000, the build's user.
  args=(--file "$dir/busybox=/bin/busybox" --dir /tmp --file /usr/bin/git=/usr/bin/git
    --link /usr/lib/git-core/git=/usr/bin/git
    --file /usr/lib/git-core/git-remote-http=/usr/lib/git-core/git-remote-http
    --link /usr/lib/git-core/git-remote-https=git-remote-http --dir /usr/share/git-core/templates)
  for applet in sh cat echo basename; do args+=(--link "/bin/$applet=busybox"); done
  mapfile -t -O "${#args[@]}" args < <(linked_files /usr/bin/git /usr/lib/git-core/git-remote-http)
  "$tool" --tag "$GIT_IMAGE" --push "$REGISTRY_ADDRESS/${GIT_IMAGE#*/}" "${args[@]}" \
    --cmd '["/bin/sh"]' --env PATH=/usr/bin:/bin --user 1000:1000 >/dev/null
  node_push_buildkit_image "$tool"
  # This machine's curl (hack/cluster needs it) with the libraries it links.
  args=(--file /usr/bin/curl=/usr/bin/curl --dir /tmp)
  mapfile -t -O "${#args[@]}" args < <(linked_files /usr/bin/curl)
  "$tool" --tag "$CURL_IMAGE" --push "$REGISTRY_ADDRESS/${CURL_IMAGE#*/}" "${args[@]}" \
    --entrypoint '["curl"]' --env PATH=/usr/bin:/bin >/dev/null
  # The static solver cert-manager runs for HTTP-01 challenges, non-root as upstream's.
  "$tool" --tag "$ACMESOLVER_IMAGE" --push "$REGISTRY_ADDRESS/${ACMESOLVER_IMAGE#*/}" \
    --file "$(tool_bin_dir "$(acmesolver_tool)")/acmesolver=/acmesolver" \
    --entrypoint '["/acmesolver"]' --user 65532:65532 >/dev/null
}

# Rootless BuildKit laid out as its upstream rootless image is (user 1000 "user", its
# home, /run/user/1000, 100000-165535 as its subordinate ids), from binaries built here:
# rootlesskit, buildkitd, buildctl, buildctl-daemonless.sh, runc. newuidmap and newgidmap
# are Debian's (package uidmap), with file capabilities (setuid, setgid) in place of
# their setuid bit: the build container adds exactly those two capabilities, and
# rootlesskit maps the build's user namespace with them. buildkitd reaches the local
# registry at its address, over plain HTTP (buildkitd.toml).
node_push_buildkit_image() {
  local tool=$1 dir=$CACHE_DIR/node-images/buildkit bk rk applet
  bk=$(tool_bin_dir "buildkit-$BUILDKIT_VERSION")
  rk=$(tool_bin_dir "rootlesskit-$ROOTLESSKIT_VERSION")
  mkdir -p "$dir"
  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' >"$dir/passwd"
  printf 'root:x:0:\nuser:x:1000:\n' >"$dir/group"
  echo "user:100000:65536" >"$dir/subid"
  # FROM registry.clouddeck.local/... pulls from the registry's address, as pods do.
  printf '[registry."%s"]\n  http = true\n  insecure = true\n[registry."%s"]\n  mirrors = ["%s"]\n' \
    "$REGISTRY_ADDRESS" "$LOCAL_REGISTRY" "$REGISTRY_ADDRESS" >"$dir/buildkitd.toml"
  local args=(--file "$CACHE_DIR/node-images/busybox=/bin/busybox" --dir /tmp
    --file "$dir/passwd=/etc/passwd" --file "$dir/group=/etc/group"
    --file "$dir/subid=/etc/subuid" --file "$dir/subid=/etc/subgid"
    --file "$bk/buildkitd=/usr/bin/buildkitd" --file "$bk/buildctl=/usr/bin/buildctl"
    --file "$bk/buildctl-daemonless.sh=/usr/bin/buildctl-daemonless.sh"
    --file "$rk/rootlesskit=/usr/bin/rootlesskit"
    --file "$(tool_bin_dir "runc-$RUNC_VERSION")/runc=/usr/bin/runc"
    --file /usr/bin/newuidmap=/usr/bin/newuidmap --fcap /usr/bin/newuidmap=setuid,setgid
    --file /usr/bin/newgidmap=/usr/bin/newgidmap --fcap /usr/bin/newgidmap=setuid,setgid
    --dir /home/user:1000:0755 --dir /home/user/.local:1000:0755
    --dir /home/user/.local/share:1000:0755 --dir /home/user/.local/share/buildkit:1000:0755
    --dir /home/user/.local/tmp:1000:0755 --dir /home/user/.config:1000:0755
    --dir /home/user/.config/buildkit:1000:0755 --dir /run/user/1000:1000:0700
    --file "$dir/buildkitd.toml=/home/user/.config/buildkit/buildkitd.toml")
  for applet in sh awk basename cat cut echo env expr grep id kill ls mkdir mktemp rm sed sleep tr; do
    args+=(--link "/bin/$applet=busybox")
  done
  mapfile -t -O "${#args[@]}" args < <(linked_files "$(tool_bin_dir "runc-$RUNC_VERSION")/runc" /usr/bin/newuidmap /usr/bin/newgidmap)
  "$tool" --tag "$BUILDKIT_IMAGE" --push "$REGISTRY_ADDRESS/${BUILDKIT_IMAGE#*/}" "${args[@]}" \
    --user 1000:1000 --env PATH=/usr/bin:/bin --env USER=user \
    --env XDG_RUNTIME_DIR=/run/user/1000 --env XDG_CONFIG_HOME=/home/user/.config \
    --env XDG_DATA_HOME=/home/user/.local/share --env TMPDIR=/home/user/.local/tmp \
    --env BUILDKIT_HOST=unix:///run/user/1000/buildkit/buildkitd.sock \
    --entrypoint '["rootlesskit", "buildkitd"]' >/dev/null
}

# --file arguments of the image tool for what the dynamic binaries $@ load (ldd): each
# library at the path the loader finds it by, with the loader itself.
linked_files() {
  local lib
  ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && NF > 1 { print $1 }' | sort -u |
    while read -r lib; do echo "--file"; echo "$(readlink -f "$lib")=$lib"; done
}

# The operator's image, as the Dockerfile at the repository's root builds it where a
# Docker engine exists: the release binary at /usr/local/bin/clouddeck, the C libraries
# it links (glibc, libgcc_s) and CA certificates, user 65532 ("nonroot", as in
# distroless), /tmp. Pushed to the local registry as $2; prints the pushed reference.
node_push_operator_image() {
  local binary=$1 ref=$2 dir=$CACHE_DIR/node-images/operator tool digest
  [[ -x $binary ]] || die "no operator binary at $binary (cargo build --release --locked --bin clouddeck)"
  [[ $ref == "$LOCAL_REGISTRY"/* ]] || die "the image is named under $LOCAL_REGISTRY, not $ref"
  tool=$(tool_bin_dir "$(image_tool)")/image
  mkdir -p "$dir"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/group"
  local args=(--file "$binary=/usr/local/bin/clouddeck" --file "$dir/passwd=/etc/passwd"
    --file "$dir/group=/etc/group" --dir /tmp)
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
    args+=(--file "/etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt")
  mapfile -t -O "${#args[@]}" args < <(linked_files "$binary")
  digest=$("$tool" --tag "$ref" --push "$REGISTRY_ADDRESS/${ref#*/}" "${args[@]}" \
    --entrypoint '["/usr/local/bin/clouddeck"]' --user 65532:65532 --env PATH=/usr/local/bin:/usr/bin:/bin)
  echo "$ref@$digest"
}

node_registry_config() {
  local dir
  dir=$(node_dir)
  cat >"$dir/registry.yaml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY_ADDRESS
EOF
  # containerd reaches $LOCAL_REGISTRY at the registry's address, over plain HTTP.
  mkdir -p "$dir/certs.d/$LOCAL_REGISTRY"
  cat >"$dir/certs.d/$LOCAL_REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY_ADDRESS"

[host."http://$REGISTRY_ADDRESS"]
  capabilities = ["pull", "resolve"]
EOF
  # Images that builds push are named by the registry's address (pods have no name for
  # it): plain HTTP there too.
  mkdir -p "$dir/certs.d/$REGISTRY_ADDRESS"
  cat >"$dir/certs.d/$REGISTRY_ADDRESS/hosts.toml" <<EOF
server = "http://$REGISTRY_ADDRESS"
EOF
}

registry_ready() { curl -fsS "http://$REGISTRY_ADDRESS/v2/" >/dev/null; }

# node_kubeconfig FILE SUBJECT: a kubeconfig for a client certificate of SUBJECT, signed
# by the cluster CA (the kubelet, kube-proxy and CoreDNS each have their own identity).
node_kubeconfig() {
  local file=$1 subject=$2 certs=$STATE/certs tmp
  tmp=$(mktemp -d)
  echo "extendedKeyUsage=clientAuth" >"$tmp/client.ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$tmp/key" -out "$tmp/csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$tmp/csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
    -CAserial "$tmp/ca.srl" -out "$tmp/crt" -days 30 -extfile "$tmp/client.ext" 2>/dev/null
  sed -e "s#client-certificate-data: .*#client-certificate-data: $(base64 -w0 <"$tmp/crt")#" \
    -e "s#client-key-data: .*#client-key-data: $(base64 -w0 <"$tmp/key")#" \
    "$STATE/kubeconfig" >"$file"
  chmod 600 "$file"
  rm -rf "$tmp"
}

node_certs() {
  local dir
  dir=$(node_dir)
  node_kubeconfig "$dir/kubeconfig" "/O=system:nodes/CN=system:node:$REAL_NODE_NAME"
  # system:kube-proxy is bound to system:node-proxier by the apiserver's default RBAC.
  node_kubeconfig "$dir/kube-proxy.kubeconfig" "/CN=system:kube-proxy"
  node_kubeconfig "$dir/coredns.kubeconfig" "/CN=clouddeck:coredns"
  kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "clouddeck:coredns"}
rules:
- {apiGroups: [""], resources: [services, endpoints, namespaces, pods], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "clouddeck:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "clouddeck:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "clouddeck:coredns"}
EOF
}

node_network() {
  local dir
  dir=$(node_dir)
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  mkdir -p "$dir/cni" "$dir/cni-ipam"
  # isGateway false: the plugin leaves the bridge's address (set above) alone and turns
  # no forwarding on. A pod's default route points at the node address, so what a pod
  # sends anywhere else ends at this machine's (non-forwarding) IP stack.
  cat >"$dir/cni/10-clouddeck.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "clouddeck",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni-ipam",
        "ranges": [[{"subnet": "$NODE_SUBNET_PREFIX.0/24", "rangeStart": "$NODE_SUBNET_PREFIX.10",
                     "rangeEnd": "$NODE_SUBNET_PREFIX.250", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # Pods get no name server from this machine: a lookup of a name outside the cluster
  # fails inside the pod instead of leaving the machine.
  echo "nameserver 127.0.0.1" >"$dir/resolv.conf"
  node_service_network
}

# What Service traffic needs, and the fences that keep it on the machine. A pod's packet
# to a ClusterIP reaches the node's address, kube-proxy rewrites it to a pod's address on
# the same bridge, and the kernel forwards it back out of the bridge: so forwarding is on
# for packets that arrive on the bridge only (not on any other interface), and a mangle
# rule drops whatever would be forwarded from the bridge to any other interface.
# br_netfilter lets conntrack see the bridged replies, which it must un-rewrite.
node_service_network() {
  local dir
  dir=$(node_dir)
  ip route add "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  ip route add "$KWOK_POD_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  iptables -t mangle -A FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" \
    -m comment --comment clouddeck-node -j DROP
  [[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter
  cat /proc/sys/net/bridge/bridge-nf-call-iptables >"$dir/bridge-nf-call-iptables.before"
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 >"/proc/sys/net/ipv4/conf/$NODE_BRIDGE/forwarding"
}

node_service_network_down() {
  local dir
  dir=$(node_dir)
  ip route del "$SERVICE_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  ip route del "$KWOK_POD_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  # kube-proxy --cleanup leaves its KUBE-FIREWALL chain (the martian-localhost drop).
  local hook
  for hook in INPUT OUTPUT FORWARD; do
    while iptables -D "$hook" -j KUBE-FIREWALL 2>/dev/null; do :; done
  done
  iptables -F KUBE-FIREWALL 2>/dev/null && iptables -X KUBE-FIREWALL 2>/dev/null || true
  while iptables -t mangle -D FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" \
    -m comment --comment clouddeck-node -j DROP 2>/dev/null; do :; done
  if [[ -f $dir/bridge-nf-call-iptables.before ]]; then
    cat "$dir/bridge-nf-call-iptables.before" >/proc/sys/net/bridge/bridge-nf-call-iptables
  fi
}

node_kube_proxy_config() {
  local dir
  dir=$(node_dir)
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $REAL_NODE_NAME
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clusterCIDR: $NODE_SUBNET_PREFIX.0/24
detectLocalMode: ClusterCIDR
# NodePorts only on the node's bridge address, never on this machine's other interfaces.
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false}
# Leave this machine's conntrack table size and timeouts as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# CoreDNS answers cluster.local names from the Services and pods it watches, on the
# node's address; it has no forwarder, so any other name is refused, never sent on.
node_coredns_config() {
  local dir
  dir=$(node_dir)
  cat >"$dir/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
  bind $NODE_IP
  kubernetes cluster.local in-addr.arpa {
    kubeconfig $dir/coredns.kubeconfig clouddeck-local
    pods insecure
  }
  errors
}
EOF
}


node_containerd_config() {
  local dir
  dir=$(node_dir)
  cat >"$dir/containerd.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"

[grpc]
  address = "$(containerd_socket)"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '$dir/certs.d'

[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start
  # ("can't get final child's PID from pipe") on the oom_score_adj write.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(tool_bin_dir "runc-$RUNC_VERSION")/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$dir/cni'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
EOF
}

node_kubelet_config() {
  local dir
  dir=$(node_dir)
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 (deprecated, not removed, in 1.36).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failSwapOn: false
containerRuntimeEndpoint: unix://$(containerd_socket)
imageServiceEndpoint: unix://$(containerd_socket)
# Without this the kubelet adds KUBE-FIREWALL rules that drop non-loopback traffic
# to 127.0.0.0/8, which every other local service here relies on.
makeIPTablesUtilChains: false
podLogsDir: $dir/pod-logs
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
resolvConf: $dir/resolv.conf
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/certs/ca.crt}
authorization: {mode: Webhook}
registerWithTaints:
- {key: clouddeck.io/real-node, value: "true", effect: NoSchedule}
# A development machine's disk is shared with everything else: evict only when it is
# nearly full, and never garbage-collect the images built here.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
enforceNodeAllocatable: []
serializeImagePulls: false
EOF
}

# The kubelet's cgroup root must exist in every v1 hierarchy; a new cpuset cgroup gets
# its parent's CPUs and memory nodes, or nothing could run in it.
node_cgroups() {
  local hierarchy
  for hierarchy in $(awk '$3 == "cgroup" { print $2 }' /proc/self/mounts); do
    mkdir -p "$hierarchy/$NODE_CGROUP"
    if [[ -f $hierarchy/cpuset.cpus ]]; then
      cat "$hierarchy/cpuset.cpus" >"$hierarchy/$NODE_CGROUP/cpuset.cpus"
      cat "$hierarchy/cpuset.mems" >"$hierarchy/$NODE_CGROUP/cpuset.mems"
    fi
  done
}

node_ready_real() {
  condition_true Ready node "$REAL_NODE_NAME"
}

node_up() {
  real_node_enabled || { say "real node skipped (CLOUDDECK_REAL_NODE=0)"; return 0; }
  local dir foreign
  dir=$(node_dir)
  node_check_host
  node_image_inputs
  mkdir -p "$dir"/{containerd,kubelet,pod-logs,certs.d}
  : >"$dir/foreign-dirs"
  mkdir -p "$(dirname "$(node_owner_file)")"
  echo "$STATE" >"$(node_owner_file)"
  for foreign in "${NODE_FOREIGN_DIRS[@]}"; do
    [[ -e $foreign ]] || echo "$foreign" >>"$dir/foreign-dirs"
  done
  node_certs
  node_network
  node_containerd_config
  node_kubelet_config
  node_registry_config
  node_kube_proxy_config
  node_coredns_config
  node_cgroups

  # The apiserver for pods (apiserver_advertise_address): the node's address, forwarded
  # to loopback.
  start apiserver-proxy "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,fork,reuseaddr,backlog=128" \
    "TCP:127.0.0.1:$APISERVER_PORT"
  start git-server -addr "$GIT_ADDRESS" -root "$dir/git"
  start registry serve "$dir/registry.yaml"
  wait_for "the local registry" 30 registry_ready
  node_push_images
  start containerd --config "$dir/containerd.toml" --log-level warn
  wait_for "containerd" 30 ctr version

  start kubelet --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubeconfig" \
    --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" \
    --node-ip "$NODE_IP" --hostname-override "$REAL_NODE_NAME" \
    --node-labels "clouddeck.io/node=real"
  start kube-proxy --config "$dir/kube-proxy.yaml"
  start coredns -conf "$dir/Corefile"
  wait_for "node $REAL_NODE_NAME to become Ready" 90 node_ready_real
  wait_for "kube-proxy" 60 curl -fsS "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
}

# Every process in the node's pod cgroups, killed; containers outlive the kubelet.
node_kill_pods() {
  local procs pid
  [[ -d /sys/fs/cgroup/pids/$NODE_CGROUP ]] || [[ -d /sys/fs/cgroup/memory/$NODE_CGROUP ]] || return 0
  for _ in 1 2 3; do
    procs=$(find /sys/fs/cgroup/*/"$NODE_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [[ -n $procs ]] || return 0
    for pid in $procs; do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.5
  done
}

# Unmounts everything mounted under $1, deepest first.
unmount_under() {
  local mnt
  awk -v prefix="$1/" 'index($2, prefix) == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

node_down() {
  local dir foreign shim
  dir=$(node_dir)
  [[ -d $dir || $(cat "$(node_owner_file)" 2>/dev/null) == "$STATE" ]] || return 0
  stop kubelet coredns kube-proxy
  # kube-proxy's own rules out of iptables, then the fences node_service_network added.
  "$(k8s_bin kube-proxy)" --cleanup >/dev/null 2>&1 || true
  node_service_network_down
  node_kill_pods
  # The shims are children of no one once containerd stops; find them by binary.
  shim=$(tool_bin_dir "containerd-$CONTAINERD_VERSION")/containerd-shim-runc-v2
  pkill -KILL -f "^$shim " 2>/dev/null || true
  stop containerd registry git-server apiserver-proxy
  unmount_under "$dir"
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then ip link del "$NODE_BRIDGE"; fi
  # Empty cgroups are removed deepest first; rmdir fails (harmlessly) on a busy one.
  find /sys/fs/cgroup/*/"$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
  if [[ -f $dir/foreign-dirs ]]; then
    while read -r foreign; do
      [[ -n $foreign ]] || continue
      unmount_under "$foreign"
      rm -rf "$foreign"
    done <"$dir/foreign-dirs"
  fi
  local left
  left=$(node_leftovers)
  [[ -z $left ]] || die "the real node left behind: $left"
  rm -f "$(node_owner_file)"
}

# What node_down should have removed and did not, one item per line (nothing if clean).
node_leftovers() {
  local dir
  dir=$(node_dir)
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then echo "interface $NODE_BRIDGE"; fi
  ip -4 route show | grep -F -e "$NODE_SUBNET_PREFIX." -e "$SERVICE_CIDR" -e "$KWOK_POD_CIDR" | sed 's/^/route /'
  awk -v prefix="$dir/" 'index($2, prefix) == 1 { print "mount " $2 }' /proc/self/mounts
  ls -d /sys/fs/cgroup/*/"$NODE_CGROUP" 2>/dev/null | sed 's/^/cgroup /'
  pgrep -af "$(tool_bin_dir "containerd-$CONTAINERD_VERSION")/|$(k8s_bin kubelet)|$(component_bin registry)|$(k8s_bin kube-proxy)|$(component_bin coredns)|$(component_bin git-server)|$(component_bin gateway)|socat TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP" | sed 's/^/process /'
  if command -v iptables-save >/dev/null; then
    iptables-save 2>/dev/null | grep -E -- "-A .*($NODE_SUBNET_PREFIX\.|$NODE_BRIDGE|KUBE-|clouddeck-node)" | sed 's/^/iptables /'
  fi
  return 0
}
