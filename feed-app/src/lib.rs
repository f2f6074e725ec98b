//! The news-feed service nunchi watches, instrumented with the `prometheus` crate, and its
//! load generator.
//!
//! This crate has no functionality yet; it is filled by the feed service work.
