//! watch: what following a cluster decides — the view the watch streams keep current
//! (`view`), what each change can affect (`affected`), and when coalesced changes run, over
//! which scope (`pending`).

pub mod affected;
pub mod handover;
pub mod pending;
pub mod view;

#[cfg(test)]
mod tests;
