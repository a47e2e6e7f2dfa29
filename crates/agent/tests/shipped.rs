//! The agent as shipped (built without the `hostile` feature) has no hostile mode: its
//! `--hostile` flag is an unknown argument, so a misconfigured host cannot switch it on.
#![cfg(not(feature = "hostile"))]

#[test]
fn the_shipped_agent_rejects_hostile() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sandnet-agent"))
        .args([
            "--hostile",
            "names",
            "--listen",
            "unix:/nonexistent/agent.sock",
        ])
        .output()
        .expect("run sandnet-agent");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted --hostile: {err}");
    assert!(err.contains("unexpected argument '--hostile'"), "{err}");
}
