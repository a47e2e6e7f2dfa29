//! Model `none`: nothing is connected; the endpoints are reported as they are, and no
//! state is kept.

use super::{
    AttachCx, AttachedEndpoint, DetachReport, Interworking, PlannedEndpoint, PreOpened, UndoStage,
};
use crate::endpoint::Endpoint;
use crate::error::Result;
use futures::future::BoxFuture;
use sandnet_model::InterworkingModel;
use sandnet_netlink::Netlink;

/// The `none` model.
pub struct NoInterworking;

impl Interworking for NoInterworking {
    fn model(&self) -> InterworkingModel {
        InterworkingModel::None
    }

    fn connects(&self) -> bool {
        false
    }

    fn tap_name(&self, _endpoint: &Endpoint) -> String {
        String::new()
    }

    fn attach_one<'a>(
        &'a self,
        _cx: &'a AttachCx<'a>,
        p: &'a PlannedEndpoint,
        _pre: PreOpened,
    ) -> BoxFuture<'a, Result<AttachedEndpoint>> {
        let a = AttachedEndpoint::unconnected(p.endpoint.clone(), self.model());
        Box::pin(async move { Ok(a) })
    }

    fn undo_one<'a>(
        &'a self,
        _nl: &'a Netlink,
        _p: &'a PlannedEndpoint,
        _stage: UndoStage,
        _report: &'a mut DetachReport,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
