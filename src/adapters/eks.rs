//! Cluster access: a kube client for a cluster name, either from a kubeconfig (the context named
//! like the cluster) or discovered through EKS `DescribeCluster` with an IAM bearer token.

use super::calls::CallCounter;
use crate::error::{BoxError, Error, Result};
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How long connecting to, and reading from, the cluster API may take by default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The presigned URL's declared lifetime; EKS ignores it and allows 15 minutes.
const TOKEN_EXPIRES_IN: Duration = Duration::from_secs(60);
/// How long a client made with a signed EKS token is used for a watch before a new one is
/// made: well inside the 15 minutes EKS accepts the token for.
const EKS_TOKEN_REFRESH: Duration = Duration::from_secs(12 * 60);

/// Where cluster connections come from.
#[derive(Debug, Clone)]
pub enum ClusterAccess {
    /// Kubeconfig files (merged in order); the context named like the cluster is used.
    Kubeconfig(Vec<PathBuf>),
    /// EKS `DescribeCluster` plus a token signed with the function's own credentials.
    Eks,
}

#[derive(Clone)]
pub struct ClusterConnector {
    access: ClusterAccess,
    sdk: SdkConfig,
    eks: aws_sdk_eks::Client,
    /// How long a request to the cluster API may take before the cluster counts as unreadable.
    read_timeout: Duration,
}

impl ClusterConnector {
    pub fn new(access: ClusterAccess, sdk: &SdkConfig, calls: CallCounter) -> Self {
        let config = aws_sdk_eks::config::Builder::from(sdk)
            .interceptor(calls)
            .build();
        Self {
            access,
            sdk: sdk.clone(),
            eks: aws_sdk_eks::Client::from_conf(config),
            read_timeout: READ_TIMEOUT,
        }
    }

    /// Replaces the default read timeout (30 s).
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// A fresh client per call: a static bearer token is never refreshed by kube.
    pub async fn client(&self, cluster: &str) -> Result<kube::Client> {
        self.client_reading_within(cluster, Some(self.read_timeout))
            .await
    }

    /// How long a client may be kept for a watch: a client with a signed EKS token must be
    /// made anew before the token expires; a kubeconfig's credentials are kube's to refresh.
    pub fn client_lifetime(&self) -> Option<Duration> {
        match self.access {
            ClusterAccess::Eks => Some(EKS_TOKEN_REFRESH),
            ClusterAccess::Kubeconfig(_) => None,
        }
    }

    /// A client for long watches: no read timeout, since a quiet watch reads nothing for
    /// minutes (kube's watcher has an idle timeout of its own).
    pub async fn watch_client(&self, cluster: &str) -> Result<kube::Client> {
        self.client_reading_within(cluster, None).await
    }

    async fn client_reading_within(
        &self,
        cluster: &str,
        read_timeout: Option<Duration>,
    ) -> Result<kube::Client> {
        let kubeconfig = match &self.access {
            ClusterAccess::Kubeconfig(paths) => read_kubeconfigs(paths)?,
            ClusterAccess::Eks => self.discover(cluster).await?,
        };
        let options = KubeConfigOptions {
            context: Some(cluster.to_string()),
            ..KubeConfigOptions::default()
        };
        let build_error = |source: BoxError| Error::BuildKubeClient {
            cluster: cluster.to_string(),
            source,
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| build_error(Box::new(e)))?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = read_timeout;
        // kube's built-in retry backs off for up to minutes on 429/503/504; a run must rather
        // fail fast (nothing is deregistered) and let the next event or sweep try again.
        config.default_retry = false;
        kube::Client::try_from(config).map_err(|e| build_error(Box::new(e)))
    }

    /// Builds an in-memory kubeconfig for an EKS cluster.
    async fn discover(&self, cluster: &str) -> Result<Kubeconfig> {
        let answer = self
            .eks
            .describe_cluster()
            .name(cluster)
            .send()
            .await
            .map_err(|e| Error::DescribeCluster {
                cluster: cluster.to_string(),
                source: Box::new(e),
            })?;
        let missing = |what: &str| Error::ClusterEndpoint {
            cluster: cluster.to_string(),
            message: format!("DescribeCluster returned no {what} (is the cluster still creating?)"),
        };
        let described = answer.cluster().ok_or_else(|| missing("cluster"))?;
        let endpoint = described.endpoint().ok_or_else(|| missing("endpoint"))?;
        let ca = described
            .certificate_authority()
            .and_then(|c| c.data())
            .ok_or_else(|| missing("certificate authority"))?;
        let region = self
            .sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| Error::Config("no AWS region configured (set AWS_REGION)".into()))?;
        let credentials = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| Error::Config("no AWS credentials provider configured".into()))?
            .provide_credentials()
            .await
            .map_err(|e| Error::SignToken {
                cluster: cluster.to_string(),
                source: Box::new(e),
            })?;
        let token =
            eks_token(credentials, &region, cluster, SystemTime::now()).map_err(|source| {
                Error::SignToken {
                    cluster: cluster.to_string(),
                    source,
                }
            })?;
        let document = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": endpoint, "certificate-authority-data": ca}}],
            "users": [{"name": cluster, "user": {"token": token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
            "current-context": cluster,
        });
        serde_json::from_value(document).map_err(|e| Error::BuildKubeClient {
            cluster: cluster.to_string(),
            source: Box::new(e),
        })
    }
}

fn read_kubeconfigs(paths: &[PathBuf]) -> Result<Kubeconfig> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        let read_error = |source: BoxError| Error::ReadKubeconfig {
            path: path.display().to_string(),
            source,
        };
        let next = Kubeconfig::read_from(path).map_err(|e| read_error(Box::new(e)))?;
        merged = Some(match merged {
            None => next,
            Some(config) => config.merge(next).map_err(|e| read_error(Box::new(e)))?,
        });
    }
    merged.ok_or_else(|| Error::Config("no kubeconfig path given".into()))
}

/// An EKS bearer token: `k8s-aws-v1.` + base64url(presigned STS GetCallerIdentity URL), the URL
/// signed with `x-k8s-aws-id: <cluster>`. Signing is local; EKS calls STS to verify it.
pub fn eks_token(
    credentials: aws_credential_types::Credentials,
    region: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<String, BoxError> {
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_EXPIRES_IN);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()?
        .into();
    let url =
        format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let request = SignableRequest::new(
        "GET",
        url.clone(),
        [("x-k8s-aws-id", cluster)].into_iter(),
        SignableBody::Bytes(&[]),
    )?;
    let (instructions, _signature) = sign(request, &params)?.into_parts();
    let mut presigned = http::Request::builder().uri(url).body(())?;
    instructions.apply_to_request_http1x(&mut presigned);
    Ok(format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned.uri().to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn an_eks_token_is_a_presigned_get_caller_identity_url_naming_the_cluster() {
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".into()),
            None,
            "test",
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = eks_token(credentials, "us-west-2", "prod", now).expect("signs");
        let encoded = token.strip_prefix("k8s-aws-v1.").expect("prefix");
        assert!(!encoded.contains('='), "no padding");
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .expect("base64url"),
        )
        .expect("utf-8");
        assert!(
            url.starts_with(
                "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Expires=60",
            "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Security-Token=session",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(token.len() <= 4096);
    }
}
