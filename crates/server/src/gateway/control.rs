//! Per-connection controls that the listener (`server.rs`) puts in each
//! request's extensions for the gateways.

use std::sync::Arc;

/// A handle on the TCP connection a request came on, in the request's
/// extensions: a streaming response (SSE) whose client stopped reading
/// uses it to drop the connection, since its body is no longer polled.
#[derive(Clone, Default)]
pub(crate) struct ConnectionControl(Arc<tokio::sync::Notify>);

impl ConnectionControl {
    /// Closes the connection now (what is buffered is dropped).
    pub(crate) fn abort(&self) {
        self.0.notify_one();
    }

    /// Resolves once [`ConnectionControl::abort`] was called (by the
    /// listener, which then drops the connection).
    pub(crate) async fn aborted(&self) {
        self.0.notified().await;
    }
}
