//! Helpers shared by the fuzz targets.

use sandnet_agent_proto::ttrpc::proto::GenMessage;

/// Cuts `data` into ttrpc frames with ttrpc's own reader (10-byte header, then the payload),
/// as a connection would read them, until the bytes run out or a frame is refused.
pub fn frames(mut data: &[u8]) -> Vec<GenMessage> {
    let mut out = Vec::new();
    // Reading from a byte slice never waits, so a trivial executor is enough.
    while let Ok(msg) = futures::executor::block_on(GenMessage::read_from(&mut data)) {
        out.push(msg);
    }
    out
}
