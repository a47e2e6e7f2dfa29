//! The network of a running sandbox, changed through its supervisor: list the guest's
//! interfaces and routes, hot-plug and unplug pod links, replace routes (Kata 1.x's
//! `kata-network` operations).

use crate::api::{unexpected, Sandbox};
use crate::control::{Request, Response};
use crate::error::Result;
use sandnet_model::{Interface, Route};
use std::time::Duration;

/// How long a hot plug or unplug may take end to end (QMP, guest driver, agent; an unplug
/// waits for the guest to let go of the device).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);

impl Sandbox {
    /// The guest's interfaces, as its agent lists them.
    pub async fn list_ifaces(&self) -> Result<Vec<Interface>> {
        match self
            .ask(&Request::ListIfaces, Duration::from_secs(30))
            .await?
        {
            Response::Interfaces { interfaces } => Ok(interfaces),
            other => Err(unexpected(self.id(), other)),
        }
    }

    /// The guest's routes, as its agent lists them.
    pub async fn list_routes(&self) -> Result<Vec<Route>> {
        match self
            .ask(&Request::ListRoutes, Duration::from_secs(30))
            .await?
        {
            Response::Routes { routes } => Ok(routes),
            other => Err(unexpected(self.id(), other)),
        }
    }

    /// Hot-plugs the pod link `link` into the guest; `want` overrides the addresses and
    /// MTU the guest interface gets (else the link's). Returns the interface as configured.
    pub async fn add_iface(&self, link: &str, want: Option<Interface>) -> Result<Interface> {
        let req = Request::AddIface {
            link: link.to_string(),
            want,
        };
        match self.ask(&req, CHANGE_TIMEOUT).await? {
            Response::Interface { interface } => Ok(interface),
            other => Err(unexpected(self.id(), other)),
        }
    }

    /// Unplugs the guest NIC of pod link `link`.
    pub async fn del_iface(&self, link: &str) -> Result<()> {
        let req = Request::DelIface {
            link: link.to_string(),
        };
        match self.ask(&req, CHANGE_TIMEOUT).await? {
            Response::Removed { .. } => Ok(()),
            other => Err(unexpected(self.id(), other)),
        }
    }

    /// Replaces the routes of the guest's NICs with `routes` (each must name one of them);
    /// returns the guest's routes afterwards.
    pub async fn update_routes(&self, routes: Vec<Route>) -> Result<Vec<Route>> {
        match self
            .ask(&Request::UpdateRoutes { routes }, Duration::from_secs(60))
            .await?
        {
            Response::Routes { routes } => Ok(routes),
            other => Err(unexpected(self.id(), other)),
        }
    }
}
