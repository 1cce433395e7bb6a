//! EC2 networking facts, on aws-sdk-ec2.

use super::calls::CallCounter;
use super::pacing::Pacing;
use crate::error::{BoxError, Error, Result};
use crate::model::aws::ObservedRule;
use crate::model::network::{AskedAddresses, Eni, NetworkFacts};
use crate::model::{Peer, Permission, PortRange, Protocol, SecurityGroupId};
use crate::ports::{FirewallRules, NetworkDirectory};
use aws_config::SdkConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType, SecurityGroupRule, Tag,
    TagSpecification, UserIdGroupPair,
};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub struct Ec2 {
    client: Client,
    pacing: Pacing,
}

impl Ec2 {
    pub fn new(sdk: &SdkConfig, calls: CallCounter, pacing: Pacing) -> Self {
        let config = aws_sdk_ec2::config::Builder::from(sdk)
            .interceptor(calls)
            .build();
        Self {
            client: Client::from_conf(config),
            pacing,
        }
    }
}

impl NetworkDirectory for Ec2 {
    async fn subnet_cidrs(&self, subnet_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let mut cidrs = BTreeMap::new();
        for chunk in subnet_ids.chunks(FILTER_VALUES) {
            self.pacing.ec2_reads.take().await;
            let answer = self
                .client
                .describe_subnets()
                .filters(id_filter("subnet-id", chunk))
                .send()
                .await
                .map_err(|e| Error::DescribeSubnets {
                    subnets: chunk.join(","),
                    source: Box::new(e),
                })?;
            for subnet in answer.subnets() {
                let Some(id) = subnet.subnet_id() else {
                    continue;
                };
                let v6 = subnet
                    .ipv6_cidr_block_association_set()
                    .iter()
                    .filter_map(|a| a.ipv6_cidr_block());
                let nets: Vec<IpNet> = subnet
                    .cidr_block()
                    .into_iter()
                    .chain(v6)
                    .filter_map(|c| c.parse::<IpNet>().ok().map(|n| n.trunc()))
                    .collect();
                cidrs.insert(id.to_string(), nets);
            }
        }
        Ok(cidrs)
    }

    async fn instance_clusters(&self, instance_id: &str) -> Result<Option<BTreeSet<String>>> {
        self.pacing.ec2_reads.take().await;
        let answer = self
            .client
            .describe_instances()
            .filters(id_filter("instance-id", &[instance_id.to_string()]))
            .send()
            .await
            .map_err(|e| Error::DescribeInstances {
                instance: instance_id.to_string(),
                source: Box::new(e),
            })?;
        let Some(instance) = answer
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
        else {
            return Ok(None);
        };
        Ok(Some(
            instance
                .tags()
                .iter()
                .filter_map(|tag| cluster_of_tag(tag.key()?, tag.value().unwrap_or_default()))
                .collect(),
        ))
    }

    async fn network_facts(
        &self,
        instance_ids: &[String],
        ips: &[Arc<str>],
    ) -> Result<NetworkFacts> {
        let mut facts = NetworkFacts::default();
        let asked = AskedAddresses::new(ips);
        for chunk in instance_ids.chunks(FILTER_VALUES) {
            let error = |e: BoxError| Error::DescribeNetworkInterfaces {
                what: chunk.join(","),
                source: e,
            };
            let mut pages = self
                .client
                .describe_instances()
                .filters(id_filter("instance-id", chunk))
                .into_paginator()
                .send();
            for _ in 0..MAX_PAGES {
                self.pacing.ec2_reads.take().await;
                let Some(page) = pages.next().await else {
                    break;
                };
                let page = page.map_err(|e| error(Box::new(e)))?;
                for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(instance_id) = instance.instance_id() else {
                        continue;
                    };
                    for interface in instance.network_interfaces() {
                        let eni =
                            Arc::new(eni(interface.network_interface_id(), interface.groups()));
                        if interface.attachment().and_then(|a| a.device_index()) == Some(0) {
                            facts
                                .primary_eni
                                .insert(instance_id.to_string(), eni.clone());
                        }
                        let v4 = interface
                            .private_ip_addresses()
                            .iter()
                            .filter_map(|a| a.private_ip_address());
                        let v6 = interface
                            .ipv6_addresses()
                            .iter()
                            .filter_map(|a| a.ipv6_address());
                        for address in v4.chain(v6) {
                            facts.eni_by_ip.insert(asked.key(address), eni.clone());
                        }
                    }
                }
            }
        }
        // Addresses on no node interface (branch interfaces, Fargate): look them up by address.
        let missing: Vec<String> = ips
            .iter()
            .filter(|ip| !facts.eni_by_ip.contains_key(&***ip))
            .map(|ip| ip.to_string())
            .collect();
        for chunk in missing.chunks(FILTER_VALUES - 1) {
            let error = |e: BoxError| Error::DescribeNetworkInterfaces {
                what: chunk.join(","),
                source: e,
            };
            let mut pages = self
                .client
                .describe_network_interfaces()
                .filters(id_filter("addresses.private-ip-address", chunk))
                .into_paginator()
                .send();
            for _ in 0..MAX_PAGES {
                self.pacing.ec2_reads.take().await;
                let Some(page) = pages.next().await else {
                    break;
                };
                let page = page.map_err(|e| error(Box::new(e)))?;
                for interface in page.network_interfaces() {
                    let eni = Arc::new(eni(interface.network_interface_id(), interface.groups()));
                    let v4 = interface
                        .private_ip_addresses()
                        .iter()
                        .filter_map(|a| a.private_ip_address());
                    let v6 = interface
                        .ipv6_addresses()
                        .iter()
                        .filter_map(|a| a.ipv6_address());
                    for address in v4.chain(v6) {
                        facts
                            .eni_by_ip
                            .entry(asked.key(address))
                            .or_insert_with(|| eni.clone());
                    }
                }
            }
        }
        // Tags only matter where an interface has several groups to choose from.
        let ambiguous: BTreeSet<String> = facts
            .primary_eni
            .values()
            .chain(facts.eni_by_ip.values())
            .filter(|eni| eni.groups.len() > 1)
            .flat_map(|eni| eni.groups.iter().map(|g| g.to_string()))
            .collect();
        let ambiguous: Vec<String> = ambiguous.into_iter().collect();
        for chunk in ambiguous.chunks(FILTER_VALUES) {
            self.pacing.ec2_reads.take().await;
            let answer = self
                .client
                .describe_security_groups()
                .filters(id_filter("group-id", chunk))
                .send()
                .await
                .map_err(|e| Error::DescribeSecurityGroups {
                    groups: chunk.join(","),
                    source: Box::new(e),
                })?;
            for group in answer.security_groups() {
                let Some(id) = group.group_id() else { continue };
                let tags = group
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.key()?.to_string(),
                            t.value().unwrap_or_default().to_string(),
                        ))
                    })
                    .collect();
                facts.group_tags.insert(id.into(), tags);
            }
        }
        Ok(facts)
    }

    async fn vpc_cidrs(&self, vpc_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let mut cidrs = BTreeMap::new();
        if vpc_ids.is_empty() {
            return Ok(cidrs);
        }
        // Filtering by id (rather than passing ids) answers an empty list for an unknown VPC
        // instead of failing the whole call.
        self.pacing.ec2_reads.take().await;
        let answer = self
            .client
            .describe_vpcs()
            .filters(id_filter("vpc-id", vpc_ids))
            .send()
            .await
            .map_err(|e| Error::DescribeVpcs {
                vpcs: vpc_ids.join(","),
                source: Box::new(e),
            })?;
        for vpc in answer.vpcs() {
            let Some(id) = vpc.vpc_id() else { continue };
            let v4 = vpc
                .cidr_block_association_set()
                .iter()
                .filter_map(|a| a.cidr_block());
            let v6 = vpc
                .ipv6_cidr_block_association_set()
                .iter()
                .filter_map(|a| a.ipv6_cidr_block());
            let nets: Vec<IpNet> = v4
                .chain(v6)
                .chain(vpc.cidr_block())
                .filter_map(|c| c.parse::<IpNet>().ok())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            cidrs.insert(id.to_string(), nets);
        }
        Ok(cidrs)
    }
}

/// The rule tag that marks a rule as ours, valued with the owning cluster's name.
pub const OWNER_TAG: &str = "tgb-reconciler/managed-by-cluster";
/// `Filter` values per call: EC2 accepts at most 200.
const FILTER_VALUES: usize = 200;
const MAX_PAGES: usize = 1_000;

impl FirewallRules for Ec2 {
    async fn existing_groups(&self, ids: &[SecurityGroupId]) -> Result<BTreeSet<SecurityGroupId>> {
        let mut found = BTreeSet::new();
        for chunk in ids.chunks(FILTER_VALUES) {
            // A filter (not GroupIds) answers with what exists instead of failing on what does not.
            let mut pages = self
                .client
                .describe_security_groups()
                .filters(id_filter("group-id", chunk))
                .into_paginator()
                .send();
            for _ in 0..MAX_PAGES {
                self.pacing.ec2_reads.take().await;
                let Some(page) = pages.next().await else {
                    break;
                };
                let page = page.map_err(|e| Error::DescribeSecurityGroups {
                    groups: chunk.join(","),
                    source: Box::new(e),
                })?;
                found.extend(
                    page.security_groups()
                        .iter()
                        .filter_map(|g| g.group_id())
                        .map(SecurityGroupId::from),
                );
            }
        }
        Ok(found)
    }

    async fn ingress_rules(
        &self,
        groups: &[SecurityGroupId],
    ) -> Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>> {
        let mut rules: BTreeMap<SecurityGroupId, Vec<ObservedRule>> = BTreeMap::new();
        for group in self.existing_groups(groups).await? {
            rules.insert(group, Vec::new());
        }
        for chunk in groups.chunks(FILTER_VALUES) {
            let mut pages = self
                .client
                .describe_security_group_rules()
                .filters(id_filter("group-id", chunk))
                .into_paginator()
                .send();
            for _ in 0..MAX_PAGES {
                self.pacing.ec2_reads.take().await;
                let Some(page) = pages.next().await else {
                    break;
                };
                let page = page.map_err(|e| Error::DescribeSecurityGroupRules {
                    groups: chunk.join(","),
                    source: Box::new(e),
                })?;
                for rule in page.security_group_rules() {
                    if rule.is_egress() == Some(true) {
                        continue;
                    }
                    let (Some(group), Some(observed)) = (rule.group_id(), observed_rule(rule))
                    else {
                        continue;
                    };
                    rules.entry(group.into()).or_default().push(observed);
                }
            }
        }
        Ok(rules)
    }

    async fn authorize_ingress(
        &self,
        group: &SecurityGroupId,
        permissions: &[Permission],
        cluster: &str,
    ) -> Result<()> {
        let description = format!("managed by tgb-reconciler for cluster {cluster}");
        let ip_permissions: Vec<IpPermission> = permissions
            .iter()
            .map(|p| ip_permission(p, &description))
            .collect();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::SecurityGroupRule)
            .tags(Tag::builder().key(OWNER_TAG).value(cluster).build())
            .build();
        self.pacing.ec2_rule_writes.take().await;
        self.client
            .authorize_security_group_ingress()
            .group_id(group.as_str())
            .set_ip_permissions(Some(ip_permissions))
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| {
                let code = e
                    .as_service_error()
                    .and_then(|s| s.code())
                    .unwrap_or_default()
                    .to_string();
                let group = group.clone();
                match code.as_str() {
                    "InvalidGroup.NotFound" => Error::SecurityGroupNotFound {
                        group,
                        source: Box::new(e),
                    },
                    "RulesPerSecurityGroupLimitExceeded" => Error::RuleLimitExceeded {
                        group,
                        source: Box::new(e),
                    },
                    _ => Error::AuthorizeIngress {
                        group,
                        source: Box::new(e),
                    },
                }
            })?;
        Ok(())
    }

    async fn revoke_ingress(&self, group: &SecurityGroupId, rule_ids: &[String]) -> Result<()> {
        self.pacing.ec2_rule_writes.take().await;
        self.client
            .revoke_security_group_ingress()
            .group_id(group.as_str())
            .set_security_group_rule_ids(Some(rule_ids.to_vec()))
            .send()
            .await
            .map_err(|e| Error::RevokeIngress {
                group: group.clone(),
                source: Box::new(e),
            })?;
        Ok(())
    }
}

/// One EC2 rule as a plain value; `None` for a rule with no peer we can name.
fn observed_rule(rule: &SecurityGroupRule) -> Option<ObservedRule> {
    let protocol = Protocol::from_ec2(rule.ip_protocol()?)?;
    let ports = match protocol {
        Protocol::Tcp | Protocol::Udp => PortRange {
            from: u16::try_from(rule.from_port()?).ok()?,
            to: u16::try_from(rule.to_port()?).ok()?,
        },
        // -1 and ICMP type/code: the whole protocol, for counting.
        Protocol::All | Protocol::Other(_) => PortRange::ALL,
    };
    let peer = if let Some(cidr) = rule.cidr_ipv4().or(rule.cidr_ipv6()) {
        Peer::Cidr(cidr.parse::<IpNet>().ok()?.trunc())
    } else if let Some(group) = rule.referenced_group_info().and_then(|g| g.group_id()) {
        Peer::SecurityGroup(group.into())
    } else {
        Peer::PrefixList(rule.prefix_list_id()?.to_string())
    };
    let owner = rule
        .tags()
        .iter()
        .find(|t| t.key() == Some(OWNER_TAG))
        .and_then(|t| t.value())
        .map(str::to_string);
    Some(ObservedRule {
        rule_id: rule.security_group_rule_id()?.to_string(),
        permission: Permission {
            protocol,
            ports,
            peer,
        },
        owner,
    })
}

fn ip_permission(permission: &Permission, description: &str) -> IpPermission {
    let mut builder = IpPermission::builder()
        .ip_protocol(permission.protocol.as_ec2())
        .from_port(i32::from(permission.ports.from))
        .to_port(i32::from(permission.ports.to));
    builder = match &permission.peer {
        Peer::Cidr(IpNet::V4(net)) => builder.ip_ranges(
            IpRange::builder()
                .cidr_ip(net.to_string())
                .description(description)
                .build(),
        ),
        Peer::Cidr(IpNet::V6(net)) => builder.ipv6_ranges(
            Ipv6Range::builder()
                .cidr_ipv6(net.to_string())
                .description(description)
                .build(),
        ),
        Peer::SecurityGroup(id) => builder.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(id.as_str())
                .description(description)
                .build(),
        ),
        Peer::PrefixList(id) => builder.prefix_list_ids(
            PrefixListId::builder()
                .prefix_list_id(id)
                .description(description)
                .build(),
        ),
    };
    builder.build()
}

/// A filter on ids: unlike passing ids, it answers with what exists instead of failing on what
/// does not.
fn id_filter(name: &str, values: &[impl AsRef<str>]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(
            values.iter().map(|v| v.as_ref().to_string()).collect(),
        ))
        .build()
}

fn eni(id: Option<&str>, groups: &[aws_sdk_ec2::types::GroupIdentifier]) -> Eni {
    Eni {
        id: id.unwrap_or_default().to_string(),
        groups: groups
            .iter()
            .filter_map(|g| g.group_id())
            .map(SecurityGroupId::from)
            .collect(),
    }
}

/// The cluster a node's tag names: EKS managed node groups tag `eks:cluster-name`, other
/// nodes `kubernetes.io/cluster/<name>`.
fn cluster_of_tag(key: &str, value: &str) -> Option<String> {
    match key {
        "eks:cluster-name" | "aws:eks:cluster-name" if !value.is_empty() => Some(value.to_string()),
        _ => key
            .strip_prefix("kubernetes.io/cluster/")
            .filter(|name| !name.is_empty())
            .map(str::to_string),
    }
}
