//! A minimal CRI client for the demo (what `crictl` does for the seed's flow), over
//! containerd's CRI socket: `cri SOCKET runp POD.json [HANDLER]` prints the pod id,
//! `cri SOCKET status ID` prints `state ip`, `cri SOCKET stopp ID`, `cri SOCKET rmp ID`;
//! containers: `cri SOCKET create POD CTR.json POD.json` prints the container id, `start
//! ID`, `logs ID` prints its CRI log's messages, `exec ID CMD…` runs ExecSync (its output
//! and exit code pass through), `stop ID [TIMEOUT]`, `rm ID`.
//! POD.json is crictl's pod config (`metadata` name/namespace/uid/attempt, `hostname`,
//! `log_directory`); CTR.json crictl's container config (`metadata.name`, `image.image`,
//! `command`, `args`, `log_path`).

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Endpoint, Uri};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn pod_config(path: &str) -> Result<PodSandboxConfig, Error> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let s = |p: &serde_json::Value| p.as_str().unwrap_or_default().to_string();
    let m = &v["metadata"];
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: s(&m["name"]),
            namespace: s(&m["namespace"]),
            uid: s(&m["uid"]),
            attempt: m["attempt"].as_u64().unwrap_or(0) as u32,
        }),
        hostname: s(&v["hostname"]),
        log_directory: s(&v["log_directory"]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    })
}

fn container_config(path: &str) -> Result<ContainerConfig, Error> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let s = |p: &serde_json::Value| p.as_str().unwrap_or_default().to_string();
    let list = |p: &serde_json::Value| -> Vec<String> {
        p.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: s(&v["metadata"]["name"]),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: s(&v["image"]["image"]),
            ..Default::default()
        }),
        command: list(&v["command"]),
        args: list(&v["args"]),
        log_path: s(&v["log_path"]),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    })
}

/// The messages of a CRI log file (`TIMESTAMP STREAM P|F MESSAGE` lines).
fn log_messages(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|m| format!("{m}\n"))
        .collect()
}

async fn run(args: &[String]) -> Result<(), Error> {
    let [sock, cmd, arg, rest @ ..] = args else {
        return Err(
            "usage: cri SOCKET runp POD.json [HANDLER] | status ID | stopp ID | rmp ID | create POD \
             CTR.json POD.json | start ID | logs ID | exec ID CMD… | stop ID [TIMEOUT] | rm ID"
                .into(),
        );
    };
    let sock = sock.clone();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await?;
    let mut c = RuntimeServiceClient::new(channel);
    match cmd.as_str() {
        "runp" => {
            let r = c
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod_config(arg)?),
                    runtime_handler: rest.first().cloned().unwrap_or_else(|| "sandnet".into()),
                })
                .await?;
            println!("{}", r.into_inner().pod_sandbox_id);
        }
        "status" => {
            let st = c
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: arg.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            let state = PodSandboxState::try_from(st.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?");
            println!("{state} {}", st.network.unwrap_or_default().ip);
        }
        "stopp" => {
            c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: arg.clone(),
            })
            .await?;
        }
        "rmp" => {
            c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: arg.clone(),
            })
            .await?;
        }
        "create" => {
            let [ctr, pod_json, ..] = rest else {
                return Err("usage: cri SOCKET create POD CTR.json POD.json".into());
            };
            let r = c
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: arg.clone(),
                    config: Some(container_config(ctr)?),
                    sandbox_config: Some(pod_config(pod_json)?),
                })
                .await?;
            println!("{}", r.into_inner().container_id);
        }
        "start" => {
            c.start_container(StartContainerRequest {
                container_id: arg.clone(),
            })
            .await?;
        }
        "logs" => {
            let st = c
                .container_status(ContainerStatusRequest {
                    container_id: arg.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            print!("{}", log_messages(&std::fs::read_to_string(&st.log_path)?));
        }
        "exec" => {
            let r = c
                .exec_sync(ExecSyncRequest {
                    container_id: arg.clone(),
                    cmd: rest.to_vec(),
                    timeout: 30,
                })
                .await?
                .into_inner();
            use std::io::Write;
            std::io::stdout().write_all(&r.stdout)?;
            std::io::stderr().write_all(&r.stderr)?;
            if r.exit_code != 0 {
                std::process::exit(r.exit_code);
            }
        }
        "stop" => {
            c.stop_container(StopContainerRequest {
                container_id: arg.clone(),
                timeout: rest.first().and_then(|t| t.parse().ok()).unwrap_or(10),
            })
            .await?;
        }
        "rm" => {
            c.remove_container(RemoveContainerRequest {
                container_id: arg.clone(),
            })
            .await?;
        }
        other => return Err(format!("unknown command {other:?}").into()),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("cri: {e}");
        std::process::exit(1);
    }
}
