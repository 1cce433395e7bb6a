//! Desired security-group rules of one binding: each `from` peer × each port of its
//! `networking.ingress`, in the group that guards each target — the primary interface's group
//! for instance targets, the group of the interface holding the pod IP for ip targets.

use super::{DesiredTarget, DesiredTargets};
use crate::model::SecurityGroupId;
use crate::model::aws::LoadBalancerInfo;
use crate::model::network::{Eni, NetworkFacts};
use crate::model::{BindingId, Peer, Permission, PortRange, Protocol, TargetType};
use crate::pure::binding::networking::{IngressRule, PortRule};
use crate::pure::binding::{BindingError, DERIVE_INGRESS_KEY, PortRef, ResolvedBinding};
use foldhash::HashSet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The tag that picks the rules' group among several on one interface (any value).
pub const ENDPOINT_GROUP_TAG: &str = "tgb-reconciler/endpoint";

/// One binding's wish for one rule in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRule {
    pub group: SecurityGroupId,
    pub permission: Permission,
    pub binding: BindingId,
}

/// Container ports by pod (`namespace/name`), by (port name, protocol).
pub type PodPorts = BTreeMap<String, BTreeMap<(String, Protocol), u16>>;

/// Container ports of every pod, by (name, protocol), for named ports.
pub fn pod_ports(pods: &[crate::model::cluster::Pod]) -> PodPorts {
    pods.iter()
        .map(|pod| {
            let ports = pod
                .container_ports
                .iter()
                .filter_map(|p| {
                    let protocol = match p.protocol.as_str() {
                        "UDP" => Protocol::Udp,
                        "TCP" => Protocol::Tcp,
                        _ => return None,
                    };
                    Some(((p.name.clone()?, protocol), u16::try_from(p.port).ok()?))
                })
                .collect();
            (pod.key(), ports)
        })
        .collect()
}

/// The desired rules of one binding. `lb_peers` are where its load balancer's traffic and
/// health checks come from (its security groups, or an NLB's subnets); empty when the target
/// group is attached to none.
pub fn desired_rules(
    binding: &ResolvedBinding,
    targets: &DesiredTargets,
    facts: &NetworkFacts,
    pod_ports: &PodPorts,
    lb_peers: &[Peer],
    cluster: &str,
) -> Result<Vec<DesiredRule>, BindingError> {
    let derived;
    let ingress = match (&binding.binding.networking, binding.binding.derive_ingress) {
        (Some(networking), _) => &networking.ingress,
        (None, true) if lb_peers.is_empty() => {
            return Err(BindingError::new(
                "",
                format!(
                    "{DERIVE_INGRESS_KEY} is set but the target group is attached to no load balancer"
                ),
            ));
        }
        (None, true) => {
            // The load balancer to each target's own port, in the target group's protocol(s).
            derived = vec![IngressRule {
                from: lb_peers.to_vec(),
                ports: Vec::new(),
            }];
            &derived
        }
        (None, false) => return Ok(Vec::new()),
    };
    if binding.binding.networking.is_some() {
        require_declared_named_ports(ingress, targets, pod_ports)?;
    }
    let traffic = traffic_protocols(binding);
    // Ports that do not name a container port are the same for every target: worked out once.
    let declared = binding.binding.networking.is_some();
    let same_for_all: Vec<Option<Vec<(Protocol, PortRange)>>> = ingress
        .iter()
        .map(|rule| {
            (declared && !names_a_port(rule)).then(|| port_ranges(&rule.ports, None, pod_ports))
        })
        .collect();
    // Borrowed while most targets repeat the same few rules; owned once, at the end.
    let mut rules: BTreeSet<(&SecurityGroupId, Protocol, PortRange, &Peer)> = BTreeSet::new();
    // Unless a port is named (resolved pod by pod), a target adds rules that depend only on
    // its group and port: thousands of targets share a few such pairs, added once each.
    let per_pod = same_for_all.iter().any(Option::is_none) && declared;
    let mut added: HashSet<(&SecurityGroupId, u16)> = HashSet::default();
    for (target, desired) in &targets.targets {
        let eni = match binding.target_type {
            TargetType::Instance => facts.primary_eni.get(&*target.id),
            TargetType::Ip => facts.eni_by_ip.get(&*target.id),
        }
        .ok_or_else(|| {
            BindingError::new(
                "",
                format!(
                    "no network interface found for target {} ({})",
                    target, desired.source
                ),
            )
        })?;
        let group = endpoint_group(eni, &facts.group_tags, cluster)?;
        if !per_pod && !added.insert((group, target.port)) {
            continue;
        }
        let mut add = |protocol, ports, peer| {
            rules.insert((group, protocol, ports, peer));
        };
        for (rule, same) in ingress.iter().zip(&same_for_all) {
            let own;
            let ports: &[(Protocol, PortRange)] = match same {
                Some(ports) => ports,
                None if !declared => {
                    own = traffic
                        .iter()
                        .map(|p| (*p, PortRange::single(target.port)))
                        .collect::<Vec<_>>();
                    &own
                }
                None => {
                    own = port_ranges(&rule.ports, desired.pod(), pod_ports);
                    &own
                }
            };
            for &(protocol, ports) in ports {
                for peer in &rule.from {
                    add(protocol, ports, peer);
                    // A TCP_UDP target group carries both on the same port.
                    if traffic.len() == 2 {
                        add(other(protocol), ports, peer);
                    }
                }
            }
        }
        // Health checks come from the load balancer itself, over TCP, whoever the clients are.
        let health_port = match binding.traffic.health_check_port.as_deref() {
            Some(port) if port != "traffic-port" => port.parse().unwrap_or(target.port),
            _ => target.port,
        };
        for peer in lb_peers {
            add(Protocol::Tcp, PortRange::single(health_port), peer);
        }
    }
    Ok(rules
        .into_iter()
        .map(|(group, protocol, ports, peer)| DesiredRule {
            group: group.clone(),
            permission: Permission {
                protocol,
                ports,
                peer: peer.clone(),
            },
            binding: binding.binding.id.clone(),
        })
        .collect())
}

/// Whether an ingress entry names a container port (resolved pod by pod).
pub fn names_a_port(rule: &IngressRule) -> bool {
    rule.ports
        .iter()
        .any(|p| matches!(p.port, Some(PortRef::Name(_))))
}

/// The protocols the target group's traffic uses.
fn traffic_protocols(binding: &ResolvedBinding) -> Vec<Protocol> {
    match binding.traffic.protocol.as_deref() {
        Some("TCP_UDP") => vec![Protocol::Tcp, Protocol::Udp],
        Some("UDP") => vec![Protocol::Udp],
        _ => vec![Protocol::Tcp],
    }
}

fn other(protocol: Protocol) -> Protocol {
    match protocol {
        Protocol::Udp => Protocol::Tcp,
        _ => Protocol::Udp,
    }
}

/// Where a load balancer's traffic comes from: its security groups, or for a load balancer
/// without any (an NLB), the CIDRs of its subnets.
pub fn load_balancer_peers(
    lb: &LoadBalancerInfo,
    subnet_cidrs: &BTreeMap<String, Vec<ipnet::IpNet>>,
) -> Vec<Peer> {
    if !lb.security_groups.is_empty() {
        return lb
            .security_groups
            .iter()
            .cloned()
            .map(Peer::SecurityGroup)
            .collect();
    }
    lb.subnets
        .iter()
        .flat_map(|s| subnet_cidrs.get(s).into_iter().flatten())
        .map(|net| Peer::Cidr(*net))
        .collect()
}

/// Refuses peers open to the whole internet unless configuration allows them.
pub fn refuse_world_open(
    binding: &ResolvedBinding,
    rules: Vec<DesiredRule>,
    allowed: bool,
) -> Result<Vec<DesiredRule>, BindingError> {
    let world = rules
        .iter()
        .find(|r| matches!(&r.permission.peer, Peer::Cidr(net) if net.prefix_len() == 0));
    match world {
        Some(rule) if !allowed => Err(BindingError::new(
            "spec.networking",
            format!(
                "peer {} opens {} to the whole internet; allow it with --allow-world-open (TGB_ALLOW_WORLD_OPEN=true) or name narrower CIDRs",
                rule.permission.peer, binding.binding.id
            ),
        )),
        _ => Ok(rules),
    }
}

/// Fails a binding whose rules name a peer group that does not exist, before anything is
/// written (an authorize naming it would fail the whole batch).
pub fn require_existing_peers(
    rules: Vec<DesiredRule>,
    existing: &BTreeSet<SecurityGroupId>,
) -> Result<Vec<DesiredRule>, BindingError> {
    // Consecutive rules mostly name the same peer: each is looked up once per run of them.
    let mut last_found: Option<&SecurityGroupId> = None;
    let missing = rules.iter().find_map(|r| match &r.permission.peer {
        Peer::SecurityGroup(id) if last_found == Some(id) => None,
        Peer::SecurityGroup(id) if !existing.contains(id) => Some(id),
        Peer::SecurityGroup(id) => {
            last_found = Some(id);
            None
        }
        Peer::Cidr(_) | Peer::PrefixList(_) => None,
    });
    match missing {
        Some(id) => Err(BindingError::new(
            "spec.networking",
            format!("security group {id} named as a peer does not exist"),
        )),
        None => Ok(rules),
    }
}

/// A named port must be declared by the pods it is for. A name that no targeted pod's
/// containers declare with the rule's protocol (a typo, the other protocol, a port only a plain
/// init container had) would open nothing and say nothing, so it fails the binding. A pod that
/// lacks a name its siblings declare (a rollout adding the port) opens nothing for itself alone.
fn require_declared_named_ports(
    ingress: &[IngressRule],
    targets: &DesiredTargets,
    pod_ports: &PodPorts,
) -> Result<(), BindingError> {
    let pods: BTreeSet<&str> = targets
        .targets
        .values()
        .filter_map(DesiredTarget::pod)
        .collect();
    for (i, rule) in ingress.iter().enumerate() {
        for (j, port) in rule.ports.iter().enumerate() {
            let Some(PortRef::Name(name)) = &port.port else {
                continue;
            };
            let key = (name.clone(), port.protocol);
            let declared = pods
                .iter()
                .any(|pod| pod_ports.get(*pod).is_some_and(|p| p.contains_key(&key)));
            if !pods.is_empty() && !declared {
                return Err(BindingError::new(
                    format!("spec.networking.ingress[{i}].ports[{j}].port"),
                    format!(
                        "no container of the {} pod(s) behind this binding declares a {} port named {name:?} (only containers and init containers with restartPolicy: Always serve ports)",
                        pods.len(),
                        port.protocol.as_ec2().to_uppercase()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `ports` of one ingress entry for one target. No ports at all means every TCP port, as the
/// TargetGroupBinding documentation says; a port without a number means the whole protocol; a
/// named port is the pod's container port of that name, and opens nothing on pods without it.
fn port_ranges(
    ports: &[PortRule],
    pod: Option<&str>,
    pod_ports: &PodPorts,
) -> Vec<(Protocol, PortRange)> {
    if ports.is_empty() {
        return vec![(Protocol::Tcp, PortRange::ALL)];
    }
    ports
        .iter()
        .filter_map(|rule| {
            let range = match &rule.port {
                None => PortRange::ALL,
                Some(PortRef::Number(n)) => PortRange::single(u16::try_from(*n).ok()?),
                Some(PortRef::Name(name)) => {
                    PortRange::single(*pod_ports.get(pod?)?.get(&(name.clone(), rule.protocol))?)
                }
            };
            Some((rule.protocol, range))
        })
        .collect()
}

/// The group that takes the rules for an interface: its only group, else the one tagged
/// [`ENDPOINT_GROUP_TAG`], else the one tagged `kubernetes.io/cluster/<cluster>`.
pub fn endpoint_group<'e>(
    eni: &'e Eni,
    group_tags: &BTreeMap<SecurityGroupId, BTreeMap<String, String>>,
    cluster: &str,
) -> Result<&'e SecurityGroupId, BindingError> {
    if let [only] = eni.groups.as_slice() {
        return Ok(only);
    }
    let cluster_tag = format!("kubernetes.io/cluster/{cluster}");
    for tag in [ENDPOINT_GROUP_TAG, cluster_tag.as_str()] {
        let tagged: Vec<&SecurityGroupId> = eni
            .groups
            .iter()
            .filter(|g| group_tags.get(*g).is_some_and(|t| t.contains_key(tag)))
            .collect();
        if let [only] = tagged.as_slice() {
            return Ok(only);
        }
    }
    Err(BindingError::new(
        "",
        format!(
            "network interface {} has security groups {} and no single one is tagged {ENDPOINT_GROUP_TAG} or {cluster_tag}; tag the group that should take the rules with {ENDPOINT_GROUP_TAG}",
            eni.id,
            eni.groups.join(", ")
        ),
    ))
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
