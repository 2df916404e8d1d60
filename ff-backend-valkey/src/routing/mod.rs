//! Routing requests to the right server: a standalone server is a
//! one-node topology serving every slot, a Valkey Cluster the topology its
//! nodes report — one code path for both.
//!
//! - [`slot`]: which hash slot a key belongs to;
//! - [`topology`]: which node serves each slot;
//! - [`redirect`]: what `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`… mean;
//! - [`router`]: sending a request to its slot's node and following the
//!   cluster's answers until a deadline;
//! - [`health`]: which nodes answered lately, and which just failed;
//! - [`acks`]: writes that replicas must acknowledge, on a connection of
//!   their own per node, one `WAIT` per group of them.

mod acks;
mod health;
pub(crate) mod redirect;
mod router;
pub(crate) mod slot;
pub(crate) mod topology;

pub(crate) use redirect::{NodeAddr, Redirect};
pub(crate) use router::{Retry, Router, Transaction};
