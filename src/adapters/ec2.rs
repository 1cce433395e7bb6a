//! EC2 networking facts, on aws-sdk-ec2.

use super::calls::CallCounter;
use crate::error::{Error, Result};
use crate::ports::NetworkDirectory;
use aws_config::SdkConfig;
use aws_sdk_ec2::Client;
use ipnet::IpNet;
use std::collections::BTreeMap;

pub struct Ec2Network {
    client: Client,
}

impl Ec2Network {
    pub fn new(sdk: &SdkConfig, calls: CallCounter) -> Self {
        let config = aws_sdk_ec2::config::Builder::from(sdk)
            .interceptor(calls)
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }
}

impl NetworkDirectory for Ec2Network {
    async fn vpc_cidrs(&self, vpc_ids: &[String]) -> Result<BTreeMap<String, Vec<IpNet>>> {
        let mut cidrs = BTreeMap::new();
        if vpc_ids.is_empty() {
            return Ok(cidrs);
        }
        // Filtering by id (rather than passing ids) answers an empty list for an unknown VPC
        // instead of failing the whole call.
        let answer = self
            .client
            .describe_vpcs()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("vpc-id")
                    .set_values(Some(vpc_ids.to_vec()))
                    .build(),
            )
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
