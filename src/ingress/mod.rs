//! The HTTP side: listeners, the server loop, routes, limits and signature
//! schemes. Hands accepted webhooks to the spool and nothing else.

pub mod access;
pub(crate) mod budget;
pub mod dedup_key;
pub mod handshake;
pub(crate) mod limits;
pub mod listeners;
pub mod presets;
pub mod respond;
pub mod response;
pub mod routes;
pub mod server;
pub mod slow_client;
pub(crate) mod tls;
pub mod verify;
