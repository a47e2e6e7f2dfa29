//! The QMP wire format without a socket: the byte stream cut into lines, and each line
//! classified as greeting, event or reply. [`crate::QmpClient`] reads through these, so they
//! can be tested (and fuzzed) on plain bytes.

use crate::error::{Result, VmError};
use serde_json::Value;

/// Longest QMP message accepted; a longer one (a confused or compromised QEMU) closes the
/// connection instead of growing the buffer without end.
pub const MAX_LINE: usize = 1 << 20;

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Event name (`DEVICE_DELETED`, `SHUTDOWN`, …).
    pub event: String,
    /// Its `data` member (`null` when absent).
    pub data: Value,
}

/// Bytes read so far, handed out one `\n`-terminated line at a time.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> LineBuffer {
        LineBuffer::default()
    }

    /// Appends bytes read from the socket. Fails when the unfinished line grows past
    /// [`MAX_LINE`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() - self.scanned > 0 && !self.buf[self.scanned..].contains(&b'\n') {
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return Err(VmError::QmpProtocol(format!(
                    "QMP line longer than {MAX_LINE} bytes"
                )));
            }
        }
        Ok(())
    }

    /// The next complete line, newline included.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let i = self.buf[self.scanned..].iter().position(|&b| b == b'\n')? + self.scanned;
        let line: Vec<u8> = self.buf.drain(..=i).collect();
        self.scanned = 0;
        Some(line)
    }

    /// Bytes held that do not end in a newline yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// What one line from QEMU is, once the greeting has been read.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    /// An asynchronous event.
    Event(QmpEvent),
    /// The reply to our command `id`: its `return` value, or the error's class and desc.
    Reply {
        /// The command id we sent.
        id: u64,
        /// `return`, or `(class, desc)` of `error`.
        reply: std::result::Result<Value, (String, String)>,
    },
    /// Valid JSON that is neither an event nor a reply carrying one of our ids.
    Unmatched(Value),
    /// Not JSON.
    Unparsable,
}

/// Classifies one line.
pub fn parse_message(line: &[u8]) -> QmpMessage {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return QmpMessage::Unparsable;
    };
    if let Some(ev) = v.get("event").and_then(Value::as_str) {
        return QmpMessage::Event(QmpEvent {
            event: ev.to_string(),
            data: v.get("data").cloned().unwrap_or(Value::Null),
        });
    }
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return QmpMessage::Unmatched(v);
    };
    let reply = if let Some(r) = v.get("return") {
        Ok(r.clone())
    } else if let Some(e) = v.get("error") {
        let s = |k| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Err((s("class"), s("desc")))
    } else {
        Err(("ProtocolError".into(), format!("unexpected reply {v}")))
    };
    QmpMessage::Reply { id, reply }
}

/// Checks the first line QEMU sends (`{"QMP": {...}}`) and returns it.
pub fn parse_greeting(line: &[u8]) -> Result<Value> {
    let greeting: Value = serde_json::from_slice(line)
        .map_err(|e| VmError::QmpProtocol(format!("bad greeting: {e}")))?;
    if greeting.get("QMP").is_none() {
        return Err(VmError::QmpProtocol(format!(
            "not a QMP greeting: {greeting}"
        )));
    }
    Ok(greeting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_across_chunks() {
        let mut b = LineBuffer::new();
        b.push(b"{\"QMP\": {}}\n{\"ret").unwrap();
        assert_eq!(b.next_line().unwrap(), b"{\"QMP\": {}}\n");
        assert_eq!(b.next_line(), None);
        b.push(b"urn\": {}, \"id\": 3}\n{\"event\": \"STOP\"}\n")
            .unwrap();
        let l = b.next_line().unwrap();
        assert_eq!(
            parse_message(&l),
            QmpMessage::Reply {
                id: 3,
                reply: Ok(json!({}))
            }
        );
        let l = b.next_line().unwrap();
        assert_eq!(
            parse_message(&l),
            QmpMessage::Event(QmpEvent {
                event: "STOP".into(),
                data: Value::Null
            })
        );
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let mut b = LineBuffer::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut failed = false;
        for _ in 0..17 {
            if b.push(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn errors_and_strangers() {
        let m = parse_message(br#"{"error": {"class": "GenericError", "desc": "no"}, "id": 1}"#);
        assert_eq!(
            m,
            QmpMessage::Reply {
                id: 1,
                reply: Err(("GenericError".into(), "no".into()))
            }
        );
        assert!(matches!(
            parse_message(br#"{"return": {}}"#),
            QmpMessage::Unmatched(_)
        ));
        assert_eq!(parse_message(b"\xff"), QmpMessage::Unparsable);
        assert!(parse_greeting(br#"{"QMP": {"version": {}}}"#).is_ok());
        let e = parse_greeting(br#"{"return": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a QMP greeting"), "{e}");
    }
}
