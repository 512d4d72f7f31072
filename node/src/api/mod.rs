//! The node's API: one typed request per operation, each with its own reply type, and one
//! typed error whose kind survives the admin socket.
//!
//! Every caller (the CLI, the admin socket, tests) uses a [`Client`]: either an in-process
//! [`Node`] or a running daemon reached through `<data dir>/admin.sock`. Both run the same
//! [`Call::run`] of the same request, so a command is written once, and `--json` is the
//! serialized reply (documented in `docs/protocol.md`, "Admin socket").
//!
//! The model is iroh-blobs' `api`: a request declares its reply type; whether the store is
//! in-process or behind an RPC boundary is the client's business, never the caller's.

mod client;
mod requests;

pub use crate::error::{ApiError, ErrorKind};
pub use crate::progress::{Progress, ProgressEvent, ProgressSink};
pub use crate::{
    bundle::{PackOutcome, UnpackOutcome},
    export::ExportOutcome,
    fetch::GetOutcome,
};
pub(crate) use client::read_line;
pub use client::{Client, Frame, RemoteNode, ADMIN_SOCKET, MAX_FRAME_LINE};
pub(crate) use requests::require_absolute;
pub use requests::*;

use serde::{de::DeserializeOwned, Serialize};

use crate::node::Node;

/// A request to the node: what it carries, what it answers, and how a node runs it.
pub trait Call: Serialize + DeserializeOwned + Send + 'static + Into<Request> {
    /// What a successful call returns (also what `--json` prints).
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the request on `node`, reporting progress on long work.
    fn run(
        self,
        node: &Node,
        progress: Progress,
    ) -> impl std::future::Future<Output = Result<Self::Reply, ApiError>> + Send;
}

/// Runs `request` on `node`; the reply as JSON, for the admin socket.
pub async fn dispatch(
    node: &Node,
    request: Request,
    progress: Progress,
) -> Result<serde_json::Value, ApiError> {
    async fn reply<C: Call>(
        call: C,
        node: &Node,
        progress: Progress,
    ) -> Result<serde_json::Value, ApiError> {
        let value = call.run(node, progress).await?;
        serde_json::to_value(value).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("the node could not encode its answer: {e}"),
            )
        })
    }
    macro_rules! each_request {
        ($($variant:ident),* $(,)?) => {
            match request {
                $(Request::$variant(call) => reply(call, node, progress).await,)*
            }
        };
    }
    each_request!(
        Add,
        Import,
        List,
        Files,
        SetPin,
        NameSet,
        NameRm,
        Names,
        Get,
        Export,
        Verify,
        Remove,
        Gc,
        Providers,
        Peers,
        Stats,
        Status,
        MirrorAdd,
        MirrorRm,
        MirrorList,
        KeyGenerate,
        KeyImport,
        KeyList,
        KeyExport,
        Sign,
        Publish,
        Resolve,
        Pack,
        Unpack,
    )
}
