//! The identifiers every stage passes along: target-group ARNs, security-group ids and binding
//! ids. Each is text shared behind an `Arc<str>`, so a copy is a reference count rather than an
//! allocation, and it is checked once where it enters (a manifest, a tag, an event) instead of
//! being re-parsed by each stage that needs a part of it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Shared text with the traits every id needs. Equality, order and hashing are the text's, so
/// a map keyed by an id can be searched with a `&str` (`Borrow<str>`).
macro_rules! shared_text {
    ($name:ident) => {
        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
            }
        }
        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                *self.0 == **other
            }
        }
        impl From<&$name> for $name {
            fn from(id: &$name) -> $name {
                id.clone()
            }
        }
        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.to_string()
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Text AWS or our own records gave us, taken as it is.
macro_rules! from_text {
    ($name:ident) => {
        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(Arc::from(text))
            }
        }
        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(Arc::from(text))
            }
        }
        impl From<&String> for $name {
            fn from(text: &String) -> Self {
                Self(Arc::from(text.as_str()))
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::from)
            }
        }
    };
}

/// A target group's ARN, `arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetGroupArn(Arc<str>);
shared_text!(TargetGroupArn);
from_text!(TargetGroupArn);

impl TargetGroupArn {
    /// Checks the shape of an ARN a person wrote (a manifest's `targetGroupARN`).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(6, ':');
        let ok = parts.next() == Some("arn")
            && parts.next().is_some_and(|p| !p.is_empty())
            && parts.next() == Some("elasticloadbalancing")
            && parts.next().is_some_and(|r| !r.is_empty())
            && parts.next().is_some_and(|a| !a.is_empty())
            && parts.next().is_some_and(|resource| {
                let mut tail = resource.split('/');
                tail.next() == Some("targetgroup")
                    && tail.next().is_some_and(|n| !n.is_empty())
                    && tail.next().is_some_and(|i| !i.is_empty())
                    && tail.next().is_none()
            });
        ok.then(|| Self::from(text))
    }

    /// `targetgroup/<name>/<id>`, which is what people recognise.
    pub fn short_name(&self) -> &str {
        self.0.rsplit_once(':').map_or(&self.0, |(_, tail)| tail)
    }

    /// `<name>`, the part a binding's tags and `targetGroupName` refer to.
    pub fn name(&self) -> Option<&str> {
        self.short_name()
            .strip_prefix("targetgroup/")
            .and_then(|rest| rest.split('/').next())
    }
}

/// An EC2 security group's id, `sg-…`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecurityGroupId(Arc<str>);
shared_text!(SecurityGroupId);
from_text!(SecurityGroupId);

/// Where a binding was declared; also its stable identity in plans and ownership records.
///
/// The text is the display form, `tgb/<namespace>/<name>` or `tags/<target group name>`; the
/// second field is where a resource's namespace ends in it (0 for tags), so that reading the
/// parts and sorting (resources first, then by their parts, as people list them) never scans.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BindingId(Arc<str>, u32);
shared_text!(BindingId);

/// What a [`BindingId`] names, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BindingSource<'a> {
    /// A `TargetGroupBinding` resource.
    Resource { namespace: &'a str, name: &'a str },
    /// A target group that carries the binding tags.
    Tags { target_group: &'a str },
}

const RESOURCE_PREFIX: &str = "tgb/";
const TAGS_PREFIX: &str = "tags/";

impl BindingId {
    pub fn resource(namespace: &str, name: &str) -> Self {
        let text = format!("{RESOURCE_PREFIX}{namespace}/{name}");
        Self::resource_text(Arc::from(text), RESOURCE_PREFIX.len() + namespace.len())
    }

    pub fn tags(target_group: &str) -> Self {
        Self(Arc::from(format!("{TAGS_PREFIX}{target_group}")), 0)
    }

    fn resource_text(text: Arc<str>, namespace_end: usize) -> Self {
        // Kubernetes names are at most 253 bytes: the offset always fits.
        Self(text, u32::try_from(namespace_end).unwrap_or(u32::MAX))
    }

    /// Parses what `Display` writes (`tgb/<namespace>/<name>` or `tags/<target group name>`).
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(rest) = value.strip_prefix(RESOURCE_PREFIX) {
            let (namespace, name) = rest.split_once('/')?;
            if namespace.is_empty() || name.is_empty() || name.contains('/') {
                return None;
            }
            return Some(Self::resource_text(
                Arc::from(value),
                RESOURCE_PREFIX.len() + namespace.len(),
            ));
        }
        let name = value.strip_prefix(TAGS_PREFIX)?;
        (!name.is_empty()).then(|| Self(Arc::from(value), 0))
    }

    pub fn source(&self) -> BindingSource<'_> {
        let text = &*self.0;
        match self.1 as usize {
            0 => BindingSource::Tags {
                target_group: text.get(TAGS_PREFIX.len()..).unwrap_or_default(),
            },
            end => BindingSource::Resource {
                namespace: text.get(RESOURCE_PREFIX.len()..end).unwrap_or_default(),
                name: text.get(end + 1..).unwrap_or_default(),
            },
        }
    }

    pub fn is_resource(&self) -> bool {
        self.1 != 0
    }
}

impl Ord for BindingId {
    fn cmp(&self, other: &Self) -> Ordering {
        // Hot in every map keyed by binding: compare the parts in place.
        let (a, b) = (&*self.0, &*other.0);
        match (self.1 as usize, other.1 as usize) {
            // Same prefix: the rest decides, and that is the whole text's order.
            (0, 0) => a.cmp(b),
            (0, _) => Ordering::Greater,
            (_, 0) => Ordering::Less,
            (x, y) => a
                .get(..x)
                .cmp(&b.get(..y))
                .then_with(|| a.get(x..).cmp(&b.get(y..))),
        }
    }
}

impl PartialOrd for BindingId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The JSON form: `{"source": "resource", "namespace": …, "name": …}` or
/// `{"source": "tags", "target_group": …}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
enum BindingWire<'a> {
    Resource {
        #[serde(borrow)]
        namespace: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
    },
    Tags {
        #[serde(borrow)]
        target_group: std::borrow::Cow<'a, str>,
    },
}

impl Serialize for BindingId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.source() {
            BindingSource::Resource { namespace, name } => BindingWire::Resource {
                namespace: namespace.into(),
                name: name.into(),
            },
            BindingSource::Tags { target_group } => BindingWire::Tags {
                target_group: target_group.into(),
            },
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BindingId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let id = match BindingWire::deserialize(deserializer)? {
            BindingWire::Resource { namespace, name } => {
                if namespace.is_empty() || namespace.contains('/') || name.is_empty() {
                    return Err(D::Error::custom(format!(
                        "{namespace:?}/{name:?} is not a TargetGroupBinding's namespace and name"
                    )));
                }
                Self::resource(&namespace, &name)
            }
            BindingWire::Tags { target_group } => Self::tags(&target_group),
        };
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_id_round_trips_through_its_display_form() {
        for id in [
            BindingId::resource("default", "web"),
            BindingId::tags("tg-web"),
        ] {
            let shown = format!("{id}");
            assert_eq!(BindingId::parse(&shown), Some(id.clone()));
        }
        assert_eq!(BindingId::parse("tgb/only-namespace"), None);
        assert_eq!(BindingId::parse("other/x"), None);
    }

    #[test]
    fn a_binding_id_round_trips_through_json_in_its_tagged_form() {
        let id = BindingId::resource("team-a", "web");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(
            json,
            r#"{"source":"resource","namespace":"team-a","name":"web"}"#
        );
        assert_eq!(serde_json::from_str::<BindingId>(&json).unwrap(), id);
        let tags = BindingId::tags("tg-web");
        let json = serde_json::to_string(&tags).unwrap();
        assert_eq!(json, r#"{"source":"tags","target_group":"tg-web"}"#);
        assert_eq!(serde_json::from_str::<BindingId>(&json).unwrap(), tags);
    }

    #[test]
    fn a_binding_id_whose_namespace_holds_a_slash_is_refused_when_read() {
        let json = r#"{"source":"resource","namespace":"a/b","name":"web"}"#;
        assert!(serde_json::from_str::<BindingId>(json).is_err());
    }

    #[test]
    fn bindings_sort_resources_first_then_by_namespace_and_name() {
        let mut ids = [
            BindingId::tags("a"),
            BindingId::resource("a", "x"),
            BindingId::resource("a-b", "x"),
            BindingId::resource("a", "x-y"),
        ];
        ids.sort();
        let shown: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        assert_eq!(shown, ["tgb/a/x", "tgb/a/x-y", "tgb/a-b/x", "tags/a"]);
    }

    #[test]
    fn the_order_of_binding_ids_is_the_order_of_their_parts() {
        let ids = [
            BindingId::resource("a", "x"),
            BindingId::resource("a", "x-y"),
            BindingId::resource("a-b", "x"),
            BindingId::resource("ab", ""),
            BindingId::resource("a", "b/c"),
            BindingId::tags("a"),
            BindingId::tags("a-b"),
            BindingId::tags(""),
        ];
        for x in &ids {
            for y in &ids {
                assert_eq!(x.cmp(y), x.source().cmp(&y.source()), "{x} against {y}");
            }
        }
    }

    #[test]
    fn a_target_group_arn_is_parsed_only_in_its_full_shape() {
        let good = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123";
        let arn = TargetGroupArn::parse(good).unwrap();
        assert_eq!(arn.name(), Some("web"));
        assert_eq!(arn.short_name(), "targetgroup/web/0123");
        for bad in [
            "",
            "web",
            "arn:aws:elasticloadbalancing:us-west-2:123456789012:loadbalancer/app/web/1",
            "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web",
            "arn:aws:ec2:us-west-2:123456789012:targetgroup/web/1",
            "arn:aws:elasticloadbalancing::123456789012:targetgroup/web/1",
            "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/1/extra",
        ] {
            assert_eq!(TargetGroupArn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_id_is_found_in_a_map_by_its_text() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(SecurityGroupId::from("sg-1"), 1);
        assert_eq!(map.get("sg-1"), Some(&1));
        assert_eq!(SecurityGroupId::from("sg-1"), "sg-1");
    }
}
