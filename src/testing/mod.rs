//! testing: every port in memory ([`MemoryCloud`]) and faults between a run and any ports
//! ([`Faulty`]), for the crate's unit tests, the integration tests and the benchmark. Built
//! under `cfg(test)` and the `testing` feature only: the release binary never has it.

pub mod faults;
pub mod memory;

pub use faults::{Faults, Faulty};
pub use memory::{ANOTHER_RUN, MemoryCloud, target_group};

/// Runs a future to completion on a fresh single-threaded runtime (the unit tests' way in).
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// [`block_on`] with tokio's clock paused: time passes only when every task waits on it, at
/// once, so tests of what happens as time passes neither wait nor depend on the machine.
#[cfg(test)]
pub(crate) fn block_on_paused<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}
