//! How samples arrive: pushed with remote_write ([`remote_write`]) or pulled from targets
//! that cannot push ([`scrape`]).

pub mod remote_write;
pub mod scrape;
