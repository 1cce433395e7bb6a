//! Test support shared by the integration tests and the demo: real servers, no mocks.
#![allow(dead_code)]

pub mod events;
pub mod harness;
pub mod health;
pub mod kube_api;
pub mod moto;
pub mod throttle;
pub mod watching;
pub mod world;
