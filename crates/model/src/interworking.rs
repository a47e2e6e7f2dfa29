//! The interworking model: how a pod link is connected to something a VMM can open. Read by
//! the configuration, the command line and the host side; persisted in attach state.

use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The interworking model, parsed once from its configuration name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InterworkingModel {
    /// tap + tc ingress + u32 + mirred redirect each way.
    #[default]
    TcFilter,
    /// A bridge-mode macvtap on the link.
    Macvtap,
    /// Nothing connected.
    None,
}

impl InterworkingModel {
    /// Every model, in the order they are documented.
    pub const ALL: [InterworkingModel; 3] = [
        InterworkingModel::TcFilter,
        InterworkingModel::Macvtap,
        InterworkingModel::None,
    ];

    /// The model's configuration name.
    pub fn as_str(&self) -> &'static str {
        match self {
            InterworkingModel::TcFilter => "tcfilter",
            InterworkingModel::Macvtap => "macvtap",
            InterworkingModel::None => "none",
        }
    }
}

impl fmt::Display for InterworkingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for InterworkingModel {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<InterworkingModel, ModelError> {
        InterworkingModel::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ModelError::UnknownInterworkingModel(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in InterworkingModel::ALL {
            assert_eq!(m.as_str().parse::<InterworkingModel>().unwrap(), m);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        assert_eq!("tcfilter".parse(), Ok(InterworkingModel::TcFilter));
        let e = "bridged".parse::<InterworkingModel>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown interworking model \"bridged\" (expected tcfilter, macvtap or none)"
        );
        assert_eq!(InterworkingModel::default(), InterworkingModel::TcFilter);
        assert_eq!(format!("{:<9}|", InterworkingModel::None), "none     |");
    }
}
