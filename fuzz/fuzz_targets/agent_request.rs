//! Bytes from the host as the agent reads them on its port: ttrpc frames, the `Request`
//! envelope, the method's request message, then the decoding and validation each handler
//! runs before it touches netlink or files (`sandnet_agent_proto::requests`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_agent_proto::ttrpc::proto::{Codec, Message, MESSAGE_TYPE_REQUEST};
use sandnet_agent_proto::ttrpc::Request;
use sandnet_agent_proto::{agent, health, requests, sandnet};

fn handle(req: &Request) {
    let p = &req.payload;
    match (req.service.as_str(), req.method.as_str()) {
        ("grpc.AgentService", "UpdateInterface") => {
            if let Ok(r) = agent::UpdateInterfaceRequest::decode(p) {
                if let Ok(i) = requests::update_interface(&r) {
                    // What the agent accepted must encode and decode to the same thing.
                    let back = sandnet_agent_proto::convert::interface_to_proto(&i);
                    assert_eq!(
                        sandnet_agent_proto::convert::interface_from_proto(&back).as_ref(),
                        Ok(&i)
                    );
                }
            }
        }
        ("grpc.AgentService", "UpdateRoutes") => {
            if let Ok(r) = agent::UpdateRoutesRequest::decode(p) {
                if let Ok(routes) = requests::update_routes(&r) {
                    for rt in &routes {
                        let back = sandnet_agent_proto::convert::route_to_proto(rt);
                        assert_eq!(
                            sandnet_agent_proto::convert::route_from_proto(&back).as_ref(),
                            Ok(rt)
                        );
                    }
                }
            }
        }
        ("grpc.AgentService", "AddARPNeighbors") => {
            if let Ok(r) = agent::AddARPNeighborsRequest::decode(p) {
                let _ = requests::add_arp_neighbors(&r);
            }
        }
        ("grpc.AgentService", "CreateSandbox") => {
            if let Ok(r) = agent::CreateSandboxRequest::decode(p) {
                let _ = requests::create_sandbox(&r);
            }
        }
        ("grpc.AgentService", "ListInterfaces") => {
            let _ = agent::ListInterfacesRequest::decode(p);
        }
        ("grpc.AgentService", "ListRoutes") => {
            let _ = agent::ListRoutesRequest::decode(p);
        }
        ("grpc.Health", _) => {
            let _ = health::CheckRequest::decode(p);
        }
        ("sandnet.Exec", "Exec") => {
            let _ = sandnet::ExecRequest::decode(p);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    for frame in sandnet_fuzz::frames(data) {
        if frame.header.type_ != MESSAGE_TYPE_REQUEST {
            continue;
        }
        if let Ok(msg) = Message::<Request>::try_from(frame) {
            handle(&msg.payload);
        }
    }
});
