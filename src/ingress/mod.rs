//! The HTTP side: listeners, the server loop, routes, limits and signature
//! schemes. Hands accepted webhooks to the spool and nothing else.

pub(crate) mod access;
pub(crate) mod budget;
pub(crate) mod dedup_key;
pub(crate) mod handshake;
pub(crate) mod limits;
pub(crate) mod listeners;
pub(crate) mod presets;
pub(crate) mod respond;
pub(crate) mod response;
pub(crate) mod routes;
pub(crate) mod rules;
pub(crate) mod server;
pub(crate) mod slow_client;
pub(crate) mod tls;
pub(crate) mod verify;
