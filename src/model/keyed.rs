//! A map whose values name their own key, written in JSON as the list of its values: the keys
//! (binding ids, which are structured) cannot be JSON object keys, and a reader gets each
//! entry whole. Reading it back rebuilds the map and refuses a key given twice.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt::Display;

/// A value that carries the key it is filed under.
pub trait Keyed {
    type Key: Ord + Clone + Display;
    fn key(&self) -> &Self::Key;
}

/// For `#[serde(with = "crate::model::keyed")]` on a `BTreeMap<K, V>` whose `V: Keyed<Key = K>`.
pub fn serialize<V, S>(map: &BTreeMap<V::Key, V>, serializer: S) -> Result<S::Ok, S::Error>
where
    V: Keyed + Serialize,
    S: Serializer,
{
    serializer.collect_seq(map.values())
}

pub fn deserialize<'de, V, D>(deserializer: D) -> Result<BTreeMap<V::Key, V>, D::Error>
where
    V: Keyed + Deserialize<'de>,
    D: Deserializer<'de>,
{
    let mut map = BTreeMap::new();
    for value in Vec::<V>::deserialize(deserializer)? {
        let key = value.key().clone();
        if map.insert(key.clone(), value).is_some() {
            return Err(D::Error::custom(format!("{key} is listed twice")));
        }
    }
    Ok(map)
}
