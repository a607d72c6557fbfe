#!/usr/bin/env bash
# Builds real Kubernetes control-plane components (and the etcd that kubeadm expects) from the Go
# module proxy, for tests that need a real kube-apiserver or a kubeadm-generated control plane.
#
# Usage: scripts/build-k8s.sh [--check|--no-check] [--with-node] [OUT_DIR]
#   OUT_DIR defaults to ${STATICLET_K8S_CACHE:-/var/cache/staticlet-k8s}.
#   Binaries land in OUT_DIR/<k8s version>/bin/: kube-apiserver kube-controller-manager
#   kube-scheduler kubeadm kubectl etcd, with OUT_DIR/<k8s version>/versions.env next to them.
#   --with-node (or STATICLET_K8S_NODE=1) also builds the node side, for the peer benchmark
#   (bench/peers.py): kubelet (k8s.io/kubernetes/cmd/kubelet of the same release, built like the
#   rest) and crictl (sigs.k8s.io/cri-tools/cmd/crictl, by default the newest v1.<minor>.x served
#   for the release's minor), into the same bin dir. Opt-in: several more minutes of compile that
#   the tests (and CI) do not need. With the control-plane binaries already cached, only the
#   missing node binaries are built.
#   Go modules and the build cache live in OUT_DIR/go (GOPATH, GOMODCACHE) and OUT_DIR/go-build.
#   If the binaries are already there it prints "cached" and exits (add --check to verify anyway).
#   After a fresh build it verifies them (--no-check skips): etcd and kube-apiserver are started
#   on random loopback ports with kubeadm-generated certificates, /readyz is awaited and
#   `kubectl get --raw /version` is run; both are then stopped and everything is removed.
#
# Environment: STATICLET_K8S_VERSION (default below), STATICLET_ETCD_VERSION (default: kubeadm's
#   DefaultEtcdVersion of that release), STATICLET_K8S_READY_TIMEOUT (seconds, default 180),
#   GO (default: go on PATH, else /usr/local/go/bin/go), GOTOOLCHAIN (set automatically to
#   go1.27.3 only when the release's go.mod needs a newer Go than the installed one),
#   STATICLET_CRICTL_VERSION (default: see --with-node).
# Prints the path of the bin directory on its last line of stdout.
set -euo pipefail

K8S_VERSION=${STATICLET_K8S_VERSION:-v1.34.4}
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubeadm kubectl)
ALL_BINS=("${K8S_BINS[@]}" etcd)
NODE_BINS=(kubelet crictl)

check=auto out="" node=no
case "${STATICLET_K8S_NODE:-}" in 1|yes|true) node=yes ;; esac
for a in "$@"; do
  case "$a" in
    --check) check=yes ;;
    --no-check) check=no ;;
    --with-node) node=yes ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) out=$a ;;
  esac
done
out=$(realpath -m "${out:-${STATICLET_K8S_CACHE:-/var/cache/staticlet-k8s}}")
dest="$out/$K8S_VERSION"
bin="$dest/bin"

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

have_all() {
  [ -f "$dest/versions.env" ] || return 1
  local b; for b in "${ALL_BINS[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

# The node binaries (--with-node): both there and recorded in versions.env.
have_node() {
  grep -q '^CRICTL_VERSION=' "$dest/versions.env" 2>/dev/null || return 1
  local b; for b in "${NODE_BINS[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

# A child that has exited but is not yet reaped still answers kill -0: look at its state instead.
alive() { [ -e "/proc/$1/stat" ] && ! awk '{ exit !($3 == "Z") }' "/proc/$1/stat" 2>/dev/null; }

# ---------------------------------------------------------------------------------------- check
# kubelet and crictl report the versions they were built as (running kubelet needs a container
# runtime: bench/peers.py does that).
verify_node() {
  local v
  v=$("$bin/kubelet" --version 2>&1) || true
  [ "$v" = "Kubernetes $K8S_VERSION" ] || die "kubelet --version says '$v', not $K8S_VERSION"
  v=$("$bin/crictl" --version 2>&1) || true
  [ "$v" = "crictl version $CRICTL_VERSION" ] || die "crictl --version says '$v', not $CRICTL_VERSION"
  log "check: kubelet $K8S_VERSION, crictl $CRICTL_VERSION ok"
}

# Starts etcd and kube-apiserver from $bin on loopback and talks to the apiserver with kubectl.
verify() {
  local t0 work pids=() rc=0
  t0=$(now)
  local b v
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    v=$("$bin/$b" --version 2>&1) || true
    [ "$v" = "Kubernetes $K8S_VERSION" ] || die "$b --version says '$v', not $K8S_VERSION"
  done
  v=$("$bin/kubeadm" version -o short 2>&1) || true
  [ "$v" = "$K8S_VERSION" ] || die "kubeadm version says '$v', not $K8S_VERSION"
  v=$("$bin/kubectl" version --client 2>&1) || true
  grep -q "^Client Version: $K8S_VERSION\$" <<<"$v" || die "kubectl version says '$v'"
  v=$("$bin/etcd" --version 2>&1) || true
  grep -q "^etcd Version: ${ETCD_VERSION#v}\$" <<<"$v" || die "etcd --version says '$v', not $ETCD_VERSION"
  log "check: versions ok (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/staticlet-k8s-check.XXXXXX")
  # shellcheck disable=SC2317
  cleanup() {
    # kube-apiserver (started last) first, then etcd: SIGTERM, up to 10s, then SIGKILL.
    local i p
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      p=${pids[i]}
      kill "$p" 2>/dev/null || true
      for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
      kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
    done
    pids=()
    rm -rf "$work"
  }
  trap 'cleanup' EXIT
  # Four distinct free loopback ports (bound and released by the kernel, so not guessed).
  local ports
  ports=$(python3 - <<'PY'
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
for s in ss: s.close()
PY
) || die "python3 is needed to pick free ports"
  local etcd_client etcd_peer etcd_metrics api_port
  read -r etcd_client etcd_peer etcd_metrics api_port <<<"$ports"
  # kubeadm refuses a loopback advertise address (it reads 127.0.0.1 as "the global address on
  # lo"), so the certificates and kube-apiserver advertise the host's source address while the
  # apiserver binds 127.0.0.1 only; 127.0.0.1 is in the serving certificate's SANs.
  local adv
  adv=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)
  local pki="$work/pki" kcfg="$work/kubeconfig"
  mkdir -p "$pki" "$kcfg" "$work/etcd-data"
  cat >"$work/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  ${adv:+advertiseAddress: $adv}
  bindPort: $api_port
nodeRegistration:
  name: staticlet-check
  criSocket: unix:///run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $K8S_VERSION
clusterName: staticlet-check
certificatesDir: $pki
controlPlaneEndpoint: 127.0.0.1:$api_port
networking:
  serviceSubnet: 10.96.0.0/12
apiServer:
  certSANs: [127.0.0.1, localhost]
EOF
  log "check: kubeadm init phase certs all / kubeconfig super-admin (in $work)"
  "$bin/kubeadm" init phase certs all --config "$work/kubeadm.yaml" >"$work/kubeadm.log" 2>&1 \
    || { cat "$work/kubeadm.log" >&2; die "kubeadm init phase certs failed"; }
  "$bin/kubeadm" init phase kubeconfig super-admin --config "$work/kubeadm.yaml" \
    --kubeconfig-dir "$kcfg" >>"$work/kubeadm.log" 2>&1 \
    || { cat "$work/kubeadm.log" >&2; die "kubeadm init phase kubeconfig failed"; }
  local kc="$kcfg/super-admin.conf"

  log "check: etcd on 127.0.0.1:$etcd_client, kube-apiserver on 127.0.0.1:$api_port"
  "$bin/etcd" --name staticlet-check --data-dir "$work/etcd-data" \
    --listen-client-urls "https://127.0.0.1:$etcd_client" \
    --advertise-client-urls "https://127.0.0.1:$etcd_client" \
    --listen-peer-urls "https://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "https://127.0.0.1:$etcd_peer" \
    --initial-cluster "staticlet-check=https://127.0.0.1:$etcd_peer" \
    --listen-metrics-urls "http://127.0.0.1:$etcd_metrics" \
    --cert-file "$pki/etcd/server.crt" --key-file "$pki/etcd/server.key" \
    --trusted-ca-file "$pki/etcd/ca.crt" --client-cert-auth \
    --peer-cert-file "$pki/etcd/peer.crt" --peer-key-file "$pki/etcd/peer.key" \
    --peer-trusted-ca-file "$pki/etcd/ca.crt" --peer-client-cert-auth \
    >"$work/etcd.log" 2>&1 &
  pids+=($!)
  "$bin/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address "${adv:-127.0.0.1}" --secure-port "$api_port" \
    --etcd-servers "https://127.0.0.1:$etcd_client" --etcd-cafile "$pki/etcd/ca.crt" \
    --etcd-certfile "$pki/apiserver-etcd-client.crt" --etcd-keyfile "$pki/apiserver-etcd-client.key" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --cert-dir "$work/apiserver-certs" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/12 --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --allow-privileged \
    --profiling=false \
    >"$work/apiserver.log" 2>&1 &
  pids+=($!)

  local deadline=$((SECONDS + ${STATICLET_K8S_READY_TIMEOUT:-180})) t_api
  t_api=$(now)
  until "$bin/kubectl" --kubeconfig "$kc" --request-timeout 5s get --raw /readyz >/dev/null 2>&1; do
    local p; for p in "${pids[@]}"; do
      alive "$p" || {
        tail -n 30 "$work/etcd.log" "$work/apiserver.log" >&2; die "etcd or kube-apiserver exited"; }
    done
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$work/etcd.log" "$work/apiserver.log" >&2
      "$bin/kubectl" --kubeconfig "$kc" get --raw '/readyz?verbose' >&2 || true
      die "kube-apiserver not ready within ${STATICLET_K8S_READY_TIMEOUT:-180}s"
    fi
    sleep 0.5
  done
  log "check: kube-apiserver ready after $(since "$t_api")s"
  local version
  version=$("$bin/kubectl" --kubeconfig "$kc" get --raw /version) || rc=1
  printf '%s\n' "$version" >&2
  grep -q "\"gitVersion\": *\"$K8S_VERSION\"" <<<"$version" \
    || { log "check: /version does not report $K8S_VERSION"; rc=1; }
  "$bin/kubectl" --kubeconfig "$kc" get namespaces >&2 || rc=1
  local t_stop; t_stop=$(now)
  cleanup; trap - EXIT
  log "check: etcd and kube-apiserver stopped in $(since "$t_stop")s"
  [ $rc -eq 0 ] || die "check failed"
  log "check: ok (total $(since "$t0")s)"
}

# ---------------------------------------------------------------------------------------- build
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

build_core=yes build_node=no
if have_all; then
  build_core=no
  ETCD_VERSION=$(sed -n 's/^ETCD_VERSION=//p' "$dest/versions.env")
fi
if [ "$node" = yes ]; then
  if have_node; then
    CRICTL_VERSION=$(sed -n 's/^CRICTL_VERSION=//p' "$dest/versions.env")
  else
    build_node=yes
  fi
fi
if [ $build_core = no ] && [ $build_node = no ]; then
  echo "cached: $bin" >&2
  if [ "$check" = yes ]; then verify; [ "$node" = no ] || verify_node; fi
  echo "$bin"
  exit 0
fi

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
# Go 1.21 or newer (GOTOOLCHAIN, below): Debian 12's golang-go (1.19) is too old.
go_help="Go 1.21 or newer is needed: go on PATH, /usr/local/go from https://go.dev/dl, or GO=..."
[ -x "$GO" ] || die "no Go toolchain. $go_help"
export GOPATH="$out/go" GOMODCACHE="$out/go/pkg/mod" GOCACHE="$out/go-build"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOWORK=off GO111MODULE=on
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
have_go=$("$GO" env GOVERSION 2>/dev/null | sed 's/^go//') || true
[ "$(printf '1.21\n%s\n' "$have_go" | sort -V | head -n1)" = 1.21 ] \
  || die "$GO is Go $have_go. $go_help"
t_start=$(now)
work=$(mktemp -d "${TMPDIR:-/tmp}/staticlet-k8s-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "k8s.io/kubernetes $K8S_VERSION: downloading its go.mod"
kdir=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
  || die "k8s.io/kubernetes@$K8S_VERSION is not served by the module proxy"
kmod="$kdir/go.mod"

# A release whose go.mod needs a newer Go than this one needs GOTOOLCHAIN (the approved one).
need_go=$("$GO" mod edit -json "$kmod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')
if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | tail -n1)" != "$have_go" ] \
  && [ "$GOTOOLCHAIN" = local ]; then
  export GOTOOLCHAIN=go1.27.3
  log "go.mod needs go $need_go > $have_go: GOTOOLCHAIN=$GOTOOLCHAIN"
fi

if [ $build_core = yes ]; then
# The etcd kubeadm of this release deploys (constants.DefaultEtcdVersion, e.g. "3.6.5-0").
etcd_want=$(sed -n 's/^[[:space:]]*DefaultEtcdVersion[[:space:]]*=[[:space:]]*"\([0-9.]*\)-[0-9]*".*/\1/p' \
  "$kdir/cmd/kubeadm/app/constants/constants.go" | head -n1)
[ -n "$etcd_want" ] || die "no DefaultEtcdVersion in kubeadm's constants.go"
ETCD_VERSION=${STATICLET_ETCD_VERSION:-v$etcd_want}
if ! "$GO" list -m "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1; then
  # Not served: take the newest served patch of the same minor.
  minor=$(sed 's/^v\([0-9]*\.[0-9]*\)\..*/\1/' <<<"$ETCD_VERSION")
  alt=$("$GO" list -m -versions go.etcd.io/etcd/server/v3 | tr ' ' '\n' \
    | grep -E "^v${minor//./\\.}\.[0-9]+$" | sort -V | tail -n1)
  [ -n "$alt" ] || die "go.etcd.io/etcd/server/v3: neither $ETCD_VERSION nor any v$minor.x is served"
  log "etcd $ETCD_VERSION is not served; using $alt"
  ETCD_VERSION=$alt
fi
log "kubeadm $K8S_VERSION expects etcd $etcd_want: building etcd $ETCD_VERSION"
fi

# crictl: the cri-tools release of the same minor (cri-tools versions follow Kubernetes').
if [ $build_node = yes ]; then
  CRICTL_VERSION=${STATICLET_CRICTL_VERSION:-}
  if [ -z "$CRICTL_VERSION" ]; then
    k8s_minor=$(sed 's/^v\([0-9]*\.[0-9]*\)\..*/\1/' <<<"$K8S_VERSION")
    CRICTL_VERSION=$("$GO" list -m -versions sigs.k8s.io/cri-tools | tr ' ' '\n' \
      | grep -E "^v${k8s_minor//./\\.}\.[0-9]+$" | sort -V | tail -n1)
    [ -n "$CRICTL_VERSION" ] || die "sigs.k8s.io/cri-tools: no v$k8s_minor.x is served"
  fi
  log "node binaries: kubelet $K8S_VERSION, crictl $CRICTL_VERSION"
fi

# Throwaway main module: require k8s.io/kubernetes and map every staging module it replaces with a
# local path to the published k8s.io/<staging> v0.<minor>.<patch>.
staging_version="v0.${K8S_VERSION#v1.}"
mkdir -p "$work/k8s" "$work/etcd"
(
  cd "$work/k8s"
  "$GO" mod init staticlet.invalid/k8s-build >/dev/null 2>&1
  "$GO" mod edit -go="$need_go" -require="k8s.io/kubernetes@$K8S_VERSION"
  "$GO" mod edit -json "$kmod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"]["Path"], r["New"]
    if old.startswith("k8s.io/") and not new.get("Version") and new["Path"].startswith("./staging/"):
        print(old)' >staging.txt
  [ -s staging.txt ] || die "no staging replaces found in $kmod"
  args=()
  while read -r m; do args+=("-replace=$m=$m@$staging_version"); done <staging.txt
  "$GO" mod edit "${args[@]}"
  log "$(wc -l <staging.txt) staging modules mapped to $staging_version"
)

build_date=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Time"])' \
  "$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.info" 2>/dev/null \
  || date -u +%Y-%m-%dT%H:%M:%SZ)
major=${K8S_VERSION#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
ld="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
tmpbin="$work/bin"; mkdir -p "$tmpbin"

log "resolving modules (about 700 MB on the first run)"
t0=$(now)
pkgs=()
if [ $build_core = yes ]; then for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done; fi
[ $build_node = no ] || pkgs+=(k8s.io/kubernetes/cmd/kubelet)
(cd "$work/k8s" && "$GO" list -deps "${pkgs[@]}" >/dev/null 2>"$work/resolve.log") \
  || { cat "$work/resolve.log" >&2; die "module resolution failed"; }
log "$(grep -c '^go: downloading' "$work/resolve.log" || true) modules downloaded"
log "modules resolved in $(since "$t0")s"

log "building ${pkgs[*]##*/} (nice -n 10, CGO_ENABLED=0)"
t0=$(now)
(cd "$work/k8s" && nice -n 10 "$GO" build -trimpath -tags selinux,notest,grpcnotrace \
  -ldflags "$ld" -o "$tmpbin/" "${pkgs[@]}") || die "go build of Kubernetes failed"
log "Kubernetes binaries built in $(since "$t0")s"

if [ $build_core = yes ]; then
log "building etcd $ETCD_VERSION"
t0=$(now)
(
  cd "$work/etcd"
  "$GO" mod init staticlet.invalid/etcd-build >/dev/null 2>&1
  cat >main.go <<'EOF'
// etcd server: the same entry point as go.etcd.io/etcd/v3's main, without its local replaces.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 \
    || "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  "$GO" mod tidy >/dev/null 2>&1 || "$GO" mod tidy
  nice -n 10 "$GO" build -trimpath -ldflags "-s -w" -o "$tmpbin/etcd" .
) || die "go build of etcd failed"
log "etcd built in $(since "$t0")s"
fi

if [ $build_node = yes ]; then
  log "building crictl $CRICTL_VERSION"
  t0=$(now)
  mkdir -p "$work/crictl"
  # cri-tools' go.mod has no local replaces: an ordinary `go install pkg@version` builds it.
  (cd "$work/crictl" && GOFLAGS=-buildvcs=false GOBIN="$tmpbin" nice -n 10 "$GO" install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION") || die "go build of crictl failed"
  log "crictl built in $(since "$t0")s"
fi

built=()
[ $build_core = no ] || built+=("${ALL_BINS[@]}")
[ $build_node = no ] || built+=("${NODE_BINS[@]}")
for b in "${built[@]}"; do
  [ -x "$tmpbin/$b" ] || die "$b was not built"
  file "$tmpbin/$b" 2>/dev/null | grep -q 'statically linked' || log "note: $b is not statically linked"
done
mkdir -p "$bin"
for b in "${built[@]}"; do mv -f "$tmpbin/$b" "$bin/$b"; done
if [ $build_core = yes ]; then
  cat >"$dest/versions.env.tmp" <<EOF
K8S_VERSION=$K8S_VERSION
STAGING_VERSION=$staging_version
ETCD_VERSION=$ETCD_VERSION
KUBEADM_ETCD_VERSION=$etcd_want
GO_VERSION=$(GOTOOLCHAIN=$GOTOOLCHAIN "$GO" env GOVERSION)
EOF
else
  grep -v '^CRICTL_VERSION=' "$dest/versions.env" >"$dest/versions.env.tmp"
fi
[ $build_node = no ] || echo "CRICTL_VERSION=$CRICTL_VERSION" >>"$dest/versions.env.tmp"
mv "$dest/versions.env.tmp" "$dest/versions.env"
log "built in $(since "$t_start")s total"
du -sh "$bin" "$GOMODCACHE" "$GOCACHE" 2>/dev/null | sed 's/^/[build-k8s] size /' >&2

rm -rf "$work"; trap - EXIT
if [ "$check" != no ]; then
  # The control plane is checked when it was just built (or on --check); the node binaries then too.
  if [ $build_core = yes ] || [ "$check" = yes ]; then verify; fi
  [ "$node" = no ] || verify_node
fi
echo "$bin"
