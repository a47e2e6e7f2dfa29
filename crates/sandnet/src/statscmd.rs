//! `sandnet stats`: a running sandbox's network counters per NIC, as a table, JSON, or
//! the Prometheus text format for every running sandbox.

use crate::statsfmt;
use anyhow::{bail, Context, Result};
use clap::Args;
use sandnet_model::printable;
use sandnet_runtime::api::Runtime;
use sandnet_runtime::sandbox::{self, Health, SandboxState};
use sandnet_runtime::stats::{collect, SandboxStats};

/// Arguments of `sandnet stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Sandbox ids: one for the table or `--json`; any number with `--prometheus`, which
    /// without one shows every running sandbox of the state root.
    pub ids: Vec<String>,
    /// Print JSON.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the Prometheus text format.
    #[arg(long)]
    pub prometheus: bool,
}

/// `sandnet stats`.
pub async fn stats(a: StatsArgs, rt: &Runtime) -> Result<i32> {
    if a.prometheus {
        return prometheus(&a.ids, rt).await;
    }
    let [id] = a.ids.as_slice() else {
        bail!("stats: name one sandbox (or use --prometheus)");
    };
    let s = collect(rt.root(), id, true)
        .await
        .with_context(|| format!("stats of sandbox {id}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", statsfmt::table(&s));
    }
    Ok(0)
}

/// `sandnet stats --prometheus [ID…]`: sandboxes named must answer (else exit 1 after
/// printing the others); without names, sandboxes that are not running are left out and
/// one that fails is named on stderr.
async fn prometheus(ids: &[String], rt: &Runtime) -> Result<i32> {
    let named = !ids.is_empty();
    let ids = if named {
        ids.to_vec()
    } else {
        sandbox::list(rt.root())?
            .into_iter()
            .filter(|id| {
                SandboxState::load(rt.root(), id)
                    .is_ok_and(|s| s.health(rt.root()) == Health::Running)
            })
            .collect()
    };
    let mut all: Vec<SandboxStats> = Vec::new();
    let mut code = 0;
    for id in &ids {
        match collect(rt.root(), id, true).await {
            Ok(s) => {
                if let Some(e) = &s.guest_error {
                    eprintln!(
                        "sandnet: stats of sandbox {}: guest counters: {}",
                        printable(id),
                        printable(e)
                    );
                }
                all.push(s);
            }
            Err(e) => {
                eprintln!(
                    "sandnet: stats of sandbox {}: {}",
                    printable(id),
                    printable(&e.to_string())
                );
                if named {
                    code = 1;
                }
            }
        }
    }
    print!("{}", statsfmt::prometheus(&all));
    Ok(code)
}
