//! What EC2 told us about where targets' traffic lands, as plain values. The EC2 adapter
//! fills these; desire reads them.

use crate::model::SecurityGroupId;
use foldhash::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A network interface and the security groups attached to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eni {
    pub id: String,
    pub groups: Vec<SecurityGroupId>,
}

/// Where targets' traffic lands, as read from EC2. An interface is shared by all its addresses.
#[derive(Debug, Clone, Default)]
pub struct NetworkFacts {
    /// The primary interface (device index 0) of each instance. Hashed: every target of a
    /// run is looked up here, in no particular order.
    pub primary_eni: HashMap<String, Arc<Eni>>,
    /// The interface holding each private IP: node interfaces, secondary and branch ones.
    /// Keyed by the targets' own shared addresses where they asked for one, so that tens of
    /// thousands of addresses are not copied once more.
    pub eni_by_ip: HashMap<Arc<str>, Arc<Eni>>,
    /// Tags of the groups on those interfaces, to choose among several.
    pub group_tags: BTreeMap<SecurityGroupId, BTreeMap<String, String>>,
}

/// The addresses the targets asked about, to key [`NetworkFacts::eni_by_ip`] by the targets'
/// own shared copies rather than new ones.
pub struct AskedAddresses(HashSet<Arc<str>>);

impl AskedAddresses {
    pub fn new(ips: &[Arc<str>]) -> Self {
        Self(ips.iter().cloned().collect())
    }

    /// `address` as the targets hold it, or a copy of its own when none asked for it.
    pub fn key(&self, address: &str) -> Arc<str> {
        self.0
            .get(address)
            .cloned()
            .unwrap_or_else(|| address.into())
    }
}
