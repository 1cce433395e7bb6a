//! Adapters: the only modules that know AWS SDK and kube types. Each implements one port.

pub mod calls;
pub mod dynamodb;
pub mod ec2;
pub mod eks;
pub mod elbv2;
pub mod kube;
pub mod kube_watch;
pub mod pacing;

use aws_config::SdkConfig;
use calls::CallCounter;
use pacing::Pacing;
use std::time::Duration;

/// The AWS clients of one process, all counting their calls into one [`CallCounter`].
pub struct Aws {
    pub sdk: SdkConfig,
    pub calls: CallCounter,
    /// The buckets every EC2 and ELBv2 call of this process draws on.
    pub pacing: Pacing,
    pub registry: elbv2::ElbTargetRegistry,
    pub ec2: ec2::Ec2,
    pub store: dynamodb::DynamoStateStore,
}

impl Aws {
    /// Region, credentials and endpoint come from the SDK's standard environment
    /// (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, …). Throttling and transient errors are
    /// retried by the SDK's standard retry strategy: exponential backoff with full jitter.
    pub async fn from_env(table: &str, pacing: Pacing) -> Self {
        let sdk = aws_config::from_env().load().await;
        Self::paced(Self::retrying(sdk), table, pacing)
    }

    /// The retry strategy every client uses: the SDK's standard one (exponential backoff with
    /// full jitter, throttling errors included), with room for a crowded account's buckets.
    pub fn retrying(sdk: SdkConfig) -> SdkConfig {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(5)
            .with_initial_backoff(Duration::from_millis(200));
        sdk.into_builder().retry_config(retry).build()
    }

    /// The ports of one run, borrowed from these clients.
    pub fn ports(
        &self,
    ) -> crate::ports::Ports<
        '_,
        elbv2::ElbTargetRegistry,
        ec2::Ec2,
        ec2::Ec2,
        dynamodb::DynamoStateStore,
    > {
        crate::ports::Ports {
            registry: &self.registry,
            network: &self.ec2,
            firewall: &self.ec2,
            store: &self.store,
        }
    }

    /// Clients paced at the default share of each API rate bucket.
    pub fn new(sdk: SdkConfig, table: &str) -> Self {
        Self::paced(sdk, table, Pacing::default())
    }

    /// Clients paced by `pacing`; a pacing shared among the deployment's processes
    /// ([`Pacing::among`]) keeps its roster in the state table.
    pub fn paced(sdk: SdkConfig, table: &str, pacing: Pacing) -> Self {
        let calls = CallCounter::default();
        if pacing.wants_roster() {
            let roster = dynamodb::DynamoStateStore::new(&sdk, calls.clone(), table);
            pacing.join(std::sync::Arc::new(roster));
        }
        Self {
            registry: elbv2::ElbTargetRegistry::new(&sdk, calls.clone(), pacing.clone()),
            ec2: ec2::Ec2::new(&sdk, calls.clone(), pacing.clone()),
            store: dynamodb::DynamoStateStore::new(&sdk, calls.clone(), table),
            pacing,
            sdk,
            calls,
        }
    }
}
