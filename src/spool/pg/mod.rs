//! The spool on PostgreSQL, shared by several hookd nodes: the backend
//! [`Spool`](super::Spool) and [`Admin`](super::Admin) use when the config
//! gives `[spool] url`. Same promises as the SQLite spool (durable before
//! 202, at-least-once, `ordered` in order), across nodes: claims lock due
//! rows `FOR UPDATE SKIP LOCKED`, every lease carries a generation that
//! fences its finish, lease expiry is the database's clock, depth is
//! counted per node. bench/pg/DESIGN.md has the reasoning and the figures.
//!
//! Files: `schema.sql` + `schema.rs` (layout, migrations under an advisory
//! lock), `admin.rs` (the admin CLI's side).

pub(crate) mod admin;
pub(crate) mod schema;
