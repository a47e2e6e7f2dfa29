//! Bytes from the agent as the host's client reads them: ttrpc frames, the `Response`
//! envelope and its status, then the reply message of the call the stream id stands for,
//! decoded into the model as `AgentClient` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_agent_proto::client::{
    interface_reply, interfaces_reply, routes_reply, status_or_transport,
};
use sandnet_agent_proto::ttrpc::proto::{Codec, ResponseInit, MESSAGE_TYPE_RESPONSE};
use sandnet_agent_proto::ttrpc::{Error, Response};
use sandnet_agent_proto::{agent, health, sandnet, types};

fuzz_target!(|data: &[u8]| {
    for frame in sandnet_fuzz::frames(data) {
        if frame.header.type_ != MESSAGE_TYPE_RESPONSE {
            continue;
        }
        let Ok(res) = Response::decode(&frame.payload) else {
            continue;
        };
        if let Some(status) = res.non_ok() {
            // The error line the caller would print.
            let _ = status_or_transport("Fuzz", Error::RpcStatus(status)).to_string();
            continue;
        }
        let p = &res.payload;
        match frame.header.stream_id % 7 {
            0 => {
                if let Ok(r) = types::Interface::decode(p) {
                    let _ = interface_reply(&r);
                }
            }
            1 => {
                if let Ok(r) = agent::Interfaces::decode(p) {
                    let _ = interfaces_reply(&r);
                }
            }
            2 => {
                if let Ok(r) = agent::Routes::decode(p) {
                    let _ = routes_reply("ListRoutes", &r);
                }
            }
            3 => {
                let _ = health::HealthCheckResponse::decode(p);
            }
            4 => {
                let _ = health::VersionCheckResponse::decode(p);
            }
            5 => {
                let _ = sandnet::ExecResponse::decode(p);
            }
            _ => {
                let _ = sandnet_agent_proto::protobuf::well_known_types::empty::Empty::decode(p);
            }
        }
    }
});
