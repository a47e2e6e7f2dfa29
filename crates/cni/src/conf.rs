//! Network configuration: `*.conflist` lists and legacy single-plugin `*.conf` / `*.json`.

use crate::error::CniError;
use crate::version::{cmp_versions, SpecVersion, CURRENT_VERSION};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One plugin of a network: its `type`, its declared `capabilities`, and its whole JSON
/// object, unknown fields included, exactly as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The plugin's `type`: the binary's name.
    pub plugin_type: String,
    /// The `capabilities` it declares (only `true` ones matter).
    pub capabilities: BTreeMap<String, bool>,
    /// The configuration object as written.
    pub raw: Map<String, Value>,
}

/// A network: a named list of plugins run in order (a `*.conflist`, or a legacy `*.conf`
/// turned into a one-plugin list as libcni does).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network name (`name`).
    pub name: String,
    /// The selected spec version: the highest of `cniVersion` and `cniVersions` this executor
    /// supports.
    pub cni_version: String,
    /// `disableCheck`: CHECK is never run.
    pub disable_check: bool,
    /// `disableGC`: GC is never run.
    pub disable_gc: bool,
    /// The plugins, in ADD order.
    pub plugins: Vec<PluginConf>,
    /// The configuration list's bytes (what libcni's cache keeps as `config`); for a legacy
    /// `.conf` this is the generated one-plugin list.
    pub bytes: Vec<u8>,
    /// The file it was loaded from, if any.
    pub source: Option<PathBuf>,
}

/// What scanning a conf dir found in one file.
#[derive(Debug)]
pub struct ConfFile {
    /// The file.
    pub path: PathBuf,
    /// The network it holds, or why it is not usable.
    pub network: Result<NetworkConfigList, CniError>,
}

/// Checks a network name, container ID: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as libcni does.
pub(crate) fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

fn invalid(file: Option<&Path>, reason: impl Into<String>) -> CniError {
    CniError::InvalidConfig {
        file: file.map(Path::to_path_buf),
        reason: reason.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_bool(obj: &Map<String, Value>, key: &str, file: Option<&Path>) -> Result<bool, CniError> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid(
                file,
                format!("{key} must be true or false, not {s:?}"),
            )),
        },
        Some(v) => Err(invalid(
            file,
            format!("{key} must be a boolean, not {}", type_name(v)),
        )),
    }
}

fn check_version(v: &str, what: &str, file: Option<&Path>) -> Result<SpecVersion, CniError> {
    let parsed = SpecVersion::parse(v)
        .filter(|_| !v.is_empty())
        .ok_or_else(|| {
            invalid(
                file,
                format!("{what} {v:?} is not a version like \"1.0.0\""),
            )
        })?;
    Ok(parsed)
}

impl PluginConf {
    /// Validates one plugin object (`index` is its position, for messages).
    fn from_value(v: Value, index: usize, file: Option<&Path>) -> Result<PluginConf, CniError> {
        let Value::Object(raw) = v else {
            return Err(invalid(
                file,
                format!("plugins[{index}] must be an object, not {}", type_name(&v)),
            ));
        };
        let plugin_type = match raw.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => {
                return Err(invalid(file, format!("plugins[{index}] has no \"type\"")))
            }
            Some(v) => {
                return Err(invalid(
                    file,
                    format!(
                        "plugins[{index}].type must be a string, not {}",
                        type_name(v)
                    ),
                ))
            }
        };
        if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
            return Err(invalid(
                file,
                format!("plugins[{index}].type {plugin_type:?} is not a binary name"),
            ));
        }
        let mut capabilities = BTreeMap::new();
        match raw.get("capabilities") {
            None | Some(Value::Null) => {}
            Some(Value::Object(caps)) => {
                for (k, v) in caps {
                    let Value::Bool(b) = v else {
                        return Err(invalid(
                            file,
                            format!(
                                "plugins[{index}] ({plugin_type}): capabilities.{k} must be a boolean"
                            ),
                        ));
                    };
                    capabilities.insert(k.clone(), *b);
                }
            }
            Some(v) => {
                return Err(invalid(
                    file,
                    format!(
                        "plugins[{index}] ({plugin_type}): capabilities must be an object, not {}",
                        type_name(v)
                    ),
                ))
            }
        }
        Ok(PluginConf {
            plugin_type,
            capabilities,
            raw,
        })
    }

    /// True when the plugin declares the capability.
    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.get(cap).copied().unwrap_or(false)
    }
}

impl NetworkConfigList {
    /// True when some plugin of the list declares the capability (so the runtime passes
    /// its argument to that plugin, which then does the job).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.plugins.iter().any(|p| p.has_capability(cap))
    }

    /// Parses a `.conflist` document.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        Self::parse_list(bytes, None)
    }

    /// Parses a legacy single-plugin `.conf` document into a one-plugin list (libcni's
    /// `ConfListFromConf`).
    pub fn from_plugin_bytes(bytes: &[u8]) -> Result<NetworkConfigList, CniError> {
        Self::parse_single(bytes, None)
    }

    /// Loads one file: `.conflist` as a list, anything else as a single-plugin conf.
    pub fn from_file(path: &Path) -> Result<NetworkConfigList, CniError> {
        let bytes = std::fs::read(path).map_err(|e| CniError::io("reading", path, e))?;
        let mut list = if path.extension().is_some_and(|e| e == "conflist") {
            Self::parse_list(&bytes, Some(path))?
        } else {
            Self::parse_single(&bytes, Some(path))?
        };
        list.source = Some(path.to_path_buf());
        Ok(list)
    }

    /// Every `*.conflist`, `*.conf` and `*.json` file of `dir`, in lexical order, each with
    /// its network or the reason it is unusable. A missing directory gives an empty list.
    pub fn scan_dir(dir: &Path) -> Result<Vec<ConfFile>, CniError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io("reading directory", dir, e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CniError::io("reading directory", dir, e))?;
            let path = entry.path();
            let is_file = std::fs::metadata(&path)
                .map(|m| m.is_file())
                .unwrap_or(false);
            let ext_ok = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "conflist" | "conf" | "json"));
            if is_file && ext_ok {
                files.push(path);
            }
        }
        files.sort();
        Ok(files
            .into_iter()
            .map(|path| {
                let network = Self::from_file(&path);
                ConfFile { path, network }
            })
            .collect())
    }

    /// The network of a conf dir: the first valid file in lexical order (as containerd and
    /// CRI-O pick their default network). Invalid files before it are skipped with a warning;
    /// when none is valid the error names every file and what is wrong with it.
    pub fn load_dir(dir: &Path) -> Result<NetworkConfigList, CniError> {
        Self::load_dir_inner(dir, None)
    }

    /// The first valid network named `name` in a conf dir.
    pub fn load_dir_named(dir: &Path, name: &str) -> Result<NetworkConfigList, CniError> {
        Self::load_dir_inner(dir, Some(name))
    }

    fn load_dir_inner(dir: &Path, name: Option<&str>) -> Result<NetworkConfigList, CniError> {
        let mut skipped: Vec<(PathBuf, String)> = Vec::new();
        for f in Self::scan_dir(dir)? {
            match f.network {
                Ok(list) if name.is_none_or(|n| n == list.name) => {
                    for (p, why) in &skipped {
                        tracing::warn!(file = %p.display(), "skipped invalid CNI config: {why}");
                    }
                    return Ok(list);
                }
                Ok(_) => {}
                Err(e) => skipped.push((f.path, e.to_string())),
            }
        }
        match name {
            None => Err(CniError::NoConfig {
                dir: dir.to_path_buf(),
                skipped,
            }),
            Some(n) => Err(CniError::NetworkNotFound {
                dir: dir.to_path_buf(),
                name: n.to_string(),
                skipped,
            }),
        }
    }

    fn parse_object(bytes: &[u8], file: Option<&Path>) -> Result<Map<String, Value>, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(file, format!("not valid JSON: {e}")))?;
        match v {
            Value::Object(m) => Ok(m),
            other => Err(invalid(
                file,
                format!("expected a JSON object, found {}", type_name(&other)),
            )),
        }
    }

    fn read_name(obj: &Map<String, Value>, file: Option<&Path>) -> Result<String, CniError> {
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(invalid(file, "no \"name\"")),
            Some(v) => {
                return Err(invalid(
                    file,
                    format!("name must be a string, not {}", type_name(v)),
                ))
            }
        };
        if !valid_name(&name) {
            return Err(invalid(
                file,
                format!(
                    "network name {name:?} must start with a letter or digit and contain only letters, digits, '_', '.', '-'"
                ),
            ));
        }
        Ok(name)
    }

    /// `cniVersion` and `cniVersions` → the highest version not newer than this executor's.
    fn select_version(obj: &Map<String, Value>, file: Option<&Path>) -> Result<String, CniError> {
        let current = SpecVersion::parse(CURRENT_VERSION).unwrap_or(SpecVersion::V1_1_0);
        let single = match obj.get("cniVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                check_version(s, "cniVersion", file)?;
                Some(s.clone())
            }
            Some(v) => {
                return Err(invalid(
                    file,
                    format!("cniVersion must be a string, not {}", type_name(v)),
                ))
            }
        };
        let mut candidates: Vec<String> = Vec::new();
        let has_list = match obj.get("cniVersions") {
            None | Some(Value::Null) => false,
            Some(Value::Array(vs)) => {
                for (i, v) in vs.iter().enumerate() {
                    let Value::String(s) = v else {
                        return Err(invalid(
                            file,
                            format!("cniVersions[{i}] must be a string, not {}", type_name(v)),
                        ));
                    };
                    if check_version(s, &format!("cniVersions[{i}]"), file)? <= current {
                        candidates.push(s.clone());
                    }
                }
                true
            }
            Some(v) => {
                return Err(invalid(
                    file,
                    format!("cniVersions must be an array, not {}", type_name(v)),
                ))
            }
        };
        if let Some(s) = &single {
            if check_version(s, "cniVersion", file)? <= current {
                candidates.push(s.clone());
            } else if !has_list {
                return Err(invalid(
                    file,
                    format!("cniVersion {s:?} is newer than the {CURRENT_VERSION} this executor implements"),
                ));
            }
        }
        candidates.sort_by(|a, b| cmp_versions(a, b));
        match candidates.pop() {
            Some(v) => {
                if SpecVersion::parse(&v).and_then(|v| v.result_format()).is_none() {
                    return Err(invalid(
                        file,
                        format!("cniVersion {v:?} is not a released CNI spec version"),
                    ));
                }
                Ok(v)
            }
            None if has_list => Err(invalid(
                file,
                format!("none of cniVersions is supported (this executor implements up to {CURRENT_VERSION})"),
            )),
            // No version at all: the spec's oldest, as plugins read an empty version.
            None => Ok("0.1.0".to_string()),
        }
    }

    fn parse_list(bytes: &[u8], file: Option<&Path>) -> Result<NetworkConfigList, CniError> {
        let obj = Self::parse_object(bytes, file)?;
        let name = Self::read_name(&obj, file)?;
        let cni_version = Self::select_version(&obj, file)?;
        let disable_check = read_bool(&obj, "disableCheck", file)?;
        let disable_gc = read_bool(&obj, "disableGC", file)?;
        let plugins =
            match obj.get("plugins") {
                Some(Value::Array(ps)) if ps.is_empty() => {
                    return Err(invalid(file, "\"plugins\" is empty"))
                }
                Some(Value::Array(ps)) => ps
                    .iter()
                    .enumerate()
                    .map(|(i, p)| PluginConf::from_value(p.clone(), i, file))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(v) => {
                    return Err(invalid(
                        file,
                        format!("plugins must be an array, not {}", type_name(v)),
                    ))
                }
                None if obj.contains_key("type") => return Err(invalid(
                    file,
                    "no \"plugins\" list; this looks like a single-plugin config: name it *.conf",
                )),
                None => return Err(invalid(file, "no \"plugins\" list")),
            };
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            bytes: bytes.to_vec(),
            source: None,
        })
    }

    fn parse_single(bytes: &[u8], file: Option<&Path>) -> Result<NetworkConfigList, CniError> {
        let obj = Self::parse_object(bytes, file)?;
        if !obj.contains_key("type") && obj.contains_key("plugins") {
            return Err(invalid(
                file,
                "no \"type\"; this looks like a configuration list: name it *.conflist",
            ));
        }
        let name = Self::read_name(&obj, file)?;
        let cni_version = Self::select_version(&obj, file)?;
        let plugin =
            PluginConf::from_value(Value::Object(obj.clone()), 0, file).map_err(|e| match e {
                CniError::InvalidConfig { file, reason } => CniError::InvalidConfig {
                    file,
                    reason: reason.replace("plugins[0]", "the plugin config"),
                },
                other => other,
            })?;
        // libcni's upconversion: {"name","cniVersion","plugins":[conf]}, with the version
        // selected from cniVersion/cniVersions, so the list loads again as the same version.
        let list = json!({
            "name": name,
            "cniVersion": cni_version,
            "plugins": [Value::Object(obj)],
        });
        let bytes = serde_json::to_vec(&list).map_err(|e| invalid(file, e.to_string()))?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check: false,
            disable_gc: false,
            plugins: vec![plugin],
            bytes,
            source: None,
        })
    }
}
