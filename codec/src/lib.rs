//! Prometheus wire formats, in one place for every nunchi component.
//!
//! - [`remote_write`]: the Prometheus remote_write 1.0 protocol (protobuf messages from
//!   `prompb`, snappy block compression, the HTTP headers that go with them), both ways.
//! - [`remote_write_v2`]: remote_write 2.0 requests (`io.prometheus.write.v2.Request`),
//!   decoded and resolved into 1.0's messages.
//! - [`exposition`]: the text exposition format 0.0.4 that `/metrics` endpoints serve,
//!   parsed into [`nunchi_model::Series`].
//!
//! The agent encodes with this crate, the collector decodes with it, and the tests of both
//! check each other through it, so a change to the wire format is made once.

pub mod exposition;
pub mod remote_write;
pub mod remote_write_v2;
