//! Generates the protobuf messages and async ttrpc client/server code from `protos/`
//! into `OUT_DIR` with the pure-Rust parser (no `protoc` needed).

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() {
    let protos = [
        "protos/types.proto",
        "protos/oci.proto",
        "protos/health.proto",
        "protos/agent.proto",
        "protos/sandnet.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(protos)
        .include("protos")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generating the agent protocol code from protos/");

    // The generated files carry inner attributes, so they cannot be `include!`d; declare
    // them as modules by absolute path instead.
    let mut mods = String::new();
    for m in [
        "types",
        "oci",
        "health",
        "agent",
        "sandnet",
        "health_ttrpc",
        "agent_ttrpc",
        "sandnet_ttrpc",
    ] {
        let path = out_dir.join(format!("{m}.rs"));
        mods.push_str(&format!(
            "#[path = {:?}]\npub mod {m};\n",
            path.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("modules.rs"), mods).expect("writing modules.rs");
}
