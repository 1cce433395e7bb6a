//! The state table's batch writes against moto's DynamoDB: records and statuses go 25 to a
//! BatchWriteItem, one key never twice in a call, and the items DynamoDB answers back
//! unprocessed are sent again — an item still unprocessed after that fails alone, naming its
//! binding, and so does an item DynamoDB refuses (too large), which fails its whole call. The
//! first two print their DynamoDB calls by operation. The deployment's roster of pacers lives
//! in the same table, one item, one call per check-in, count or check-out.

mod support;

use std::collections::BTreeMap;
use support::harness::TABLE;
use support::moto::{Moto, sdk_config_at};
use support::throttle::ThrottlingProxy;
use tgb_reconciler::Error;
use tgb_reconciler::adapters::Aws;
use tgb_reconciler::adapters::pacing::{Pacing, Roster};
use tgb_reconciler::model::{BindingId, Target, TargetGroupRef};
use tgb_reconciler::ports::OwnershipStore;
use tgb_reconciler::state::ownership::{OwnershipRecord, RecordWrite};
use tgb_reconciler::state::status::{BindingStatus, StatusReason, StatusWrite};

const CLUSTER: &str = "prod";
/// As the adapter sends them: every call of a batch's items, the first included.
const BATCH_WRITE_ATTEMPTS: usize = 5;

/// The product's clients on `url` (moto, or a proxy in front of it), with the state table.
async fn state_table(url: &str) -> Aws {
    let aws = Aws::paced(sdk_config_at(url).await, TABLE, Pacing::unlimited());
    aws.store
        .create_table()
        .await
        .expect("create the state table");
    aws.calls.reset();
    aws
}

fn record(binding: &str, targets: usize) -> OwnershipRecord {
    OwnershipRecord {
        binding: BindingId::resource("default", binding),
        target_group: TargetGroupRef::new(
            format!(
                "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/{binding}/0123"
            )
            .as_str(),
        ),
        multi_cluster: false,
        targets: (0..targets)
            .map(|i| Target::new(format!("10.0.0.{i}"), 80))
            .collect(),
        rules: Default::default(),
    }
}

fn status(binding: &str) -> BindingStatus {
    BindingStatus {
        binding: BindingId::resource("default", binding),
        observed_generation: Some(1),
        ready: true,
        reason: StatusReason::Converged,
        message: "every target and rule it declares is in place".into(),
        since: None,
    }
}

/// DynamoDB calls since the last reset, by operation.
fn dynamodb_calls(aws: &Aws) -> BTreeMap<String, usize> {
    aws.calls
        .snapshot()
        .into_iter()
        .filter_map(|(op, n)| Some((op.strip_prefix("DynamoDB.")?.to_string(), n)))
        .collect()
}

fn errors(answers: &[tgb_reconciler::error::Result<()>]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|a| a.as_ref().err().map(Error::chain))
        .collect()
}

#[tokio::test]
async fn records_and_statuses_are_written_twenty_five_to_a_call_and_read_back() {
    let moto = Moto::start();
    let aws = state_table(&moto.url).await;
    let store = &aws.store;

    let records: Vec<OwnershipRecord> = (0..60).map(|i| record(&format!("b{i:02}"), 2)).collect();
    let saves: Vec<RecordWrite<'_>> = records.iter().map(RecordWrite::Save).collect();
    let answers = store.write_records(CLUSTER, &saves).await;
    assert_eq!(answers.len(), 60, "one answer per write");
    assert!(errors(&answers).is_empty(), "{:?}", errors(&answers));
    assert_eq!(
        dynamodb_calls(&aws),
        BTreeMap::from([("BatchWriteItem".to_string(), 3)]),
        "60 items: 25 + 25 + 10"
    );
    let mut loaded = store.load(CLUSTER).await.expect("load");
    loaded.sort_by(|a, b| a.binding.cmp(&b.binding));
    assert_eq!(loaded, records);

    // Forgotten, overwritten, and one key twice: the later write wins, in a call of its own.
    aws.calls.reset();
    let (grown, gone) = (record("b00", 5), record("b01", 0));
    let mixed = [
        RecordWrite::Forget(&gone),
        RecordWrite::Save(&records[2]),
        RecordWrite::Forget(&records[2]),
        RecordWrite::Save(&grown),
    ];
    let answers = store.write_records(CLUSTER, &mixed).await;
    assert_eq!(answers.len(), 4);
    assert!(errors(&answers).is_empty(), "{:?}", errors(&answers));
    assert_eq!(
        dynamodb_calls(&aws),
        BTreeMap::from([("BatchWriteItem".to_string(), 2)]),
        "b02's key twice: split into two calls"
    );
    let loaded: BTreeMap<BindingId, OwnershipRecord> = store
        .load(CLUSTER)
        .await
        .expect("load")
        .into_iter()
        .map(|r| (r.binding.clone(), r))
        .collect();
    assert_eq!(loaded.len(), 58);
    assert_eq!(loaded.get(&grown.binding), Some(&grown));
    assert!(!loaded.contains_key(&gone.binding));
    assert!(!loaded.contains_key(&records[2].binding));

    aws.calls.reset();
    let statuses: Vec<BindingStatus> = (0..30).map(|i| status(&format!("b{i:02}"))).collect();
    let writes: Vec<StatusWrite<'_>> = statuses.iter().map(StatusWrite::Save).collect();
    let answers = store.write_statuses(CLUSTER, &writes).await;
    assert_eq!(answers.len(), 30);
    assert!(errors(&answers).is_empty(), "{:?}", errors(&answers));
    let read = store.load_statuses(CLUSTER).await.expect("statuses");
    assert_eq!(read.len(), 30);
    assert!(
        read.iter().all(|s| s.since.is_some()),
        "read back with when"
    );
    let forgets: Vec<StatusWrite<'_>> = statuses
        .iter()
        .map(|s| StatusWrite::Forget(&s.binding))
        .collect();
    let answers = store.write_statuses(CLUSTER, &forgets).await;
    assert!(errors(&answers).is_empty(), "{:?}", errors(&answers));
    assert!(
        store
            .load_statuses(CLUSTER)
            .await
            .expect("statuses")
            .is_empty()
    );
    assert_eq!(
        dynamodb_calls(&aws),
        BTreeMap::from([("BatchWriteItem".to_string(), 4), ("Query".to_string(), 2)]),
        "30 saves and 30 deletes: two calls each"
    );
    assert!(
        store.write_records(CLUSTER, &[]).await.is_empty(),
        "nothing to write, no answer"
    );
    println!(
        "DynamoDB calls of the status writes: {:?}",
        dynamodb_calls(&aws)
    );
}

#[tokio::test]
async fn a_partition_larger_than_one_query_page_is_read_whole_page_by_page() {
    let moto = Moto::start();
    let aws = state_table(&moto.url).await;
    let store = &aws.store;
    // 160 records of 600 targets: about 2 MB of items, past a Query page's 1 MB.
    let records: Vec<OwnershipRecord> = (0..160)
        .map(|i| OwnershipRecord {
            targets: (0..600)
                .map(|t| Target::new(format!("10.{i}.{}.{}", t / 250, t % 250), 8080))
                .collect(),
            ..record(&format!("b{i:03}"), 0)
        })
        .collect();
    let saves: Vec<RecordWrite<'_>> = records.iter().map(RecordWrite::Save).collect();
    let answers = store.write_records(CLUSTER, &saves).await;
    assert!(errors(&answers).is_empty(), "{:?}", errors(&answers));
    store
        .write_statuses(CLUSTER, &[StatusWrite::Save(&status("b000"))])
        .await;

    aws.calls.reset();
    let mut loaded = store.load(CLUSTER).await.expect("load");
    loaded.sort_by(|a, b| a.binding.cmp(&b.binding));
    assert_eq!(loaded, records, "every record, whole");
    let queries = dynamodb_calls(&aws).get("Query").copied().unwrap_or(0);
    assert!(
        queries >= 2,
        "the records took {queries} page(s), not several"
    );
    println!("160 records read back in {queries} pages");

    let state = store
        .load_state(CLUSTER)
        .await
        .expect("the whole partition");
    assert_eq!(state.records.len(), 160);
    assert_eq!(state.statuses.len(), 1);
}

#[tokio::test]
async fn unprocessed_items_are_sent_again_and_one_still_unprocessed_fails_alone() {
    let moto = Moto::start();
    let (web, bad) = (record("web", 1), record("bad", 1));
    let writes = [RecordWrite::Save(&web), RecordWrite::Save(&bad)];

    // Held back twice, then taken: sent again until it lands.
    let proxy = ThrottlingProxy::leaving_unprocessed(&moto.url, "tgb/default/bad", 2).await;
    let aws = state_table(&proxy.url).await;
    let answers = aws.store.write_records(CLUSTER, &writes).await;
    assert!(errors(&answers).is_empty(), "{:?}", errors(&answers));
    assert_eq!(proxy.unprocessed(), (2, 2), "held back in two calls");
    assert_eq!(
        dynamodb_calls(&aws).get("BatchWriteItem"),
        Some(&3),
        "{:?}",
        dynamodb_calls(&aws)
    );
    assert_eq!(aws.store.load(CLUSTER).await.expect("load").len(), 2);
    println!("held back twice: {:?}", dynamodb_calls(&aws));

    // Held back every time: it fails, naming its binding, and its neighbour lands.
    let moto = Moto::start();
    let proxy =
        ThrottlingProxy::leaving_unprocessed(&moto.url, "tgb/default/bad", usize::MAX).await;
    let aws = state_table(&proxy.url).await;
    let answers = aws.store.write_records(CLUSTER, &writes).await;
    assert_eq!(answers.len(), 2);
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    match &answers[1] {
        Err(error @ Error::SaveOwnership { binding, .. }) => {
            assert_eq!(binding, &bad.binding);
            assert!(error.chain().contains("unprocessed"), "{}", error.chain());
        }
        other => panic!("the unprocessed record's own error: {other:?}"),
    }
    assert_eq!(
        dynamodb_calls(&aws).get("BatchWriteItem"),
        Some(&BATCH_WRITE_ATTEMPTS),
        "a bounded number of calls"
    );
    assert_eq!(
        proxy.unprocessed(),
        (BATCH_WRITE_ATTEMPTS, BATCH_WRITE_ATTEMPTS)
    );
    let loaded = aws.store.load(CLUSTER).await.expect("load");
    assert_eq!(loaded, [web]);

    // Statuses alike.
    let (ok, held) = (status("web"), status("bad"));
    let answers = aws
        .store
        .write_statuses(CLUSTER, &[StatusWrite::Save(&ok), StatusWrite::Save(&held)])
        .await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert!(
        matches!(&answers[1], Err(Error::SaveStatus { binding, .. }) if binding == &held.binding),
        "{:?}",
        answers[1]
    );
    println!("held back for good: {:?}", dynamodb_calls(&aws));
}

#[tokio::test]
async fn a_record_too_large_for_dynamodb_fails_alone_and_its_batch_lands_item_by_item() {
    let moto = Moto::start();
    let aws = state_table(&moto.url).await;
    // Past DynamoDB's 400 KB an item: 40,000 targets of about 12 bytes each.
    let huge = OwnershipRecord {
        targets: (0..40_000u32)
            .map(|i| Target::new(format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), 80))
            .collect(),
        ..record("huge", 0)
    };
    let (web, api) = (record("web", 2), record("api", 3));
    let writes = [
        RecordWrite::Save(&web),
        RecordWrite::Save(&huge),
        RecordWrite::Save(&api),
    ];
    let answers = aws.store.write_records(CLUSTER, &writes).await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert!(
        matches!(&answers[1], Err(Error::SaveOwnership { binding, .. }) if binding == &huge.binding),
        "{:?}",
        answers[1]
    );
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    assert_eq!(
        dynamodb_calls(&aws).get("BatchWriteItem"),
        Some(&4),
        "the batch, refused as a whole, then each item alone: {:?}",
        dynamodb_calls(&aws)
    );
    let mut loaded = aws.store.load(CLUSTER).await.expect("load");
    loaded.sort_by(|a, b| a.binding.cmp(&b.binding));
    assert_eq!(loaded, [api, web]);
}

#[tokio::test]
async fn the_roster_of_pacers_lists_renews_and_forgets_each_in_one_call() {
    let moto = Moto::start();
    let aws = state_table(&moto.url).await;
    let roster = &aws.store;
    let listed = |pacers: Vec<tgb_reconciler::pure::pace::Pacer>| {
        let mut listed: Vec<(String, u64)> =
            pacers.into_iter().map(|p| (p.holder, p.until_ms)).collect();
        listed.sort();
        listed
    };
    assert_eq!(listed(roster.read().await.expect("an empty roster")), []);
    // Holders as the pacing names them: slashes, colons and all.
    let (a, b) = ("lambda/17/1f2e/0", "cli:x/9/3a/1");
    let answer = roster
        .check_in(a, 2_000, 5_000, &[])
        .await
        .expect("a checks in");
    assert_eq!(listed(answer), [(a.to_string(), 5_000)]);
    let answer = roster
        .check_in(b, 6_000, 9_000, &[])
        .await
        .expect("b checks in");
    assert_eq!(
        listed(answer),
        [(b.to_string(), 9_000), (a.to_string(), 5_000)]
    );
    // b renews, taking the lapsed a off in the same call.
    let answer = roster
        .check_in(b, 9_000, 12_000, &[a.to_string()])
        .await
        .expect("b renews");
    assert_eq!(listed(answer), [(b.to_string(), 12_000)]);
    assert_eq!(
        listed(roster.read().await.expect("read")),
        [(b.to_string(), 12_000)]
    );
    roster.check_out(b).await.expect("b checks out");
    roster.check_out(b).await.expect("twice is nothing");
    assert_eq!(listed(roster.read().await.expect("read")), []);
    assert_eq!(
        dynamodb_calls(&aws),
        BTreeMap::from([("GetItem".to_string(), 3), ("UpdateItem".to_string(), 5)])
    );
    // The roster is no cluster's: the clusters' records and statuses do not see it.
    assert!(aws.store.load(CLUSTER).await.expect("records").is_empty());
}

#[tokio::test]
async fn a_check_in_takes_off_only_the_entries_still_lapsed_and_never_fails_for_one_that_is_not() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = Moto::start();
    let aws = state_table(&moto.url).await;
    let roster = &aws.store;
    let holders = |pacers: Vec<tgb_reconciler::pure::pace::Pacer>| {
        let mut holders: Vec<String> = pacers.into_iter().map(|p| p.holder).collect();
        holders.sort();
        holders
    };
    let now = 1_000_000;
    let (live, me) = ("live", "me");
    roster
        .check_in(live, now, now + 30_000, &[])
        .await
        .expect("live checks in");
    // An old answer saw `live` lapsed; it has checked in since. The check-in still lists `me`.
    let answer = roster
        .check_in(me, now, now + 30_000, &[live.to_string()])
        .await
        .expect("a stale lapsed list does not fail the check-in");
    assert_eq!(holders(answer), [live, me], "the live entry stays");
    assert_eq!(
        dynamodb_calls(&aws),
        BTreeMap::from([("UpdateItem".to_string(), 3)]),
        "refused as a whole, then the check-in alone"
    );

    // Lapsed by every account: ended, written by a clock far ahead, unreadable.
    let (ended, ahead, unreadable) = ("ended", "ahead", "unreadable");
    roster
        .check_in(ended, now - 40_000, now - 10_000, &[])
        .await
        .expect("ended");
    roster
        .check_in(ahead, now, now + 3_600_000, &[])
        .await
        .expect("ahead");
    aws_sdk_dynamodb::Client::new(&aws.sdk)
        .update_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S("pacing".into()))
        .key("sk", AttributeValue::S("pacers".into()))
        .update_expression("SET #junk = :junk")
        .expression_attribute_names("#junk", format!("pacer:{unreadable}"))
        .expression_attribute_values(":junk", AttributeValue::S("soon".into()))
        .send()
        .await
        .expect("an unreadable entry");
    aws.calls.reset();
    let lapsed = [ended, ahead, unreadable, "never-listed"].map(String::from);
    let answer = roster
        .check_in(me, now + 1_000, now + 31_000, &lapsed)
        .await
        .expect("me renews");
    assert_eq!(holders(answer), [live, me], "every lapsed one taken off");
    assert_eq!(
        dynamodb_calls(&aws),
        BTreeMap::from([("UpdateItem".to_string(), 1)]),
        "in one call"
    );
}
