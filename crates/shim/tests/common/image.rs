//! A tiny local pause image (busybox-static sleeping), built as a docker-archive tarball
//! and imported with `ctr`, so no registry is needed.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

/// The image reference the private containerd uses as `sandbox_image`.
pub const PAUSE_IMAGE: &str = "sandnet.test/pause:1";

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn tar(dir: &Path, out: &Path, members: &[&str]) {
    let st = Command::new("tar")
        .arg("--owner=0")
        .arg("--group=0")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .args(members)
        .status()
        .expect("tar");
    assert!(st.success(), "tar failed");
}

/// Builds the image tarball in `work` and returns its path.
pub fn build(work: &Path) -> std::path::PathBuf {
    let root = work.join("img-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    let layer = work.join("img-layer.tar");
    tar(&root, &layer, &["bin"]);
    let layer_bytes = std::fs::read(&layer).unwrap();
    let diff_id = format!("sha256:{}", sha256_hex(&layer_bytes));
    let arch = work.join("img");
    std::fs::create_dir_all(&arch).unwrap();
    std::fs::rename(&layer, arch.join("layer.tar")).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    })
    .to_string();
    let config_name = format!("{}.json", sha256_hex(config.as_bytes()));
    std::fs::write(arch.join(&config_name), &config).unwrap();
    let manifest = serde_json::json!([
        {"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}
    ]);
    std::fs::write(arch.join("manifest.json"), manifest.to_string()).unwrap();
    let out = work.join("pause.tar");
    tar(&arch, &out, &["manifest.json", &config_name, "layer.tar"]);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&arch);
    out
}
