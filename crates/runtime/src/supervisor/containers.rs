//! The supervisor's socket for container calls (`ctr.sock`): a ttrpc server whose
//! `grpc.AgentService` has only the container methods, each forwarded as it is (payload
//! untouched, status passed back) over the supervisor's one connection to the guest's
//! agent. The shim talks Kata's agent protocol to it; the network methods stay the
//! supervisor's own.

use async_trait::async_trait;
use sandnet_agent_proto::ttrpc::r#async::{Client, MethodHandler, Server, Service, TtrpcContext};
use sandnet_agent_proto::ttrpc::{self, Request, Response};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The `grpc.AgentService` methods forwarded to the guest.
pub const CONTAINER_METHODS: &[&str] = &[
    "CreateContainer",
    "StartContainer",
    "RemoveContainer",
    "ExecProcess",
    "SignalProcess",
    "WaitProcess",
    "StatsContainer",
    "WriteStdin",
    "ReadStdout",
    "ReadStderr",
    "CloseStdin",
    "TtyWinResize",
    "GetOOMEvent",
];

/// The `grpc.Health` methods forwarded (so a client can check the guest is there).
const HEALTH_METHODS: &[&str] = &["Check", "Version"];

struct Forward {
    agent: Client,
}

#[async_trait]
impl MethodHandler for Forward {
    async fn handler(&self, _ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        match self.agent.request(req).await {
            Ok(r) => Ok(r),
            // The agent's own status goes back as it is (the server would turn an error
            // into UNKNOWN).
            Err(ttrpc::Error::RpcStatus(s)) => {
                let mut r = Response::new();
                r.status = sandnet_agent_proto::protobuf::MessageField::some(s);
                Ok(r)
            }
            Err(e) => {
                let mut r = Response::new();
                r.status = sandnet_agent_proto::protobuf::MessageField::some(ttrpc::get_status(
                    ttrpc::Code::UNAVAILABLE,
                    format!("the guest agent: {e}"),
                ));
                Ok(r)
            }
        }
    }
}

fn service(agent: &Client, methods: &[&str]) -> Service {
    let mut m: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    for name in methods {
        m.insert(
            (*name).to_string(),
            Box::new(Forward {
                agent: agent.clone(),
            }),
        );
    }
    Service {
        methods: m,
        streams: HashMap::new(),
    }
}

/// Serves `path` (mode 0600) forwarding the container methods to `agent` until the
/// returned server is shut down or dropped.
pub async fn serve(path: &Path, agent: &Client) -> std::io::Result<Server> {
    let _ = std::fs::remove_file(path);
    let mut services = HashMap::new();
    services.insert(
        "grpc.AgentService".to_string(),
        service(agent, CONTAINER_METHODS),
    );
    services.insert("grpc.Health".to_string(), service(agent, HEALTH_METHODS));
    let mut server = Server::new()
        .bind(&format!("unix://{}", path.display()))
        .map_err(std::io::Error::other)?
        .register_service(services);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    server.start().await.map_err(std::io::Error::other)?;
    Ok(server)
}
