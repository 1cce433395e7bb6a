//! The least a steady sweep (nothing to change) can call, operation by operation, within the
//! APIs' own page and batch limits — and the table that sets a run's calls beside it.

use super::layout::{Kind, Layout};
use std::collections::{BTreeMap, BTreeSet};

/// DescribeTargetGroups answers at most 400 groups a page.
const TARGET_GROUPS_PER_PAGE: usize = 400;
/// DescribeTags takes at most 20 ARNs.
const TAGS_PER_CALL: usize = 20;
/// EC2 takes at most 200 values per filter.
const FILTER_VALUES: usize = 200;

fn pages(items: usize, per_page: usize) -> usize {
    items.div_ceil(per_page).max(1)
}

/// Operation → the least number of calls, for a steady sweep of `layout`:
/// - each target group's targets, read fresh: one DescribeTargetHealth per target group;
/// - the account's target groups and their tags (tags can declare bindings): their pages;
/// - the instances behind the nodes (their interfaces and groups: where rules go), the ALB
///   peer's existence, the ip bindings' VPC, and the rules of every group, id-filtered;
///   (Kubernetes lists and DynamoDB queries count one each here: their extra pages — 500
///   objects, or 1 MB, a page — show as the difference)
/// - the ownership records (one query; no lease is taken when nothing changes);
/// - one list per Kubernetes kind read: bindings, Services, EndpointSlices, Nodes, Pods;
/// - zero writes.
pub fn steady_sweep(layout: &Layout) -> BTreeMap<String, usize> {
    let scale = layout.scale;
    let groups: BTreeSet<&str> = layout
        .nodes
        .iter()
        .map(|n| n.security_group.as_str())
        .collect();
    let has_ip = (0..scale.bindings()).any(|b| layout.kind(b) == Kind::Ip);
    let mut least = BTreeMap::from([
        (
            "Elastic Load Balancing v2.DescribeTargetHealth".to_string(),
            scale.bindings(),
        ),
        (
            "Elastic Load Balancing v2.DescribeTargetGroups".to_string(),
            pages(scale.bindings(), TARGET_GROUPS_PER_PAGE),
        ),
        (
            "Elastic Load Balancing v2.DescribeTags".to_string(),
            pages(scale.bindings(), TAGS_PER_CALL),
        ),
        (
            "EC2.DescribeInstances".to_string(),
            pages(scale.nodes(), FILTER_VALUES),
        ),
        // Which of the groups read (node groups and the ALB's) exist.
        (
            "EC2.DescribeSecurityGroups".to_string(),
            pages(groups.len() + 1, FILTER_VALUES),
        ),
        (
            "EC2.DescribeSecurityGroupRules".to_string(),
            pages(groups.len(), FILTER_VALUES),
        ),
        ("DynamoDB.Query".to_string(), 1),
    ]);
    if has_ip {
        least.insert("EC2.DescribeVpcs".to_string(), 1);
    }
    for kind in [
        "targetgroupbindings",
        "services",
        "endpointslices",
        "nodes",
        "pods",
    ] {
        least.insert(format!("Kubernetes.GET {kind}"), 1);
    }
    least
}

fn total(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().sum()
}

/// One row per operation any column made, then the totals, then `measured / least`, which it
/// returns.
pub fn print_table(
    columns: &[(&str, &BTreeMap<String, usize>)],
    measured: &BTreeMap<String, usize>,
    least: &BTreeMap<String, usize>,
) -> f64 {
    let operations: BTreeSet<&String> = columns.iter().flat_map(|(_, c)| c.keys()).collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    println!("| operation | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for operation in operations {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, c)| c.get(operation).copied().unwrap_or(0).to_string())
            .collect();
        println!("| {operation} | {} |", cells.join(" | "));
    }
    let totals: Vec<String> = columns
        .iter()
        .map(|(_, c)| format!("**{}**", total(c)))
        .collect();
    println!("| **total** | {} |", totals.join(" | "));
    let writes: Vec<String> = columns.iter().map(|(_, c)| writes(c).to_string()).collect();
    println!("| writes | {} |", writes.join(" | "));
    let ratio = total(measured) as f64 / total(least) as f64;
    println!(
        "\nSteady sweep: {} calls against the least {}: ratio **{ratio:.2}** (target 1.00).\n",
        total(measured),
        total(least),
    );
    ratio
}

/// Calls that change state: AWS writes, and anything but GET to Kubernetes.
fn writes(counts: &BTreeMap<String, usize>) -> usize {
    const WRITES: &[&str] = &[
        "Register",
        "Deregister",
        "Authorize",
        "Revoke",
        "Put",
        "Update",
        "Delete",
        "Create",
        "Modify",
        "PATCH",
        "PUT",
        "POST",
    ];
    counts
        .iter()
        .filter(|(operation, _)| {
            let name = operation.rsplit('.').next().unwrap_or(operation);
            WRITES.iter().any(|w| name.starts_with(w))
        })
        .map(|(_, n)| n)
        .sum()
}
