//! The state table on DynamoDB: ownership records and the lease of every cluster.
//!
//! Schema (the same `template.yaml` declares): partition key `pk` (S) = `cluster#<name>`,
//! sort key `sk` (S) = `binding#<binding id>#<target group ARN>` for ownership records and
//! `lease` for the cluster's lease, and `status#<binding id>` for each binding's last status
//! (a JSON document in `status`, with `since`). The lease's `lease_until` (N, epoch milliseconds) is what
//! its conditions compare; `expires_at` (N, epoch seconds, a day later) is the table's TTL
//! attribute and only clears abandoned leases. Records never expire. Records and statuses are
//! written with BatchWriteItem, 25 items a call, their unprocessed items sent again a bounded
//! number of times.
//!
//! The deployment's roster of pacers (`adapters::pacing`) is one item apart from every
//! cluster's: `pk` = `pacing`, `sk` = `pacers`, with one attribute per process drawing on the
//! API rate buckets, `pacer:<holder>` (N, epoch milliseconds until which it counts). A check-in
//! sets its own attribute and removes lapsed ones in one UpdateItem, which answers with the
//! whole item; it removes them only if they are still lapsed, and when one is not (it checked in
//! again meanwhile) sets its own attribute alone in a second call. A count is one consistent
//! GetItem. The item never expires; it holds only the processes of the last half minute or so.

use super::calls::CallCounter;
use super::pacing::{Roster, now_millis};
use crate::error::{BoxError, Error, Result, describe_chain};
use crate::model::{AssumeRole, BindingId, Target, TargetGroupRef};
use crate::ports::{OwnershipStore, StoredState, WatchLeases};
use crate::pure::pace::{self, Pacer};
use crate::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms, WatchClaim};
use crate::state::ownership::{OwnershipRecord, RecordWrite};
use crate::state::status::{BindingStatus, StatusWrite};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ScalarAttributeType, TableStatus, TimeToLiveSpecification, WriteRequest,
};
use rand::Rng;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
const RECORD_PREFIX: &str = "binding#";
const LEASE_KEY: &str = "lease";
const WATCH_LEASE_KEY: &str = "watch-lease";
const STATUS_PREFIX: &str = "status#";
/// The roster of pacers: its item's keys, and the prefix of each pacer's attribute.
const ROSTER_PARTITION: &str = "pacing";
const ROSTER_SORT: &str = "pacers";
const PACER_PREFIX: &str = "pacer:";
/// Abandoned leases are cleared by TTL this long after they lapse.
const LEASE_TTL_GRACE_SECONDS: u64 = 86_400;
/// Taking a lease races its release at most this many times before giving up.
const LEASE_ATTEMPTS: usize = 3;
const MAX_PAGES: usize = 1_000;
/// How long `init` waits for a new table to become active.
const TABLE_WAIT_ATTEMPTS: u32 = 60;
/// The most items one BatchWriteItem call takes.
const BATCH_WRITE_ITEMS: usize = 25;
/// Calls a batch's items get before one still unprocessed counts as failed; the pause before
/// the second doubles before each next one (with jitter), as AWS advises for unprocessed items.
const BATCH_WRITE_ATTEMPTS: u32 = 5;
const BATCH_WRITE_BACKOFF: Duration = Duration::from_millis(50);

pub struct DynamoStateStore {
    client: Client,
    table: String,
}

impl DynamoStateStore {
    pub fn new(sdk: &SdkConfig, calls: CallCounter, table: &str) -> Self {
        let config = aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(calls)
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.to_string(),
        }
    }

    /// Creates the table when it does not exist yet; `Ok(false)` when it already did.
    pub async fn create_table(&self) -> Result<bool> {
        let create_error = |source: crate::error::BoxError| Error::CreateTable {
            table: self.table.clone(),
            source,
        };
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(answer) => {
                let keys: Vec<(String, String)> = answer
                    .table()
                    .map(|t| t.key_schema())
                    .unwrap_or_default()
                    .iter()
                    .map(|k| {
                        (
                            k.attribute_name().to_string(),
                            k.key_type().as_str().to_string(),
                        )
                    })
                    .collect();
                let expected = vec![
                    (PARTITION_KEY.to_string(), "HASH".to_string()),
                    (SORT_KEY.to_string(), "RANGE".to_string()),
                ];
                if keys != expected {
                    return Err(Error::Config(format!(
                        "table {} exists with key schema {keys:?}, not pk (HASH) + sk (RANGE); choose another --table",
                        self.table
                    )));
                }
                return Ok(false);
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(create_error(Box::new(e))),
        }
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(PARTITION_KEY).map_err(|e| create_error(Box::new(e)))?)
            .attribute_definitions(attribute(SORT_KEY).map_err(|e| create_error(Box::new(e)))?)
            .key_schema(key(PARTITION_KEY, KeyType::Hash).map_err(|e| create_error(Box::new(e)))?)
            .key_schema(key(SORT_KEY, KeyType::Range).map_err(|e| create_error(Box::new(e)))?)
            .send()
            .await
            .map_err(|e| create_error(Box::new(e)))?;
        for _ in 0..TABLE_WAIT_ATTEMPTS {
            let status = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| create_error(Box::new(e)))?
                .table()
                .and_then(|t| t.table_status().cloned());
            if status == Some(TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(TTL_ATTRIBUTE)
            .enabled(true)
            .build()
            .map_err(|e| create_error(Box::new(e)))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| create_error(Box::new(e)))?;
        Ok(true)
    }

    fn malformed(&self, key: &str, message: impl Into<String>) -> Error {
        Error::MalformedRecord {
            table: self.table.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The cluster's records could not be read.
    fn load_failed(&self, cluster: &str, source: BoxError) -> Error {
        Error::LoadOwnership {
            table: self.table.clone(),
            cluster: cluster.to_string(),
            source,
        }
    }

    fn decode(&self, item: &HashMap<String, AttributeValue>) -> Result<OwnershipRecord> {
        let key = item_sort_key(item);
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let binding = text("binding")
            .and_then(|b| BindingId::parse(&b))
            .ok_or_else(|| self.malformed(&key, "binding is missing or malformed"))?;
        let arn = text("target_group_arn")
            .ok_or_else(|| self.malformed(&key, "target_group_arn is missing"))?;
        let assume_role = text("role_arn").map(|role_arn| AssumeRole {
            role_arn,
            external_id: text("external_id"),
        });
        let targets = match item.get("targets") {
            Some(AttributeValue::L(values)) => values
                .iter()
                .map(|v| {
                    v.as_s()
                        .ok()
                        .and_then(|s| Target::parse_key(s))
                        .ok_or_else(|| self.malformed(&key, format!("target {v:?} is not id:port")))
                })
                .collect::<Result<_>>()?,
            None => Default::default(),
            Some(other) => {
                return Err(self.malformed(&key, format!("targets is {other:?}, not a list")));
            }
        };
        let rules = match item.get("rules") {
            Some(AttributeValue::L(values)) => values
                .iter()
                .map(|v| {
                    v.as_s()
                        .ok()
                        .and_then(|s| serde_json::from_str(s).ok())
                        .ok_or_else(|| self.malformed(&key, format!("rule {v:?} is not a rule")))
                })
                .collect::<Result<_>>()?,
            None => Default::default(),
            Some(other) => {
                return Err(self.malformed(&key, format!("rules is {other:?}, not a list")));
            }
        };
        Ok(OwnershipRecord {
            rules,
            binding,
            target_group: TargetGroupRef {
                arn: arn.into(),
                assume_role,
            },
            multi_cluster: matches!(item.get("multi_cluster"), Some(AttributeValue::Bool(true))),
            targets,
        })
    }
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// Whether a conditional write was refused because its condition did not hold (as opposed to
/// failing).
fn condition_failed<E>(error: &aws_sdk_dynamodb::error::SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

impl DynamoStateStore {
    /// `lease_until` and `expires_at` for a lease renewed now.
    fn lease_times(terms: &LeaseTerms) -> (AttributeValue, AttributeValue) {
        let until = now_millis().saturating_add(terms.seconds.saturating_mul(1000));
        let ttl = until / 1000 + LEASE_TTL_GRACE_SECONDS;
        (number(until), number(ttl))
    }

    /// Renews the lease item `which` of the cluster for another `terms.seconds`; `false` when
    /// it is no longer ours. Only the holder's name is compared: taking a lapsed lease rewrites
    /// it, so an unchanged name means nobody else has written since.
    async fn renew(
        &self,
        cluster: &str,
        which: &str,
        terms: &LeaseTerms,
    ) -> std::result::Result<bool, crate::error::BoxError> {
        let (until, ttl) = Self::lease_times(terms);
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_at(cluster, which)))
            .update_expression("SET lease_until = :until, #ttl = :ttl")
            .condition_expression("holder = :me")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":until", until)
            .expression_attribute_values(":ttl", ttl)
            .expression_attribute_values(":me", AttributeValue::S(terms.holder.clone()))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Who holds the cluster's lease, until when (RFC 3339), and whether it is dirty; `None`
    /// when nobody does. For people: runs never read it, they try to take it.
    pub async fn lease_holder(&self, cluster: &str) -> Result<Option<(String, String, bool)>> {
        self.holder_of(cluster, LEASE_KEY).await
    }

    /// Who follows the cluster in watch mode, and until when (RFC 3339); `None` when nobody.
    pub async fn watch_lease_holder(&self, cluster: &str) -> Result<Option<(String, String)>> {
        let held = self.holder_of(cluster, WATCH_LEASE_KEY).await?;
        Ok(held.map(|(holder, until, _)| (holder, until)))
    }

    async fn holder_of(
        &self,
        cluster: &str,
        which: &str,
    ) -> Result<Option<(String, String, bool)>> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_at(cluster, which)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::LoadStatus {
                table: self.table.clone(),
                cluster: cluster.to_string(),
                source: Box::new(e),
            })?;
        let Some(item) = answer.item() else {
            return Ok(None);
        };
        let until = item
            .get("lease_until")
            .and_then(|u| u.as_n().ok())
            .and_then(|u| u.parse::<i64>().ok())
            .unwrap_or_default();
        if u64::try_from(until).unwrap_or_default() < now_millis() {
            return Ok(None);
        }
        let holder = item
            .get("holder")
            .and_then(|h| h.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let until = aws_smithy_types::DateTime::from_millis(until)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        let dirty = matches!(item.get("dirty"), Some(AttributeValue::Bool(true)));
        Ok(Some((holder, until, dirty)))
    }

    /// Marks a live lease dirty; `None` when there is no live lease any more.
    async fn mark_dirty(&self, cluster: &str) -> Result<Option<String>> {
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(cluster)))
            .update_expression("SET dirty = :true")
            .condition_expression("attribute_exists(pk) AND lease_until >= :now")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":now", number(now_millis()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match answer {
            Ok(answer) => Ok(Some(
                answer
                    .attributes()
                    .and_then(|a| a.get("holder"))
                    .and_then(|h| h.as_s().ok())
                    .cloned()
                    .unwrap_or_else(|| "(unnamed)".into()),
            )),
            Err(error) if condition_failed(&error) => Ok(None),
            Err(error) => Err(Error::AcquireLease {
                table: self.table.clone(),
                cluster: cluster.to_string(),
                source: Box::new(error),
            }),
        }
    }
}

impl DynamoStateStore {
    /// A status item back into the status it stores, with the time it was written.
    fn decode_status(&self, item: &HashMap<String, AttributeValue>) -> Result<BindingStatus> {
        let key = item_sort_key(item);
        let since = item
            .get("since")
            .and_then(|s| s.as_n().ok())
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| {
                aws_smithy_types::DateTime::from_secs(s)
                    .fmt(aws_smithy_types::date_time::Format::DateTime)
                    .ok()
            });
        let document = item
            .get("status")
            .and_then(|s| s.as_s().ok())
            .ok_or_else(|| self.malformed(&key, "status is not a binding status"))?;
        // An unknown reason (written by another version) lands here too, and says which.
        let status = serde_json::from_str::<BindingStatus>(document)
            .map_err(|e| self.malformed(&key, format!("status is not a binding status: {e}")))?;
        Ok(BindingStatus { since, ..status })
    }

    /// Hands `each` every item of the cluster's partition whose sort key starts with `prefix`
    /// (all of them for an empty one), read consistently (a run must see what the previous one
    /// wrote). Each page is decoded as it arrives and dropped before the next is read, so a run
    /// never holds the partition's items in the SDK's shape. A read that fails becomes
    /// `read_failed`'s error; an item `each` refuses ends the read with its error.
    async fn each_item(
        &self,
        cluster: &str,
        prefix: &str,
        read_failed: impl FnOnce(BoxError) -> Error,
        mut each: impl FnMut(&HashMap<String, AttributeValue>) -> Result<()>,
    ) -> Result<()> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", AttributeValue::S(partition(cluster)))
            .consistent_read(true);
        // DynamoDB refuses an empty prefix: the whole partition is asked for without one.
        let query = if prefix.is_empty() {
            query.key_condition_expression("pk = :pk")
        } else {
            query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
        };
        let mut pages = query.into_paginator().send();
        for _ in 0..MAX_PAGES {
            let page = match pages.next().await {
                None => return Ok(()),
                Some(Ok(page)) => page,
                Some(Err(e)) => return Err(read_failed(Box::new(e))),
            };
            for item in page.items() {
                each(item)?;
            }
        }
        // Never a partial read: a run that saw only some records would take the others' targets
        // for no one's.
        Err(read_failed(
            format!("more than {MAX_PAGES} pages of items").into(),
        ))
    }
}

/// An item's sort key, for naming it in errors (empty when missing).
fn item_sort_key(item: &HashMap<String, AttributeValue>) -> String {
    item.get(SORT_KEY)
        .and_then(|k| k.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// The key of a binding's status item.
fn status_key(cluster: &str, binding: &BindingId) -> HashMap<String, AttributeValue> {
    key_at(cluster, &status_sort_key(binding))
}

fn status_sort_key(binding: &BindingId) -> String {
    format!("{STATUS_PREFIX}{binding}")
}

/// The key of a cluster's lease item.
fn lease_key(cluster: &str) -> HashMap<String, AttributeValue> {
    key_at(cluster, LEASE_KEY)
}

/// The key of a cluster's item with sort key `sort`.
fn key_at(cluster: &str, sort: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_string(),
            AttributeValue::S(partition(cluster)),
        ),
        (SORT_KEY.to_string(), AttributeValue::S(sort.to_string())),
    ])
}

fn partition(cluster: &str) -> String {
    format!("cluster#{cluster}")
}

fn sort_key(record: &OwnershipRecord) -> String {
    format!(
        "{RECORD_PREFIX}{}#{}",
        record.binding, record.target_group.arn
    )
}

impl OwnershipStore for DynamoStateStore {
    async fn acquire_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<LeaseClaim> {
        let error = |source: crate::error::BoxError| Error::AcquireLease {
            table: self.table.clone(),
            cluster: cluster.to_string(),
            source,
        };
        for _ in 0..LEASE_ATTEMPTS {
            let (until, ttl) = Self::lease_times(terms);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(lease_key(cluster)))
                .item("holder", AttributeValue::S(terms.holder.clone()))
                .item("lease_until", until)
                .item("dirty", AttributeValue::Bool(false))
                .item(TTL_ATTRIBUTE, ttl)
                // The absolute expiry decides, not TTL: TTL deletes items up to days late.
                .condition_expression("attribute_not_exists(pk) OR lease_until < :now")
                .expression_attribute_values(":now", number(now_millis()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(LeaseClaim::Acquired),
                Err(e) if condition_failed(&e) => {}
                Err(e) => return Err(error(Box::new(e))),
            }
            // Held: leave word for the holder. If it was let go in between, try again.
            if let Some(holder) = self.mark_dirty(cluster).await? {
                return Ok(LeaseClaim::Busy { holder });
            }
        }
        Err(error(
            format!("the lease changed hands {LEASE_ATTEMPTS} times while being taken").into(),
        ))
    }

    async fn extend_lease(&self, cluster: &str, terms: &LeaseTerms) -> Result<bool> {
        self.renew(cluster, LEASE_KEY, terms)
            .await
            .map_err(|source| Error::ExtendLease {
                table: self.table.clone(),
                cluster: cluster.to_string(),
                source,
            })
    }

    async fn release_lease(
        &self,
        cluster: &str,
        terms: &LeaseTerms,
        may_run_again: bool,
    ) -> Result<LeaseRelease> {
        let error = |source: crate::error::BoxError| Error::ReleaseLease {
            table: self.table.clone(),
            cluster: cluster.to_string(),
            source,
        };
        let me = AttributeValue::S(terms.holder.clone());
        let condition = if may_run_again {
            "holder = :me AND dirty = :false"
        } else {
            "holder = :me"
        };
        let mut delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(cluster)))
            .condition_expression(condition)
            .expression_attribute_values(":me", me.clone());
        if may_run_again {
            delete = delete.expression_attribute_values(":false", AttributeValue::Bool(false));
        }
        match delete.send().await {
            Ok(_) => return Ok(LeaseRelease::Released),
            Err(e) if condition_failed(&e) => {}
            Err(e) => return Err(error(Box::new(e))),
        }
        if !may_run_again {
            return Ok(LeaseRelease::Lost);
        }
        // Still ours and dirty: keep it, clean, for one more run.
        let (until, ttl) = Self::lease_times(terms);
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key(cluster)))
            .update_expression("SET dirty = :false, lease_until = :until, #ttl = :ttl")
            .condition_expression("holder = :me AND dirty = :true")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":until", until)
            .expression_attribute_values(":ttl", ttl)
            .expression_attribute_values(":me", me)
            .send()
            .await;
        match renewed {
            Ok(_) => Ok(LeaseRelease::RunAgain),
            Err(e) if condition_failed(&e) => Ok(LeaseRelease::Lost),
            Err(e) => Err(error(Box::new(e))),
        }
    }

    async fn load(&self, cluster: &str) -> Result<Vec<OwnershipRecord>> {
        let mut records = Vec::new();
        self.each_item(
            cluster,
            RECORD_PREFIX,
            |source| self.load_failed(cluster, source),
            |item| self.decode(item).map(|record| records.push(record)),
        )
        .await?;
        Ok(records)
    }

    async fn load_statuses(&self, cluster: &str) -> Result<Vec<BindingStatus>> {
        let mut statuses = Vec::new();
        self.each_item(
            cluster,
            STATUS_PREFIX,
            |source| Error::LoadStatus {
                table: self.table.clone(),
                cluster: cluster.to_string(),
                source,
            },
            |item| self.decode_status(item).map(|status| statuses.push(status)),
        )
        .await?;
        Ok(statuses)
    }

    async fn load_state(&self, cluster: &str) -> Result<StoredState> {
        // Records, statuses and the lease share the cluster's partition: one query reads all.
        let mut state = StoredState::default();
        self.each_item(
            cluster,
            "",
            |source| self.load_failed(cluster, source),
            |item| {
                let key = item.get(SORT_KEY).and_then(|k| k.as_s().ok());
                match key {
                    Some(k) if k.starts_with(RECORD_PREFIX) => {
                        state.records.push(self.decode(item)?)
                    }
                    // Statuses only inform: a bad one is rewritten by this run, never blocks it.
                    Some(k) if k.starts_with(STATUS_PREFIX) => match self.decode_status(item) {
                        Ok(status) => state.statuses.push(status),
                        Err(error) => {
                            tracing::warn!(cluster, error = %error.chain(), "stored status skipped")
                        }
                    },
                    _ => {}
                }
                Ok(())
            },
        )
        .await?;
        Ok(state)
    }

    async fn write_records(&self, cluster: &str, writes: &[RecordWrite<'_>]) -> Vec<Result<()>> {
        let pending = writes
            .iter()
            .map(|write| match write {
                RecordWrite::Save(record) => {
                    put(sort_key(record), Ok(record_item(cluster, record)))
                }
                RecordWrite::Forget(record) => delete(cluster, sort_key(record)),
            })
            .collect();
        let answers = self.batch_write(pending).await;
        writes
            .iter()
            .zip(answers)
            .map(|(write, answer)| {
                answer.map_err(|source| match write {
                    RecordWrite::Save(record) => Error::SaveOwnership {
                        table: self.table.clone(),
                        binding: record.binding.clone(),
                        source,
                    },
                    RecordWrite::Forget(record) => Error::ForgetOwnership {
                        table: self.table.clone(),
                        binding: record.binding.clone(),
                        source,
                    },
                })
            })
            .collect()
    }

    async fn write_statuses(&self, cluster: &str, writes: &[StatusWrite<'_>]) -> Vec<Result<()>> {
        let pending = writes
            .iter()
            .map(|write| match write {
                StatusWrite::Save(status) => put(
                    status_sort_key(&status.binding),
                    status_item(cluster, status),
                ),
                StatusWrite::Forget(binding) => delete(cluster, status_sort_key(binding)),
            })
            .collect();
        let answers = self.batch_write(pending).await;
        writes
            .iter()
            .zip(answers)
            .map(|(write, answer)| {
                answer.map_err(|source| match write {
                    StatusWrite::Save(status) => Error::SaveStatus {
                        table: self.table.clone(),
                        binding: status.binding.clone(),
                        source,
                    },
                    StatusWrite::Forget(binding) => Error::ForgetStatus {
                        table: self.table.clone(),
                        binding: (*binding).clone(),
                        source,
                    },
                })
            })
            .collect()
    }
}

/// One item of a batch write: its sort key (the partition is the cluster's), and the request,
/// or why it could not be built.
struct Pending {
    sort_key: String,
    request: std::result::Result<WriteRequest, BoxError>,
}

fn put(
    sort_key: String,
    item: std::result::Result<HashMap<String, AttributeValue>, BoxError>,
) -> Pending {
    let request = item.and_then(|item| {
        let put = PutRequest::builder().set_item(Some(item)).build()?;
        Ok(WriteRequest::builder().put_request(put).build())
    });
    Pending { sort_key, request }
}

fn delete(cluster: &str, sort_key: String) -> Pending {
    let request = DeleteRequest::builder()
        .set_key(Some(key_at(cluster, &sort_key)))
        .build()
        .map(|delete| WriteRequest::builder().delete_request(delete).build())
        .map_err(BoxError::from);
    Pending { sort_key, request }
}

/// The sort key a put or delete request writes.
fn request_sort_key(request: &WriteRequest) -> Option<&str> {
    let item = match (request.put_request(), request.delete_request()) {
        (Some(put), _) => put.item(),
        (None, Some(delete)) => delete.key(),
        (None, None) => return None,
    };
    item.get(SORT_KEY)
        .and_then(|k| k.as_s().ok())
        .map(String::as_str)
}

impl DynamoStateStore {
    /// Writes every pending item, in calls of at most [`BATCH_WRITE_ITEMS`] that never name one
    /// key twice (DynamoDB refuses that), in order: one answer per item. A call refused as a
    /// whole for what it carries (one item too large, say) is sent again item by item, so that
    /// only the bad item fails.
    async fn batch_write(&self, pending: Vec<Pending>) -> Vec<std::result::Result<(), BoxError>> {
        let mut answers: Vec<Option<std::result::Result<(), BoxError>>> =
            pending.iter().map(|_| None).collect();
        let mut calls: VecDeque<Vec<usize>> = VecDeque::new();
        let mut call: Vec<usize> = Vec::new();
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        for (i, item) in pending.iter().enumerate() {
            if let Err(error) = &item.request {
                answers[i] = Some(Err(describe_chain(error.as_ref()).into()));
                continue;
            }
            if call.len() == BATCH_WRITE_ITEMS || keys.contains(item.sort_key.as_str()) {
                calls.push_back(std::mem::take(&mut call));
                keys.clear();
            }
            keys.insert(&item.sort_key);
            call.push(i);
        }
        if !call.is_empty() {
            calls.push_back(call);
        }
        // Each refused call splits once, into calls of one item that do not split: bounded.
        while let Some(call) = calls.pop_front() {
            let Some((left, error)) = self.write_call(&pending, &call, &mut answers).await else {
                continue;
            };
            if left.len() > 1 && refused_for_content(&error) {
                // Next, and in order: a later call may write one of these keys again.
                for i in left.into_iter().rev() {
                    calls.push_front(vec![i]);
                }
                continue;
            }
            let why = describe_chain(&error);
            for i in left {
                answers[i] = Some(Err(why.clone().into()));
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err("not written".into())))
            .collect()
    }

    /// One BatchWriteItem of the items at `call`, with its unprocessed items sent again up to
    /// [`BATCH_WRITE_ATTEMPTS`] calls in all; fills in their answers, or gives back the items
    /// left when a call failed as a whole, with its error.
    async fn write_call(
        &self,
        pending: &[Pending],
        call: &[usize],
        answers: &mut [Option<std::result::Result<(), BoxError>>],
    ) -> Option<(
        Vec<usize>,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError,
        >,
    )> {
        let mut left: Vec<usize> = call.to_vec();
        let mut pause = BATCH_WRITE_BACKOFF;
        for attempt in 0..BATCH_WRITE_ATTEMPTS {
            if attempt > 0 {
                let jittered = pause.mul_f64(rand::rng().random_range(0.5..=1.0));
                tokio::time::sleep(jittered).await;
                pause = pause.saturating_mul(2);
            }
            let requests: Vec<WriteRequest> = left
                .iter()
                .filter_map(|&i| pending[i].request.as_ref().ok().cloned())
                .collect();
            let answer = match self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
            {
                Ok(answer) => answer,
                Err(error) => return Some((left, error)),
            };
            let unprocessed: HashSet<&str> = answer
                .unprocessed_items()
                .and_then(|items| items.get(&self.table))
                .map(|requests| requests.iter().filter_map(request_sort_key).collect())
                .unwrap_or_default();
            let mut still = Vec::new();
            for i in left {
                if unprocessed.contains(pending[i].sort_key.as_str()) {
                    still.push(i);
                } else {
                    answers[i] = Some(Ok(()));
                }
            }
            left = still;
            if left.is_empty() {
                return None;
            }
        }
        for i in left {
            answers[i] = Some(Err(format!(
                "left unprocessed by BatchWriteItem after {BATCH_WRITE_ATTEMPTS} attempts (throttled)"
            )
            .into()));
        }
        None
    }
}

/// Whether DynamoDB refused a whole batch for what it carries, which another split may not
/// share; throttling and outages are the SDK's to retry, and fail every item alike.
fn refused_for_content<E>(error: &aws_sdk_dynamodb::error::SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ValidationException")
}

/// A record as its item: each rule as a small JSON document, readable in the console and exact
/// on the way back.
fn record_item(cluster: &str, record: &OwnershipRecord) -> HashMap<String, AttributeValue> {
    let targets = record
        .targets
        .iter()
        .map(|t| AttributeValue::S(t.key()))
        .collect();
    let rules = record
        .rules
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(AttributeValue::S)
        .collect();
    let mut item = HashMap::from([
        (
            PARTITION_KEY.to_string(),
            AttributeValue::S(partition(cluster)),
        ),
        (SORT_KEY.to_string(), AttributeValue::S(sort_key(record))),
        (
            "binding".to_string(),
            AttributeValue::S(record.binding.to_string()),
        ),
        (
            "target_group_arn".to_string(),
            AttributeValue::S(record.target_group.arn.to_string()),
        ),
        (
            "multi_cluster".to_string(),
            AttributeValue::Bool(record.multi_cluster),
        ),
        ("targets".to_string(), AttributeValue::L(targets)),
        ("rules".to_string(), AttributeValue::L(rules)),
        ("updated_at".to_string(), number(now_seconds())),
    ]);
    if let Some(role) = &record.target_group.assume_role {
        item.insert("role_arn".into(), AttributeValue::S(role.role_arn.clone()));
        if let Some(external_id) = &role.external_id {
            item.insert("external_id".into(), AttributeValue::S(external_id.clone()));
        }
    }
    item
}

/// A status as its item: the status as a JSON document, and when it was written.
fn status_item(
    cluster: &str,
    status: &BindingStatus,
) -> std::result::Result<HashMap<String, AttributeValue>, BoxError> {
    let document = serde_json::to_string(status)?;
    let mut item = status_key(cluster, &status.binding);
    item.insert(
        "binding".into(),
        AttributeValue::S(status.binding.to_string()),
    );
    item.insert("status".into(), AttributeValue::S(document));
    item.insert("since".into(), number(now_seconds()));
    Ok(item)
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl WatchLeases for DynamoStateStore {
    async fn claim_watch(&self, cluster: &str, terms: &LeaseTerms) -> Result<WatchClaim> {
        let fail = |source: crate::error::BoxError| Error::ClaimWatchLease {
            table: self.table.clone(),
            cluster: cluster.to_string(),
            source,
        };
        let (until, ttl) = Self::lease_times(terms);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_at(cluster, WATCH_LEASE_KEY)))
            .item("holder", AttributeValue::S(terms.holder.clone()))
            .item("lease_until", until)
            .item(TTL_ATTRIBUTE, ttl)
            .condition_expression("attribute_not_exists(pk) OR lease_until < :now OR holder = :me")
            .expression_attribute_values(":now", number(now_millis()))
            .expression_attribute_values(":me", AttributeValue::S(terms.holder.clone()))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        let error = match put {
            Ok(_) => return Ok(WatchClaim::Acquired),
            Err(error) => error,
        };
        let held = error
            .as_service_error()
            .and_then(|e| match e {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed) => failed.item(),
                _ => None,
            })
            .map(|item| {
                let holder = item.get("holder").and_then(|h| h.as_s().ok()).cloned();
                let until_ms = item
                    .get("lease_until")
                    .and_then(|u| u.as_n().ok())
                    .and_then(|u| u.parse::<u64>().ok());
                WatchClaim::HeldBy {
                    holder: holder.unwrap_or_else(|| "(unnamed)".into()),
                    until_ms: until_ms.unwrap_or_else(now_millis),
                }
            });
        match held {
            Some(claim) => Ok(claim),
            // Refused without the item it was refused for: held, by someone unknown, for now.
            None if condition_failed(&error) => Ok(WatchClaim::HeldBy {
                holder: "(unknown)".into(),
                until_ms: now_millis(),
            }),
            None => Err(fail(Box::new(error))),
        }
    }

    async fn renew_watch(&self, cluster: &str, terms: &LeaseTerms) -> Result<bool> {
        self.renew(cluster, WATCH_LEASE_KEY, terms)
            .await
            .map_err(|source| Error::RenewWatchLease {
                table: self.table.clone(),
                cluster: cluster.to_string(),
                source,
            })
    }

    async fn release_watch(&self, cluster: &str, terms: &LeaseTerms) -> Result<()> {
        let answer = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_at(cluster, WATCH_LEASE_KEY)))
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", AttributeValue::S(terms.holder.clone()))
            .send()
            .await;
        match answer {
            // Not ours any more: it lapsed and another watcher took it, which is fine.
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(Error::ReleaseWatchLease {
                table: self.table.clone(),
                cluster: cluster.to_string(),
                source: Box::new(e),
            }),
        }
    }
}

/// The key of the deployment's roster of pacers.
fn roster_key() -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_string(),
            AttributeValue::S(ROSTER_PARTITION.into()),
        ),
        (SORT_KEY.to_string(), AttributeValue::S(ROSTER_SORT.into())),
    ])
}

/// The pacers of a roster item. An entry whose term cannot be read counts as lapsed (and is
/// taken off by the next check-in).
fn pacers_of(item: Option<&HashMap<String, AttributeValue>>) -> Vec<Pacer> {
    item.into_iter()
        .flatten()
        .filter_map(|(name, value)| {
            let holder = name.strip_prefix(PACER_PREFIX)?;
            let until_ms = value
                .as_n()
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            Some(Pacer {
                holder: holder.to_string(),
                until_ms,
            })
        })
        .collect()
}

impl DynamoStateStore {
    /// Sets `holder`'s term and removes the `gone`, on condition that each is still lapsed at
    /// `now_ms` (missing, unreadable, ended, or too far ahead: [`pace::in_term`]).
    async fn check_in_removing(
        &self,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
        gone: &[&String],
    ) -> std::result::Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        >,
    > {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(roster_key()))
            .expression_attribute_names("#me", format!("{PACER_PREFIX}{holder}"))
            .expression_attribute_values(":until", number(until_ms))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        let mut expression = "SET #me = :until".to_string();
        let mut conditions = Vec::new();
        for (i, lapsed) in gone.iter().enumerate() {
            expression.push_str(if i == 0 { " REMOVE " } else { ", " });
            expression.push_str(&format!("#gone{i}"));
            conditions.push(format!(
                "(attribute_not_exists(#gone{i}) OR NOT attribute_type(#gone{i}, :number) \
                 OR #gone{i} < :now OR #gone{i} > :furthest)"
            ));
            update = update
                .expression_attribute_names(format!("#gone{i}"), format!("{PACER_PREFIX}{lapsed}"));
        }
        if !conditions.is_empty() {
            update = update
                .condition_expression(conditions.join(" AND "))
                .expression_attribute_values(":number", AttributeValue::S("N".into()))
                .expression_attribute_values(":now", number(now_ms))
                .expression_attribute_values(":furthest", number(pace::furthest_until(now_ms)));
        }
        update.update_expression(expression).send().await
    }
}

impl Roster for DynamoStateStore {
    fn check_in<'a>(
        &'a self,
        holder: &'a str,
        now_ms: u64,
        until_ms: u64,
        lapsed: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Pacer>>> {
        Box::pin(async move {
            let gone: Vec<&String> = lapsed.iter().filter(|h| h.as_str() != holder).collect();
            let mut answer = self
                .check_in_removing(holder, now_ms, until_ms, &gone)
                .await;
            if !gone.is_empty() && answer.as_ref().is_err_and(condition_failed) {
                // One of them checked in again since it was seen lapsed: keep them all, and
                // check in alone; the next check-in's answer says which are still lapsed.
                answer = self.check_in_removing(holder, now_ms, until_ms, &[]).await;
            }
            let answer = answer.map_err(|e| Error::CheckInPacer {
                table: self.table.clone(),
                source: Box::new(e),
            })?;
            Ok(pacers_of(answer.attributes()))
        })
    }

    fn read(&self) -> futures::future::BoxFuture<'_, Result<Vec<Pacer>>> {
        Box::pin(async move {
            let answer = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(roster_key()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| Error::ReadPacers {
                    table: self.table.clone(),
                    source: Box::new(e),
                })?;
            Ok(pacers_of(answer.item()))
        })
    }

    fn check_out<'a>(&'a self, holder: &'a str) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let answer = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(roster_key()))
                .update_expression("REMOVE #me")
                // Not to create the item just to remove nothing from it.
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#me", format!("{PACER_PREFIX}{holder}"))
                .send()
                .await;
            match answer {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(Error::CheckOutPacer {
                    table: self.table.clone(),
                    source: Box::new(e),
                }),
            }
        })
    }
}
