//! Test support shared by the integration tests and the demo: real servers, no mocks.
#![allow(dead_code)]

pub mod events;
pub mod fleet;
pub mod harness;
pub mod health;
pub mod kube_api;
pub mod moto;
pub mod rate_meter;
pub mod throttle;
pub mod watching;
pub mod world;
