//! Reading each section of the file into the configuration, checking every value and
//! collecting warnings for keys that are ignored.

use super::keys::*;
use super::*;

/// Parsing state: where the text came from and what has been ignored so far.
pub(super) struct Parser<'a> {
    pub(super) origin: &'a str,
    pub(super) warnings: Vec<Warning>,
}

impl Parser<'_> {
    pub(super) fn runtime(
        &mut self,
        t: &Table,
        out: &mut RuntimeConfig,
    ) -> Result<(), ConfigError> {
        for (k, v) in t {
            let key = format!("runtime.{k}");
            match k.as_str() {
                "internetworking_model" => {
                    let name = self.string(v, &key)?;
                    // Kata's own alias for its default model, which is tcfilter.
                    let name = if name == "default" { "tcfilter" } else { name };
                    out.internetworking_model =
                        Model::from_str(name).map_err(|e| self.invalid(&key, e.to_string()))?;
                }
                "disable_new_netns" => out.disable_new_netns = self.boolean(v, &key)?,
                "hotplug_network" => out.hotplug_network = self.boolean(v, &key)?,
                "guest_spoofing" => {
                    let s = self.string(v, &key)?;
                    out.guest_spoofing = s.parse().map_err(|_| {
                        self.invalid(&key, format!("must be \"block\" or \"allow\", got {s:?}"))
                    })?;
                }
                _ => self.ignore(key, k, RUNTIME_KEYS, KATA_RUNTIME_KEYS),
            }
        }
        Ok(())
    }

    pub(super) fn factory(
        &mut self,
        t: &Table,
        out: &mut FactoryConfig,
    ) -> Result<(), ConfigError> {
        for (k, v) in t {
            let key = format!("factory.{k}");
            match k.as_str() {
                "vm_cache_number" => {
                    let n = self.integer(v, &key)?;
                    if !(0..=i64::from(MAX_VM_CACHE)).contains(&n) {
                        return Err(
                            self.invalid(&key, format!("must be 0..={MAX_VM_CACHE}, got {n}"))
                        );
                    }
                    out.vm_cache_number = n as u32;
                }
                _ => self.ignore(key, k, FACTORY_KEYS, KATA_FACTORY_KEYS),
            }
        }
        Ok(())
    }

    pub(super) fn netmon(&mut self, t: &Table, out: &mut NetmonConfig) -> Result<(), ConfigError> {
        for (k, v) in t {
            let key = format!("netmon.{k}");
            match k.as_str() {
                "enable" | "enable_netmon" => out.enable = self.boolean(v, &key)?,
                _ => self.ignore(key, k, NETMON_KEYS, KATA_NETMON_KEYS),
            }
        }
        Ok(())
    }

    pub(super) fn qemu(&mut self, t: &Table, out: &mut QemuConfig) -> Result<(), ConfigError> {
        for (k, v) in t {
            let key = format!("hypervisor.qemu.{k}");
            match k.as_str() {
                "path" => {
                    if let Some(p) = self.path(v, &key)? {
                        out.path = p;
                    }
                }
                "kernel" => out.kernel = self.kernel(v, &key)?,
                "initrd" => out.initrd = self.path(v, &key)?,
                "machine_type" => {
                    let m = self.string(v, &key)?;
                    if m.contains(|c: char| c == ',' || c.is_whitespace()) {
                        return Err(self.invalid(
                            &key,
                            format!(
                                "{m:?} is not a machine type name (no commas or spaces; \
                                 e.g. \"q35\")"
                            ),
                        ));
                    }
                    if !m.is_empty() {
                        out.machine_type = m.to_string();
                    }
                }
                "kernel_params" => out.kernel_params = self.string(v, &key)?.trim().to_string(),
                "default_vcpus" => {
                    let n = self.integer(v, &key)?;
                    if n < 1 {
                        return Err(self.invalid(
                            &key,
                            format!(
                                "must be at least 1, got {n} (Kata reads 0 as its default and a \
                                 negative count as \"all host CPUs\"; sandnet needs the number)"
                            ),
                        ));
                    }
                    if n > i64::from(MAX_VCPUS) {
                        return Err(
                            self.invalid(&key, format!("must be at most {MAX_VCPUS}, got {n}"))
                        );
                    }
                    out.default_vcpus = n as u32;
                }
                "default_memory" => {
                    let n = self.integer(v, &key)?;
                    if n < i64::from(MIN_MEMORY_MIB) {
                        return Err(self.invalid(
                            &key,
                            format!("must be at least {MIN_MEMORY_MIB} (MiB), got {n}"),
                        ));
                    }
                    out.default_memory = u32::try_from(n).map_err(|_| {
                        self.invalid(&key, format!("must be at most {} (MiB), got {n}", u32::MAX))
                    })?;
                }
                "disable_vhost_net" => out.disable_vhost_net = self.boolean(v, &key)?,
                "reclaim_guest_freed_memory" => {
                    out.reclaim_guest_freed_memory = self.boolean(v, &key)?
                }
                "tcg_tb_size" => {
                    let n = self.integer(v, &key)?;
                    if !(0..=i64::from(MAX_TCG_TB_SIZE_MIB)).contains(&n) {
                        return Err(self.invalid(
                            &key,
                            format!("must be 0..={MAX_TCG_TB_SIZE_MIB} (MiB; 0: QEMU's default), got {n}"),
                        ));
                    }
                    out.tcg_tb_size = n as u32;
                }
                "rx_rate_limiter_max_rate" => out.rx_rate_limiter_max_rate = self.rate(v, &key)?,
                "tx_rate_limiter_max_rate" => out.tx_rate_limiter_max_rate = self.rate(v, &key)?,
                "hotplug_ports" => {
                    let n = self.integer(v, &key)?;
                    if !(0..=i64::from(MAX_HOTPLUG_PORTS)).contains(&n) {
                        return Err(
                            self.invalid(&key, format!("must be 0..={MAX_HOTPLUG_PORTS}, got {n}"))
                        );
                    }
                    out.hotplug_ports = n as u32;
                }
                "shared_fs" => {
                    let s = self.string(v, &key)?;
                    out.shared_fs = crate::shared::SharedFs::parse(s).ok_or_else(|| {
                        self.invalid(
                            &key,
                            format!("must be \"virtio-9p\", \"virtio-fs\" or \"none\", got {s:?}"),
                        )
                    })?;
                }
                "accel" => {
                    out.accel = self
                        .string(v, &key)?
                        .parse()
                        .map_err(|e| self.invalid(&key, e))?
                }
                _ => self.ignore(key, k, QEMU_KEYS, KATA_QEMU_KEYS),
            }
        }
        Ok(())
    }

    pub(super) fn cni(&mut self, t: &Table, out: &mut CniDirs) -> Result<(), ConfigError> {
        if t.contains_key("bin_dir") && t.contains_key("bin_dirs") {
            return Err(self.invalid(
                "cni.bin_dirs",
                "cni.bin_dir and cni.bin_dirs are the same setting; give only one".into(),
            ));
        }
        for (k, v) in t {
            let key = format!("cni.{k}");
            match k.as_str() {
                "conf_dir" => {
                    if let Some(p) = self.path(v, &key)? {
                        out.conf_dir = p;
                    }
                }
                "cache_dir" => {
                    if let Some(p) = self.path(v, &key)? {
                        out.cache_dir = p;
                    }
                }
                "timeout" => {
                    let secs = match v {
                        Value::Integer(n) => *n as f64,
                        Value::Float(f) => *f,
                        other => return Err(self.wrong_type(&key, "a number of seconds", other)),
                    };
                    if !(secs > 0.0 && secs <= 3600.0) {
                        return Err(self.invalid(
                            &key,
                            format!("must be more than 0 and at most 3600 (seconds), got {secs}"),
                        ));
                    }
                    out.timeout = std::time::Duration::from_secs_f64(secs);
                }
                "bin_dir" | "bin_dirs" => match v {
                    Value::Array(items) => {
                        if items.is_empty() {
                            return Err(self.invalid(
                                &key,
                                "must name at least one directory (leave it out for the \
                                 defaults)"
                                    .into(),
                            ));
                        }
                        let mut dirs = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let item_key = format!("{key}[{i}]");
                            match self.path(item, &item_key)? {
                                Some(p) => dirs.push(p),
                                None => {
                                    return Err(self.invalid(&item_key, "is empty".into()));
                                }
                            }
                        }
                        out.bin_dirs = dirs;
                    }
                    Value::String(_) => {
                        if let Some(p) = self.path(v, &key)? {
                            out.bin_dirs = vec![p];
                        }
                    }
                    other => {
                        return Err(self.wrong_type(&key, "a string or an array of strings", other))
                    }
                },
                _ => self.ignore(key, k, CNI_KEYS, CONTAINERD_CNI_KEYS),
            }
        }
        Ok(())
    }

    /// Records an ignored key: a known foreign setting, or an unknown one (with a suggestion
    /// from `supported` when one is close).
    pub(super) fn ignore(
        &mut self,
        key: String,
        name: &str,
        supported: &[&'static str],
        known: &[&str],
    ) {
        let kind = if known.contains(&name) {
            WarningKind::NotUsed
        } else {
            WarningKind::Unknown {
                did_you_mean: supported
                    .iter()
                    .copied()
                    .filter(|s| edit_distance(s, name) <= 2)
                    .min_by_key(|s| edit_distance(s, name)),
            }
        };
        self.warn(key, kind);
    }

    pub(super) fn warn(&mut self, key: String, kind: WarningKind) {
        self.warnings.push(Warning { key, kind });
    }

    pub(super) fn table<'v>(&self, v: &'v Value, key: &str) -> Result<&'v Table, ConfigError> {
        v.as_table()
            .ok_or_else(|| self.wrong_type(key, "a table (section)", v))
    }

    pub(super) fn string<'v>(&self, v: &'v Value, key: &str) -> Result<&'v str, ConfigError> {
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    pub(super) fn boolean(&self, v: &Value, key: &str) -> Result<bool, ConfigError> {
        v.as_bool()
            .ok_or_else(|| self.wrong_type(key, "a boolean", v))
    }

    pub(super) fn integer(&self, v: &Value, key: &str) -> Result<i64, ConfigError> {
        v.as_integer()
            .ok_or_else(|| self.wrong_type(key, "an integer", v))
    }

    /// A rate in bits per second (Kata's `*_rate_limiter_max_rate`): 0 is no limit.
    pub(super) fn rate(&self, v: &Value, key: &str) -> Result<u64, ConfigError> {
        let n = self.integer(v, key)?;
        u64::try_from(n).map_err(|_| {
            self.invalid(
                key,
                format!("must be a rate in bits/s, 0 for no limit, got {n}"),
            )
        })
    }

    /// A path: `None` for the empty string ("the default"), an error unless absolute.
    pub(super) fn path(&self, v: &Value, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let s = self.string(v, key)?;
        if s.is_empty() {
            return Ok(None);
        }
        let p = PathBuf::from(s);
        if p.is_relative() {
            return Err(self.invalid(key, format!("must be an absolute path, got {s:?}")));
        }
        Ok(Some(p))
    }

    /// `kernel`: an absolute path, or the name of a kernel in the cache (`debian-cloud`).
    pub(super) fn kernel(&self, v: &Value, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let s = self.string(v, key)?;
        let name = !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if name {
            return Ok(Some(PathBuf::from(s)));
        }
        self.path(v, key).map_err(|_| {
            self.invalid(
                key,
                format!(
                    "must be an absolute path or a kernel name such as \"sandnet\" or \"debian-cloud\", got {s:?}"
                ),
            )
        })
    }

    pub(super) fn wrong_type(
        &self,
        key: &str,
        expected: &'static str,
        found: &Value,
    ) -> ConfigError {
        ConfigError::WrongType {
            origin: self.origin.to_string(),
            key: key.to_string(),
            expected,
            found: found.type_str(),
        }
    }

    pub(super) fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message,
        }
    }
}

/// A TOML parse error with the 1-based line and column of where it happened.
pub(super) fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (line, before[line_start..].chars().count() + 1)
        }
        None => (1, 1),
    };
    ConfigError::Syntax {
        origin: origin.to_string(),
        line,
        column,
        // toml puts "expected ..." on a second line; keep errors to one line.
        message: e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Levenshtein distance between two short ASCII-ish names.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
