//! libcni's result cache: `<cache>/results/<network>-<containerID>-<ifname>`, a JSON object
//! of kind `cniCacheV1` (field names as libcni writes them; `config` is base64 because Go
//! encodes `[]byte` that way).

use crate::error::CniError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `kind` of a libcni cache entry.
pub const CACHE_KIND: &str = "cniCacheV1";

/// One cache entry, as libcni writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Always [`CACHE_KIND`].
    pub kind: String,
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The network configuration list's bytes, base64-encoded.
    #[serde(with = "b64")]
    pub config: Vec<u8>,
    /// `CNI_IFNAME`.
    #[serde(rename = "ifName")]
    pub if_name: String,
    /// The network name.
    #[serde(rename = "networkName")]
    pub network_name: String,
    /// `CNI_NETNS`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    /// `CNI_ARGS` as key/value pairs.
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments given to ADD.
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    /// The final ADD result, in the version the last plugin wrote it. Absent while the ADD
    /// is under way or when it failed (sandnet writes the entry before the first plugin so
    /// that an interrupted ADD is still found and deleted; libcni readers treat an entry
    /// without result as "no prevResult").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// The cache file of one attachment.
pub(crate) fn entry_path(
    cache_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{container_id}-{ifname}"))
}

/// Reads an entry; `Ok(None)` when there is none.
pub(crate) fn read(path: &Path) -> Result<Option<CacheEntry>, CniError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CniError::io("reading", path, e)),
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| CniError::Cache {
        path: path.to_path_buf(),
        reason: format!("not a cache entry: {e}"),
    })?;
    if entry.kind != CACHE_KIND {
        return Err(CniError::Cache {
            path: path.to_path_buf(),
            reason: format!("kind is {:?}, not {CACHE_KIND:?}", entry.kind),
        });
    }
    Ok(Some(entry))
}

/// Writes an entry atomically (temp file + rename), creating `results/` with mode 0700.
pub(crate) fn write(path: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CniError::io("creating", dir, e))?;
    let bytes = serde_json::to_vec(entry).map_err(|e| CniError::Cache {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(CniError::io("writing", path, e));
    }
    Ok(())
}

/// Removes an entry; a missing one is fine.
pub(crate) fn remove(path: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io("removing", path, e)),
    }
}

/// Every readable `cniCacheV1` entry under `<cache>/results`, sorted by file name.
pub(crate) fn list(cache_dir: &Path) -> Result<Vec<(PathBuf, CacheEntry)>, CniError> {
    let dir = cache_dir.join("results");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::io("reading directory", &dir, e)),
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match read(&p) {
            Ok(Some(e)) if !e.if_name.is_empty() && !e.network_name.is_empty() => out.push((p, e)),
            Ok(_) => {}
            Err(e) => tracing::debug!("ignoring CNI cache file: {e}"),
        }
    }
    Ok(out)
}

/// Standard base64 (RFC 4648, with padding), as Go's `encoding/json` writes `[]byte`.
pub(crate) mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes bytes.
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Decodes standard base64 (padding optional); `None` when malformed.
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let mut acc = 0u32;
        let mut bits = 0;
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        if bits >= 6 {
            return None;
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => decode(&s).ok_or_else(|| serde::de::Error::custom("invalid base64")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_known_values() {
        assert_eq!(b64::encode(b""), "");
        assert_eq!(b64::encode(b"f"), "Zg==");
        assert_eq!(b64::encode(b"fo"), "Zm8=");
        assert_eq!(b64::encode(b"foo"), "Zm9v");
        assert_eq!(b64::encode(b"foob"), "Zm9vYg==");
        assert_eq!(b64::encode(b"{\"a\":1}\n"), "eyJhIjoxfQo=");
        for n in 0..300usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(b64::decode(&b64::encode(&data)).as_deref(), Some(&data[..]));
        }
        assert_eq!(b64::decode("Zm9vYg"), Some(b"foob".to_vec()));
        assert_eq!(b64::decode("Z"), None);
        assert_eq!(b64::decode("Zm9v!"), None);
    }

    #[test]
    fn entry_serialises_with_libcni_field_names() {
        let e = CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: "c1".into(),
            config: b"{}".to_vec(),
            if_name: "eth0".into(),
            network_name: "net".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![("K".into(), "V".into())],
            capability_args: Map::new(),
            result: Some(serde_json::json!({"cniVersion": "1.0.0"})),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "cniCacheV1", "containerId": "c1", "config": "e30=",
                "ifName": "eth0", "networkName": "net", "netns": "/run/netns/x",
                "cniArgs": [["K", "V"]], "result": {"cniVersion": "1.0.0"}
            })
        );
        let back: CacheEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
