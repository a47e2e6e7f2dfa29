//! Which of the host's own network namespaces a namespace is: the type shared by the
//! guard in [`crate::netns`] and the error it raises ([`crate::HostError::HostNetns`]),
//! kept apart from both so that neither module depends on the other through it.

use std::fmt;

/// One of the namespaces that are not a pod's: attaching there would take over real NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostNetns {
    /// The namespace of PID 1: the host's.
    Init,
    /// The namespace the calling process runs in.
    Caller,
}

impl fmt::Display for HostNetns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostNetns::Init => "the host's network namespace (that of PID 1)",
            HostNetns::Caller => "the caller's own network namespace",
        })
    }
}
