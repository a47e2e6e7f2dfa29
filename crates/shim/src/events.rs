//! Task events to containerd (through its publish binary), for one containerd namespace.

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::event::Event;
use containerd_shim_protos::ttrpc::context::Context;
use std::sync::Arc;

/// Where the shim's events go.
#[derive(Clone)]
pub struct Events {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl Events {
    /// Events for containerd namespace `namespace`.
    pub fn new(publisher: RemotePublisher, namespace: String) -> Events {
        Events {
            publisher: Arc::new(publisher),
            namespace,
        }
    }

    /// Publishes `ev` (a failure is logged: containerd also learns from Wait and State).
    pub async fn publish(&self, ev: impl Event + 'static) {
        let topic = ev.topic();
        if let Err(e) = self
            .publisher
            .publish(Context::default(), &topic, &self.namespace, Box::new(ev))
            .await
        {
            log::warn!("publish {topic}: {e}");
        }
    }
}
