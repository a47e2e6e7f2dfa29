//! Bytes from QEMU's monitor as the QMP client reads them: cut into chunks as the socket
//! might deliver them (the first byte sets the chunk size), split into lines, the first
//! checked as the greeting and the rest classified as events and replies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_vm::qmp_wire::{parse_greeting, parse_message, LineBuffer, QmpMessage};

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let mut buf = LineBuffer::new();
    let mut greeted = false;
    let mut total = 0;
    for chunk in rest.chunks(usize::from(size) + 1) {
        if buf.push(chunk).is_err() {
            return;
        }
        while let Some(line) = buf.next_line() {
            assert_eq!(line.last(), Some(&b'\n'));
            total += line.len();
            if !greeted {
                greeted = parse_greeting(&line).is_ok();
                continue;
            }
            if let QmpMessage::Event(ev) = parse_message(&line) {
                assert!(!ev.event.is_empty() || line.windows(2).any(|w| w == b"\"\""));
            }
        }
    }
    // Nothing is lost or invented: every byte is in a line or still pending.
    assert_eq!(total + buf.pending(), rest.len());
});
