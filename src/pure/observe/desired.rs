//! The desired targets of every resolved binding. ip targets need their VPC's CIDRs (one
//! batched read): IPs outside it are registered in zone `all`.

use super::bindings::Resolved;
use crate::Error;
use crate::model::TargetType;
use crate::model::cluster::ClusterSnapshot;
use crate::pure::binding::BindingError;
use crate::pure::desire::desire;
use crate::pure::desire::view::ClusterView;
use crate::pure::plan::BindingState;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// The VPCs whose CIDRs the ip bindings of this account need.
pub fn vpcs_to_read(resolved: &[Resolved]) -> Vec<String> {
    resolved
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|b| b.target_type == TargetType::Ip && b.binding.assume_role.is_none())
        .filter_map(|b| b.vpc_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Each binding with the targets it wants, or why it has none. A VPC we cannot see (another
/// account's) holds none of our pod IPs; a VPC read that failed fails the ip bindings alone.
pub fn desire_bindings(
    resolved: Vec<Resolved>,
    snapshot: &ClusterSnapshot,
    vpc_cidrs: &Result<BTreeMap<String, Vec<IpNet>>, Error>,
) -> Vec<BindingState> {
    let view = ClusterView::of(snapshot);
    resolved
        .into_iter()
        .map(|outcome| {
            let binding = match outcome {
                Ok(binding) => binding,
                Err((id, error)) => return BindingState::Failed { id, error },
            };
            let cidrs = match (vpc_cidrs, &binding.vpc_id) {
                _ if binding.target_type == TargetType::Instance => Ok(Some(&[][..])),
                _ if binding.binding.assume_role.is_some() => Ok(None),
                (Ok(map), Some(vpc)) => Ok(map.get(vpc).map(Vec::as_slice)),
                (Ok(_), None) => Ok(None),
                (Err(why), _) => Err(BindingError::new(
                    "",
                    format!("reading the target group's VPC: {}", why.chain()),
                )),
            };
            match cidrs.and_then(|cidrs| desire(&binding, &view, cidrs)) {
                Ok(desired) => BindingState::Ready {
                    binding: Box::new(binding),
                    desired,
                },
                Err(error) => BindingState::Failed {
                    id: binding.binding.id.clone(),
                    error,
                },
            }
        })
        .collect()
}
