//! The control socket (`STATE_DIR/control.sock`): how the CLI talks to the running daemon.
//!
//! - [`proto`]: the wire types, apart from every domain type;
//! - [`server`]: the daemon side: binding (mode 0600 in the 0700 state directory), peer
//!   credentials (only the daemon's own uid), framing and time limits; it hands each request to a
//!   [`server::Service`] (the daemon);
//! - [`client`]: the CLI side: it trusts only a daemon of its own uid, checked before anything
//!   is sent.

pub(crate) mod client;
pub(crate) mod proto;
pub(crate) mod server;
