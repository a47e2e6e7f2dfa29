# Shared by scripts/demo-cri and scripts/soak (sourced, not run): a local pause image and a
# private containerd's configuration, with runtime handler "sandnet" =
# containerd-shim-sandnet-v2 (found on containerd's PATH).

# The pause image every pod and container uses: busybox-static as the only layer,
# `sandnet.local/pause:1`, built into DIR/pause.tar (no registry needed).
CRI_PAUSE_IMAGE=sandnet.local/pause:1
cri_pause_image() {
  local dir=$1
  mkdir -p "$dir/img/rootfs/bin"
  cp /bin/busybox "$dir/img/rootfs/bin/busybox"
  tar --owner=0 --group=0 -C "$dir/img/rootfs" -cf "$dir/img/layer.tar" bin
  local diff_id
  diff_id=$(sha256sum "$dir/img/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/busybox","sleep","2147483647"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$dir/img/config.json"
  echo "[{\"Config\":\"config.json\",\"RepoTags\":[\"$CRI_PAUSE_IMAGE\"],\"Layers\":[\"layer.tar\"]}]" > "$dir/img/manifest.json"
  tar -C "$dir/img" -cf "$dir/pause.tar" manifest.json config.json layer.tar
}

# cri_containerd_config DIR SOCK NET_D [SANDNET_TOML]: writes DIR/config.toml, a containerd
# with its root, state and sockets under DIR, CNI confs from NET_D, the native snapshotter,
# runtimes runc and sandnet (with `ConfigPath = SANDNET_TOML` when given).
cri_containerd_config() {
  local dir=$1 sock=$2 netd=$3 sandnet_toml=${4:-}
  cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CRI_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$netd"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandnet]
      runtime_type = "io.containerd.sandnet.v2"
TOML
  if [ -n "$sandnet_toml" ]; then
    cat >> "$dir/config.toml" <<TOML
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandnet.options]
        ConfigPath = "$sandnet_toml"
TOML
  fi
}

# cri_wait_and_import SOCK TAR: waits (10 s at most) for containerd to answer on SOCK, then
# imports the image TAR into the CRI's namespace.
cri_wait_and_import() {
  local sock=$1 tar=$2
  for _ in $(seq 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$sock" -n k8s.io images import --snapshotter native "$tar" >/dev/null
}
