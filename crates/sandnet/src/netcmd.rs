//! `sandnet net …`: the network of a running sandbox, as Kata 1.x's `kata-network` offered
//! it — list the guest's interfaces and routes, hot-plug and unplug pod links, replace
//! the routes. JSON in and out: Kata's interface/route objects, or sandnet's own model.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use sandnet_agent_proto::{KataInterface, KataRoute};
use sandnet_model::{printable, Interface, Route};
use sandnet_runtime::api::Runtime;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `sandnet net`.
#[derive(Args, Debug)]
pub struct NetArgs {
    #[command(subcommand)]
    cmd: NetCmd,
}

#[derive(Subcommand, Debug)]
enum NetCmd {
    /// The guest's interfaces.
    ListIfaces(ListArgs),
    /// The guest's routes.
    ListRoutes(ListArgs),
    /// Hot-plugs a link of the pod namespace into the guest.
    AddIface(IfaceArgs),
    /// Unplugs the guest NIC of a pod link.
    DelIface(IfaceArgs),
    /// Replaces the routes of the guest's NICs with the file's routes.
    UpdateRoutes(RoutesArgs),
}

/// The JSON shape printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// Kata's interface and route objects.
    Kata,
    /// sandnet's own model (as `scan --json` prints it).
    Sandnet,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Sandbox id.
    id: String,
    /// Print JSON (Kata's objects unless `sandnet` is given).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "kata")]
    json: Option<Shape>,
}

#[derive(Args, Debug)]
struct IfaceArgs {
    /// Sandbox id.
    id: String,
    /// The pod link.
    #[arg(long, conflicts_with = "file")]
    link: Option<String>,
    /// An interface object (Kata's or sandnet's) naming the link in `name`.
    #[arg(required_unless_present = "link")]
    file: Option<PathBuf>,
    /// Print the result as JSON (Kata's objects unless `sandnet` is given).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "kata")]
    json: Option<Shape>,
}

#[derive(Args, Debug)]
struct RoutesArgs {
    /// Sandbox id.
    id: String,
    /// A JSON array of route objects (Kata's or sandnet's).
    file: PathBuf,
    /// Print the guest's routes afterwards as JSON.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "kata")]
    json: Option<Shape>,
}

/// Runs `sandnet net …`.
pub async fn run(a: NetArgs, rt: &Runtime) -> Result<i32> {
    match a.cmd {
        NetCmd::ListIfaces(l) => {
            let ifaces = rt
                .get(&l.id)?
                .list_ifaces()
                .await
                .with_context(|| format!("list-ifaces {}", l.id))?;
            print_ifaces(&ifaces, l.json)?;
        }
        NetCmd::ListRoutes(l) => {
            let routes = rt
                .get(&l.id)?
                .list_routes()
                .await
                .with_context(|| format!("list-routes {}", l.id))?;
            print_routes(&routes, l.json)?;
        }
        NetCmd::AddIface(i) => {
            let (link, want) = iface_arg(&i)?;
            let got = rt
                .get(&i.id)?
                .add_iface(&link, want)
                .await
                .with_context(|| format!("add-iface {}", i.id))?;
            print_ifaces(std::slice::from_ref(&got), i.json)?;
        }
        NetCmd::DelIface(i) => {
            let (link, _) = iface_arg(&i)?;
            rt.get(&i.id)?
                .del_iface(&link)
                .await
                .with_context(|| format!("del-iface {}", i.id))?;
            if i.json.is_some() {
                println!("{}", serde_json::json!({ "removed": link }));
            } else {
                println!("removed {}", printable(&link));
            }
        }
        NetCmd::UpdateRoutes(r) => {
            let routes = read_routes(&r.file)?;
            let now = rt
                .get(&r.id)?
                .update_routes(routes)
                .await
                .with_context(|| format!("update-routes {}", r.id))?;
            print_routes(&now, r.json)?;
        }
    }
    Ok(0)
}

/// The link to plug or unplug, and what the guest interface should have.
fn iface_arg(a: &IfaceArgs) -> Result<(String, Option<Interface>)> {
    if let Some(l) = &a.link {
        return Ok((l.clone(), None));
    }
    let Some(f) = &a.file else {
        bail!("give --link NAME or an interface file");
    };
    let i = read_iface(f)?;
    if i.name.is_empty() {
        bail!(
            "{}: the interface object names no link (\"name\")",
            f.display()
        );
    }
    Ok((i.name.clone(), Some(i)))
}

fn read_json(path: &Path) -> Result<Value> {
    let b = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("{}: malformed JSON", path.display()))
}

/// Whether an object is in Kata's shape (its keys are Kata's, not the model's).
fn is_kata(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        ["IPAddresses", "hwAddr", "device", "dest", "gateway"]
            .iter()
            .any(|k| o.contains_key(*k))
            && !o.contains_key("addresses")
            && !o.contains_key("family")
    })
}

/// An interface object, Kata's or sandnet's.
pub fn parse_iface(v: Value) -> Result<Interface> {
    if is_kata(&v) {
        let k: KataInterface = serde_json::from_value(v).context("Kata interface object")?;
        Ok(k.to_model()?)
    } else {
        Ok(serde_json::from_value(v).context("interface object")?)
    }
}

/// A route list, Kata's objects or sandnet's (or a mix).
pub fn parse_routes(v: Value) -> Result<Vec<Route>> {
    let Value::Array(items) = v else {
        bail!("a JSON array of route objects is needed");
    };
    items
        .into_iter()
        .enumerate()
        .map(|(n, v)| {
            if is_kata(&v) {
                let k: KataRoute = serde_json::from_value(v)
                    .with_context(|| format!("route #{n}: Kata route object"))?;
                Ok(k.to_model().with_context(|| format!("route #{n}"))?)
            } else {
                serde_json::from_value(v).with_context(|| format!("route #{n}: route object"))
            }
        })
        .collect()
}

fn read_iface(path: &Path) -> Result<Interface> {
    parse_iface(read_json(path)?).with_context(|| path.display().to_string())
}

fn read_routes(path: &Path) -> Result<Vec<Route>> {
    parse_routes(read_json(path)?).with_context(|| path.display().to_string())
}

fn print_ifaces(ifaces: &[Interface], json: Option<Shape>) -> Result<()> {
    match json {
        Some(Shape::Kata) => {
            let k: Vec<_> = ifaces.iter().map(KataInterface::from_model).collect();
            println!("{}", serde_json::to_string_pretty(&k)?);
        }
        Some(Shape::Sandnet) => println!("{}", serde_json::to_string_pretty(ifaces)?),
        None => {
            for i in ifaces {
                println!("{}", crate::sandboxcmd::iface_line(i));
            }
        }
    }
    Ok(())
}

fn print_routes(routes: &[Route], json: Option<Shape>) -> Result<()> {
    match json {
        Some(Shape::Kata) => {
            let k: Vec<_> = routes.iter().map(KataRoute::from_model).collect();
            println!("{}", serde_json::to_string_pretty(&k)?);
        }
        Some(Shape::Sandnet) => println!("{}", serde_json::to_string_pretty(routes)?),
        None => {
            for r in routes {
                println!("{}", crate::sandboxcmd::route_line(r));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_parse_to_the_same_model() {
        let kata = serde_json::json!({"name":"eth1","device":"eth1","mtu":1400,
            "hwAddr":"02:00:00:00:00:07",
            "IPAddresses":[{"family":0,"address":"10.9.0.2","mask":"24"}]});
        let i = parse_iface(kata).unwrap();
        assert_eq!(i.name, "eth1");
        assert_eq!(i.mtu, 1400);
        assert_eq!(i.addresses[0].to_string(), "10.9.0.2/24");
        let model = serde_json::to_value(&i).unwrap();
        assert_eq!(parse_iface(model).unwrap(), i);
    }

    #[test]
    fn routes_in_either_shape_and_errors_name_the_entry() {
        let v = serde_json::json!([{"dest":"10.1.0.0/16","gateway":"10.9.0.1","device":"eth1"}]);
        let r = parse_routes(v).unwrap();
        assert_eq!(r[0].device, "eth1");
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(parse_routes(back).unwrap(), r);
        let bad = serde_json::json!([{"dest":"10.1.0.0/99","device":"eth1"}]);
        let e = format!("{:#}", parse_routes(bad).unwrap_err());
        assert!(e.contains("route #0"), "{e}");
        assert!(parse_routes(serde_json::json!({"dest":"x"})).is_err());
    }
}
