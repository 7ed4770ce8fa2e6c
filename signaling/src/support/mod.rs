//! The support desk: learners ask for help, agents on duty take them into private rooms.
//!
//! - [`routing`]: who takes which request (pure, table-tested).
//! - [`desk`]: the desk's state and the messages it sends.

pub(crate) mod desk;
pub(crate) mod routing;
