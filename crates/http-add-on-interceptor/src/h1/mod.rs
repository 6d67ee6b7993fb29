//! The HTTP/1.1 codec: request heads parsed in place, bodies relayed byte for byte over pooled
//! upstream connections, in the connection's own task (no task hand-offs, no channels, no
//! per-request allocation on the common path).
//!
//! It serves HTTP/1.1 requests on the plain and the TLS listener, warm or cold (the hold runs
//! in the connection's task), static routes and placeholders, pod or Service addresses,
//! `Expect: 100-continue` (answered here) and upgrades (a tunnel). What happens to each
//! request is decided by [`crate::request`]; this module only reads and writes the wire.
//!
//! A connection starts on hyper instead when it begins with the HTTP/2 preface, and is left to
//! hyper's HTTP/1.1 server (with the bytes read so far) for requests whose shape the codec does
//! not relay: HTTP/1.0, absolute-form targets, repeated `Content-Length`, codings other than
//! `chunked`, bodies over 64 KiB, and routes whose backend speaks h2c.
//!
//! Jobs: [`conn`] (connection loop and reads), [`request`] (request head → plan, rewritten
//! head, local replies), [`exchange`] (one request's count, hold, attempts and relay),
//! [`response`] (response head rules), [`framing`] (body framing), [`rules`] (request head
//! rules), [`tunnel`] (upgrades).

mod conn;
mod exchange;
pub(crate) mod framing;
mod request;
pub(crate) mod response;
pub(crate) mod rules;
mod tunnel;

pub(crate) use conn::{Outcome, Prefixed, serve};
pub(crate) use exchange::connect;
#[cfg(test)]
pub(crate) use request::parse_request;
