//! Placeholder: the I/O shell is being written.
use crate::api::{SfuConfig, SfuEvent, SfuHandle};
use tokio::sync::mpsc;

pub(crate) fn spawn(
    _config: SfuConfig,
) -> std::io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
    todo!("worker")
}
