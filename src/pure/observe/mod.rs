//! observe: each read of a run in two pure halves around it — what to read, worked out from
//! what is known so far, and what the answer means. The shell's gather step performs the reads
//! in between and decides nothing.
//!
//! A run reads in this order: the cluster, the account's target groups and the stored state
//! (always); then the target groups of bindings in other accounts ([`bindings`]); the VPCs of
//! ip targets ([`desired`]); the targets of every bound or recorded target group
//! ([`targets`]); and, when rules are managed, the network facts, load balancers and group
//! rules those rules depend on ([`rules`]).

pub mod bindings;
pub mod desired;
pub mod rules;
pub mod targets;

#[cfg(test)]
mod tests;
