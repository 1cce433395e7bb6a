//! ELBv2 target groups and targets, on aws-sdk-elasticloadbalancingv2.

use super::calls::CallCounter;
use super::pacing::Pacing;
use crate::error::{BoxError, Error, Result};
use crate::model::aws::{HealthReason, LoadBalancerInfo, ObservedTarget, TargetGroupInfo};
use crate::model::{AssumeRole, IpFamily, Target, TargetGroupRef, TargetType};
use crate::model::{SecurityGroupId, TargetGroupArn};
use crate::ports::{Registration, TargetRegistry};
use crate::pure::binding::TargetGroupSelector;
use aws_config::SdkConfig;
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetGroup};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// `DescribeTags` takes at most 20 resources per call.
const TAGS_PER_CALL: usize = 20;
/// Bounds pagination loops; 400 groups a page makes this 400,000 target groups.
const MAX_PAGES: usize = 1_000;

pub struct ElbTargetRegistry {
    sdk: SdkConfig,
    client: Client,
    calls: CallCounter,
    pacing: Pacing,
    /// Clients for target groups in other accounts, by role.
    assumed: Mutex<HashMap<AssumeRole, Client>>,
}

impl ElbTargetRegistry {
    pub fn new(sdk: &SdkConfig, calls: CallCounter, pacing: Pacing) -> Self {
        let config = aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        Self {
            sdk: sdk.clone(),
            client: Client::from_conf(config),
            calls,
            pacing,
            assumed: Mutex::new(HashMap::new()),
        }
    }

    async fn client_for(&self, role: Option<&AssumeRole>) -> Client {
        let Some(role) = role else {
            return self.client.clone();
        };
        if let Some(client) = self.assumed.lock().ok().and_then(|m| m.get(role).cloned()) {
            return client;
        }
        let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
            .session_name("tgb-reconciler")
            .configure(&self.sdk);
        if let Some(external_id) = &role.external_id {
            provider = provider.external_id(external_id);
        }
        let provider = provider.build().await;
        let config = aws_sdk_elasticloadbalancingv2::config::Builder::from(&self.sdk)
            .credentials_provider(provider)
            .interceptor(self.calls.clone())
            .build();
        let client = Client::from_conf(config);
        if let Ok(mut assumed) = self.assumed.lock() {
            assumed.insert(role.clone(), client.clone());
        }
        client
    }
}

impl ElbTargetRegistry {
    /// `None` when one of the ARNs does not exist.
    async fn describe_load_balancers(
        &self,
        arns: &[String],
    ) -> Result<Option<Vec<LoadBalancerInfo>>> {
        self.pacing.elb_reads.take().await;
        let answer = match self
            .client
            .describe_load_balancers()
            .set_load_balancer_arns(Some(arns.to_vec()))
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_load_balancer_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(Error::DescribeLoadBalancers {
                    arns: arns.join(","),
                    source: Box::new(e),
                });
            }
        };
        Ok(Some(
            answer
                .load_balancers()
                .iter()
                .filter_map(|lb| {
                    Some(LoadBalancerInfo {
                        arn: lb.load_balancer_arn()?.to_string(),
                        kind: lb
                            .r#type()
                            .map_or("application", |t| t.as_str())
                            .to_string(),
                        security_groups: lb
                            .security_groups()
                            .iter()
                            .map(SecurityGroupId::from)
                            .collect(),
                        subnets: lb
                            .availability_zones()
                            .iter()
                            .filter_map(|z| z.subnet_id())
                            .map(str::to_string)
                            .collect(),
                    })
                })
                .collect(),
        ))
    }
}

impl TargetRegistry for ElbTargetRegistry {
    async fn target_groups(&self) -> Result<Vec<TargetGroupInfo>> {
        let mut groups = Vec::new();
        let mut pages = self.client.describe_target_groups().into_paginator().send();
        for _ in 0..MAX_PAGES {
            self.pacing.elb_reads.take().await;
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| Error::DescribeTargetGroups {
                source: Box::new(e),
            })?;
            groups.extend(page.target_groups().iter().filter_map(info));
        }
        let arns: Vec<String> = groups.iter().map(|g| g.arn.to_string()).collect();
        let mut tags = BTreeMap::new();
        for chunk in arns.chunks(TAGS_PER_CALL) {
            self.pacing.elb_reads.take().await;
            let answer = self
                .client
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| Error::DescribeTags {
                    source: Box::new(e),
                })?;
            for description in answer.tag_descriptions() {
                let Some(arn) = description.resource_arn() else {
                    continue;
                };
                let pairs = description.tags().iter().filter_map(|t| {
                    Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))
                });
                tags.insert(TargetGroupArn::from(arn), pairs.collect::<BTreeMap<_, _>>());
            }
        }
        for group in &mut groups {
            group.tags = tags.remove(&group.arn).unwrap_or_default();
        }
        Ok(groups)
    }

    async fn load_balancers(&self, arns: &[String]) -> Result<Vec<LoadBalancerInfo>> {
        let mut found = Vec::new();
        for chunk in arns.chunks(TAGS_PER_CALL) {
            // One missing ARN fails a whole batch: then ask for each on its own.
            let batches: Vec<Vec<String>> = match self.describe_load_balancers(chunk).await? {
                Some(lbs) => {
                    found.extend(lbs);
                    continue;
                }
                None => chunk.iter().map(|arn| vec![arn.clone()]).collect(),
            };
            for single in batches {
                found.extend(
                    self.describe_load_balancers(&single)
                        .await?
                        .unwrap_or_default(),
                );
            }
        }
        Ok(found)
    }

    async fn foreign_target_group(
        &self,
        selector: &TargetGroupSelector,
        role: &AssumeRole,
    ) -> Result<Option<TargetGroupInfo>> {
        let client = self.client_for(Some(role)).await;
        let request = match selector {
            TargetGroupSelector::Arn(arn) => client
                .describe_target_groups()
                .target_group_arns(arn.as_str()),
            TargetGroupSelector::Name(name) => client.describe_target_groups().names(name),
        };
        self.pacing.elb_reads.take().await;
        match request.send().await {
            Ok(answer) => Ok(answer.target_groups().iter().find_map(info)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_target_group_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::DescribeTargetGroups {
                source: Box::new(e),
            }),
        }
    }

    async fn target_health(&self, target_group: &TargetGroupRef) -> Result<Vec<ObservedTarget>> {
        let client = self.client_for(target_group.assume_role.as_ref()).await;
        self.pacing.elb_reads.take().await;
        let answer = client
            .describe_target_health()
            .target_group_arn(target_group.arn.as_str())
            .send()
            .await
            .map_err(|e| {
                call_error(e, &target_group.arn, |target_group, source| {
                    Error::DescribeTargetHealth {
                        target_group,
                        source,
                    }
                })
            })?;
        Ok(answer
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let target = d.target()?;
                let port = u16::try_from(target.port()?).ok()?;
                Some(ObservedTarget {
                    target: Target::new(target.id()?, port),
                    availability_zone: target.availability_zone().map(str::to_string),
                    state: d
                        .target_health()
                        .and_then(|h| h.state())
                        .map_or_else(|| "unknown".into(), |s| s.as_str().into()),
                    why: HealthReason::of(
                        d.target_health()
                            .and_then(|h| h.reason())
                            .map(|r| r.as_str().to_string()),
                        d.target_health()
                            .and_then(|h| h.description())
                            .map(str::to_string),
                    ),
                })
            })
            .collect())
    }

    async fn register_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Registration],
    ) -> Result<()> {
        let client = self.client_for(target_group.assume_role.as_ref()).await;
        let descriptions = targets
            .iter()
            .map(|r| {
                TargetDescription::builder()
                    .id(&*r.target.id)
                    .port(i32::from(r.target.port))
                    .set_availability_zone(r.availability_zone.clone())
                    .build()
            })
            .collect::<Vec<_>>();
        client
            .register_targets()
            .target_group_arn(target_group.arn.as_str())
            .set_targets(Some(descriptions))
            .send()
            .await
            .map_err(|e| {
                call_error(e, &target_group.arn, |target_group, source| {
                    Error::RegisterTargets {
                        target_group,
                        source,
                    }
                })
            })?;
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group: &TargetGroupRef,
        targets: &[Target],
    ) -> Result<()> {
        let client = self.client_for(target_group.assume_role.as_ref()).await;
        let descriptions = targets
            .iter()
            .map(|t| {
                TargetDescription::builder()
                    .id(&*t.id)
                    .port(i32::from(t.port))
                    .build()
            })
            .collect::<Vec<_>>();
        client
            .deregister_targets()
            .target_group_arn(target_group.arn.as_str())
            .set_targets(Some(descriptions))
            .send()
            .await
            .map_err(|e| {
                call_error(e, &target_group.arn, |target_group, source| {
                    Error::DeregisterTargets {
                        target_group,
                        source,
                    }
                })
            })?;
        Ok(())
    }
}

fn info(group: &TargetGroup) -> Option<TargetGroupInfo> {
    let raw_target_type = group
        .target_type()
        .map_or("instance", |t| t.as_str())
        .to_string();
    Some(TargetGroupInfo {
        arn: group.target_group_arn()?.into(),
        name: group.target_group_name().unwrap_or_default().to_string(),
        target_type: TargetType::parse(&raw_target_type),
        raw_target_type,
        ip_family: match group.ip_address_type().map(|t| t.as_str()) {
            Some("ipv6") => IpFamily::Ipv6,
            _ => IpFamily::Ipv4,
        },
        vpc_id: group.vpc_id().map(str::to_string),
        protocol: group.protocol().map(|p| p.as_str().to_string()),
        port: group.port(),
        load_balancer_arns: group.load_balancer_arns().to_vec(),
        health_check_protocol: group
            .health_check_protocol()
            .map(|p| p.as_str().to_string()),
        health_check_port: group.health_check_port().map(str::to_string),
        tags: BTreeMap::new(),
    })
}

/// `TargetGroupNotFound` becomes its own error (a deleted group is an answer, not a failure of
/// the call); anything else is wrapped by `wrap` with its source kept.
fn call_error<E, R>(
    error: SdkError<E, R>,
    arn: &TargetGroupArn,
    wrap: impl FnOnce(TargetGroupArn, BoxError) -> Error,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if error.as_service_error().and_then(|e| e.code()) == Some("TargetGroupNotFound") {
        Error::TargetGroupNotFound {
            target_group: arn.clone(),
        }
    } else {
        wrap(arn.clone(), Box::new(error))
    }
}
