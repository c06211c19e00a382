//! The service manager's protocol, and nothing about webhooks: notify
//! messages, inherited sockets, the fd store and the journal.

pub(crate) mod journal;
pub(crate) mod listen;
pub(crate) mod notify;
