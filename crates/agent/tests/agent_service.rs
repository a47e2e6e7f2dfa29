//! The agent as a service: the real `sandnet-agent --listen` in a throwaway netns, driven
//! with `AgentClient` and with hand-made requests and frames. Health and version,
//! CreateSandbox, Exec, and bad requests that get error statuses while the agent keeps
//! serving. Needs root.

mod common;

use common::net::{iface, raw_client, route, ttrpc_ctx, MAC_A};
use common::AgentNs;
use sandnet_agent_proto::ttrpc::Code;
use sandnet_agent_proto::{agent, types};
use sandnet_model::{Dns, Neighbor, NeighborState, RouteScope};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version() {
    let env = AgentNs::new("health", &[]);
    let c = env.client().await;
    assert!(c.version().await.unwrap().starts_with("sandnet-agent"));
    // A client over an already-connected stream.
    let s = tokio::net::UnixStream::connect(&env.sock).await.unwrap();
    let c2 = sandnet_agent_proto::AgentClient::from_stream(s);
    c2.health_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sandbox_writes_resolv_conf_and_hostname_under_root() {
    let env = AgentNs::new("sandbox", &[]);
    let c = env.client().await;
    let dns = Dns {
        nameservers: vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        search: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    };
    for _ in 0..2 {
        c.create_sandbox("pod-a", &dns).await.unwrap();
    }
    let rc = std::fs::read_to_string(env.root().join("etc/resolv.conf")).unwrap();
    assert_eq!(
        Dns::from_lines(rc.lines()).unwrap(),
        dns,
        "resolv.conf was:\n{rc}"
    );
    assert_eq!(
        std::fs::read_to_string(env.root().join("etc/hostname")).unwrap(),
        "pod-a\n"
    );
    let e = c.create_sandbox("bad host name", &dns).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_output_and_exit_code_and_times_out() {
    let env = AgentNs::new("exec", &[]);
    let c = env.client().await;
    let args: Vec<String> = ["sh", "-c", "cat; echo out; echo err >&2; exit 3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = c
        .exec_with(&args, &["X=1".into()], b"in\n", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(o.exit_code, 3);
    assert_eq!(o.stdout, b"in\nout\n");
    assert_eq!(o.stderr, b"err\n");
    // It runs inside the agent's netns.
    let o = c
        .exec(
            &["ip".into(), "-o".into(), "link".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(o.exit_code, 0);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "only lo"
    );
    let t = std::time::Instant::now();
    let e = c
        .exec(&["sleep".into(), "30".into()], Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::DEADLINE_EXCEEDED), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let e = c
        .exec(&["no-such-command-sandnet".into()], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    c.health_check().await.unwrap();
}

fn code_of(e: &sandnet_agent_proto::ttrpc::Error) -> Code {
    match e {
        sandnet_agent_proto::ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_statuses_and_the_agent_keeps_serving() {
    let env = AgentNs::new(
        "bad",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
        ],
    );
    let c = env.client().await;

    // Unknown MAC, after the wait.
    let t = std::time::Instant::now();
    let e = c
        .update_interface(&iface("eth9", "02:99:99:99:99:99", 1500, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(500), "it waited");
    c.health_check().await.unwrap();

    // An address without a prefix (what the model cannot even express: raw message).
    let raw = raw_client(&env).await;
    let req = agent::UpdateInterfaceRequest {
        interface: Some(types::Interface {
            name: "eth0".into(),
            hwAddr: MAC_A.into(),
            mtu: 1500,
            IPAddresses: vec![types::IPAddress {
                address: "10.1.0.2".into(),
                mask: String::new(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let e = raw.update_interface(ttrpc_ctx(), &req).await.unwrap_err();
    assert_eq!(code_of(&e), Code::INVALID_ARGUMENT, "{e:?}");
    // No interface at all.
    let e = raw
        .update_interface(ttrpc_ctx(), &agent::UpdateInterfaceRequest::new())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::INVALID_ARGUMENT, "{e:?}");
    c.health_check().await.unwrap();

    // A route to an unknown device; nothing of the request is applied.
    let e = c
        .update_routes(&[
            route("10.7.0.0/16", None, "d0", RouteScope::Link, None),
            route("10.8.0.0/16", None, "nosuchdev", RouteScope::Link, None),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    assert!(!env.ip(&["route"]).contains("10.7.0.0"));
    // A neighbour on an unknown device.
    let e = c
        .add_arp_neighbors(&[Neighbor {
            ip: "10.1.0.1".parse().unwrap(),
            mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
            device: "nosuchdev".into(),
            state: NeighborState::Permanent,
            flags: 0,
        }])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    c.health_check().await.unwrap();

    // A malformed frame: a request whose payload is not an UpdateInterfaceRequest.
    let resp = raw_frame(
        &env,
        b"/grpc.AgentService",
        b"UpdateInterface",
        &[0xff; 7],
        None,
    )
    .await;
    assert_ne!(resp, Code::OK);
    // An oversized message (over ttrpc's 4 MiB limit).
    let big = vec![0u8; (4 << 20) + 1];
    let resp = raw_frame(&env, b"grpc.AgentService", b"UpdateInterface", &big, None).await;
    assert_eq!(resp, Code::INVALID_ARGUMENT);
    // A frame whose header says it is a response: the server must not die.
    let _ = raw_frame(&env, b"grpc.Health", b"Check", &[], Some(0x2)).await;
    // An unknown method.
    let resp = raw_frame(&env, b"grpc.AgentService", b"DestroySandbox", &[], None).await;
    assert_ne!(resp, Code::OK);

    c.health_check().await.unwrap();
    let fresh = env.client().await;
    fresh.health_check().await.unwrap();
}

/// Sends one hand-made ttrpc frame on a fresh connection and returns the status code
/// of the answer (`UNAVAILABLE` if the server closed the connection without one).
async fn raw_frame(
    env: &AgentNs,
    service: &[u8],
    method: &[u8],
    payload: &[u8],
    msg_type: Option<u8>,
) -> Code {
    use sandnet_agent_proto::protobuf::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&env.sock).await.unwrap();
    let body = if payload.len() > 4 << 20 {
        payload.to_vec()
    } else {
        let mut r = sandnet_agent_proto::ttrpc::Request::new();
        r.service = String::from_utf8_lossy(service)
            .trim_start_matches('/')
            .to_string();
        r.method = String::from_utf8_lossy(method).into_owned();
        r.payload = payload.to_vec();
        r.write_to_bytes().unwrap()
    };
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.push(msg_type.unwrap_or(0x1));
    frame.push(0);
    frame.extend_from_slice(&body);
    s.write_all(&frame).await.unwrap();
    let mut hdr = [0u8; 10];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut hdr)).await {
        Ok(Ok(_)) => {}
        _ => return Code::UNAVAILABLE,
    }
    let len = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    let r = sandnet_agent_proto::ttrpc::Response::parse_from_bytes(&buf).unwrap();
    r.status.code()
}
