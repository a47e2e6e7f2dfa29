//! `sandnet-tap`: the CNI plugin binary. Reads `CNI_*` from the environment and the
//! configuration from stdin, writes the result or the CNI error object to stdout.

use sandnet_tap::error::PluginError;
use sandnet_tap::protocol::env::Env;
use sandnet_tap::protocol::output::emit;
use std::io::Read;

fn main() {
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(PluginError::io("reading", "stdin"));
    let version = sandnet_tap::error_version(&stdin);
    let outcome = read.and_then(|_| {
        let env = Env::from_vars(|k| std::env::var(k).ok())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PluginError::io("starting", "the tokio runtime"))?;
        rt.block_on(sandnet_tap::run(&env, &stdin))
    });
    if let Err(e) = &outcome {
        eprintln!("sandnet-tap: {e}");
    }
    let status = emit(&mut std::io::stdout(), &version, &outcome);
    std::process::exit(status);
}
