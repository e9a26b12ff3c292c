//! Quorum queues (`x-queue-type: quorum` on a cluster, issue 22): each is a Raft group over the
//! cluster's nodes ([`machine`]).

pub mod machine;
