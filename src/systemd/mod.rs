//! The service manager's protocol, and nothing about webhooks: notify
//! messages, inherited sockets, the fd store and the journal.

pub mod journal;
pub mod listen;
pub mod notify;
