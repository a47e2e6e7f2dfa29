//! The keys sandnet reads, and the ones it knows from Kata and containerd and ignores.

/// Top-level sections sandnet reads.
pub(super) const SECTIONS: &[&str] = &["runtime", "hypervisor", "cni", "netmon", "factory"];
/// Top-level sections of Kata's file (current and 1.x) that sandnet ignores.
pub(super) const KATA_SECTIONS: &[&str] = &["agent", "proxy", "shim", "image"];
/// `[factory]` keys sandnet reads.
pub(super) const FACTORY_KEYS: &[&str] = &["vm_cache_number"];
/// `[factory]` keys of Kata's file that sandnet ignores (no VM templating; the cache is
/// served from the state root).
pub(super) const KATA_FACTORY_KEYS: &[&str] =
    &["enable_template", "template_path", "vm_cache_endpoint"];
/// `[netmon]` keys sandnet reads (`enable_netmon` is Kata 1.x's spelling of `enable`).
pub(super) const NETMON_KEYS: &[&str] = &["enable", "enable_netmon"];
/// `[netmon]` keys of Kata 1.x's file that sandnet ignores (the monitor is built in).
pub(super) const KATA_NETMON_KEYS: &[&str] = &["path", "enable_debug"];

/// `[runtime]` keys sandnet reads.
pub(super) const RUNTIME_KEYS: &[&str] = &[
    "internetworking_model",
    "disable_new_netns",
    "hotplug_network",
    "guest_spoofing",
];
/// `[runtime]` keys of Kata's file that sandnet ignores.
pub(super) const KATA_RUNTIME_KEYS: &[&str] = &[
    "enable_debug",
    "disable_guest_seccomp",
    "enable_vcpus_pinning",
    "guest_selinux_label",
    "enable_tracing",
    "jaeger_endpoint",
    "jaeger_user",
    "jaeger_password",
    "sandbox_cgroup_only",
    "static_sandbox_resource_mgmt",
    "sandbox_bind_mounts",
    "vfio_mode",
    "disable_guest_empty_dir",
    "experimental",
    "enable_pprof",
    "create_container_timeout",
    "dan_conf",
    "enable_cpu_quota",
    "enable_cgroup_swap_control",
    "enable_metrics",
    "use_vsock",
    "name",
    "hypervisor_name",
    "agent_name",
    "log_level",
];

/// `[hypervisor.qemu]` keys sandnet reads.
pub(super) const QEMU_KEYS: &[&str] = &[
    "path",
    "kernel",
    "initrd",
    "machine_type",
    "kernel_params",
    "default_vcpus",
    "default_memory",
    "disable_vhost_net",
    "hotplug_ports",
    "accel",
    "shared_fs",
    "reclaim_guest_freed_memory",
    "tcg_tb_size",
    "rx_rate_limiter_max_rate",
    "tx_rate_limiter_max_rate",
];
/// `[hypervisor.qemu]` keys of Kata's file that sandnet ignores.
pub(super) const KATA_QEMU_KEYS: &[&str] = &[
    "image",
    "rootfs_type",
    "confidential_guest",
    "sev_snp_guest",
    "rootless",
    "enable_annotations",
    "valid_hypervisor_paths",
    "firmware",
    "firmware_volume",
    "machine_accelerators",
    "seccompsandbox",
    "cpu_features",
    "default_maxvcpus",
    "default_bridges",
    "memory_slots",
    "default_maxmemory",
    "memory_offset",
    "enable_virtio_mem",
    "disable_block_device_use",
    "virtio_fs_daemon",
    "valid_virtio_fs_daemon_paths",
    "virtio_fs_cache_size",
    "virtio_fs_queue_size",
    "virtio_fs_extra_args",
    "virtio_fs_cache",
    "virtio_fs_inode_file_handles",
    "block_device_driver",
    "block_device_aio",
    "block_device_cache_set",
    "block_device_cache_direct",
    "block_device_cache_noflush",
    "enable_iothreads",
    "enable_mem_prealloc",
    "enable_hugepages",
    "enable_vhost_user_store",
    "vhost_user_store_path",
    "enable_iommu",
    "enable_iommu_platform",
    "valid_vhost_user_store_paths",
    "vhost_user_reconnect_timeout_sec",
    "file_mem_backend",
    "valid_file_mem_backends",
    "pflashes",
    "enable_debug",
    "extra_monitor_socket",
    "disable_nesting_checks",
    "msize_9p",
    "disable_image_nvdimm",
    "hot_plug_vfio",
    "cold_plug_vfio",
    "pcie_root_port",
    "entropy_source",
    "valid_entropy_sources",
    "guest_hook_path",
    "guest_memory_dump_path",
    "guest_memory_dump_paging",
    "enable_guest_swap",
    "use_legacy_serial",
    "disable_selinux",
    "disable_guest_selinux",
    "enable_swap",
    "use_vsock",
    "hotplug_vfio_on_root_bus",
    "enable_template",
    "kernel_verity_params",
    "ctlpath",
];

/// `[cni]` keys sandnet reads (`bin_dirs` is containerd 2's spelling of `bin_dir`).
pub(super) const CNI_KEYS: &[&str] = &["conf_dir", "bin_dir", "bin_dirs", "cache_dir", "timeout"];
/// Keys of containerd's CRI `cni` section that sandnet ignores.
pub(super) const CONTAINERD_CNI_KEYS: &[&str] = &[
    "max_conf_num",
    "conf_template",
    "ip_pref",
    "setup_serially",
    "use_internal_loopback",
    "network_plugin_setup_concurrency",
];
