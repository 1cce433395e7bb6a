//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), as `nodeSelector` uses them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Checks operators and their values the way the API server would.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, req) in self.match_expressions.iter().enumerate() {
            let field = format!("matchExpressions[{i}]");
            match req.operator.as_str() {
                "In" | "NotIn" if req.values.is_empty() => {
                    return Err((field, format!("operator {} needs values", req.operator)));
                }
                "Exists" | "DoesNotExist" if !req.values.is_empty() => {
                    return Err((field, format!("operator {} takes no values", req.operator)));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err((
                        format!("{field}.operator"),
                        format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn a_selector_matches_labels_and_every_expression() {
        let selector = LabelSelector {
            match_labels: labels(&[("pool", "web")]),
            match_expressions: vec![
                expr("zone", "In", &["a", "b"]),
                expr("spot", "DoesNotExist", &[]),
                expr("tier", "NotIn", &["batch"]),
                expr("arch", "Exists", &[]),
            ],
        };
        let cases = [
            (
                labels(&[("pool", "web"), ("zone", "a"), ("arch", "arm64")]),
                true,
            ),
            (
                labels(&[("pool", "web"), ("zone", "c"), ("arch", "arm64")]),
                false,
            ),
            (
                labels(&[("pool", "api"), ("zone", "a"), ("arch", "arm64")]),
                false,
            ),
            (
                labels(&[("pool", "web"), ("zone", "a"), ("arch", "x"), ("spot", "1")]),
                false,
            ),
            (
                labels(&[
                    ("pool", "web"),
                    ("zone", "a"),
                    ("arch", "x"),
                    ("tier", "batch"),
                ]),
                false,
            ),
            (labels(&[("pool", "web"), ("zone", "a")]), false),
        ];
        for (labels, expected) in cases {
            assert_eq!(selector.matches(&labels), expected, "{labels:?}");
        }
    }

    #[test]
    fn an_empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn a_selector_with_an_unknown_operator_or_missing_values_is_invalid() {
        for bad in [
            expr("k", "Equals", &["v"]),
            expr("k", "In", &[]),
            expr("k", "Exists", &["v"]),
        ] {
            let selector = LabelSelector {
                match_expressions: vec![bad],
                ..Default::default()
            };
            assert!(selector.validate().is_err());
        }
    }
}
