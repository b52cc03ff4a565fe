//! `newterms consume` against librdkafka's mock cluster (it speaks the Kafka protocol,
//! consumer groups and rebalances included): a group of consumers over a partitioned topic
//! of match documents writes the alert ids a single detector writes over the records, when
//! a member is killed and another joins mid-stream; a damaged state message is quarantined.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

const PARTITIONS: i32 = 12;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("newterms-kafka-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn newterms(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_newterms"))
        .args(args)
        .output()
        .expect("run newterms");
    assert!(
        out.status.success(),
        "newterms {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn uuids(ndjson: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(ndjson)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("an alert");
            v["kibana.alert.uuid"].as_str().expect("uuid").to_owned()
        })
        .collect()
}

/// The edge's match documents for `records`, and the single detector's alert ids.
fn edge_and_single(records: &Path) -> (Vec<(String, String)>, BTreeSet<String>) {
    let path = records.to_str().expect("utf8");
    let matches = newterms(&["run", "--output", "matches", "-q", path]);
    let docs: Vec<(String, String)> = String::from_utf8_lossy(&matches.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a match document");
            let key = v["newterms_key"].as_str().expect("key").to_owned();
            (key, l.to_owned())
        })
        .collect();
    let single = newterms(&["run", "-q", path]);
    let ids = uuids(&single.stdout);
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "one alert per id in the single run");
    (docs, set)
}

/// The alert ids `newterms run --rule RULES RECORDS` writes, in order.
pub(crate) fn single_run(rules: &Path, records: &Path) -> Vec<String> {
    let out = newterms(&[
        "run",
        "-q",
        "--rule",
        rules.to_str().expect("utf8"),
        records.to_str().expect("utf8"),
    ]);
    uuids(&out.stdout)
}

pub(crate) struct Cluster {
    /// The cluster lives (in this process) as long as the test holds it.
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub(crate) brokers: String,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        let mock = MockCluster::new(1).expect("mock cluster");
        let brokers = mock.bootstrap_servers();
        // The mock keeps at most 5 MB a partition (older data is dropped, as retention
        // would): alerts get as many partitions as matches, and every writer compresses.
        for (topic, n) in [
            ("matches", PARTITIONS),
            ("state", PARTITIONS),
            ("alerts", PARTITIONS),
            ("errors", 1),
        ] {
            mock.create_topic(topic, n, 1).expect("create topic");
        }
        Cluster {
            _mock: mock,
            brokers,
        }
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()
            .expect("producer")
    }

    fn produce(&self, p: &BaseProducer, docs: &[(String, String)]) {
        for (key, doc) in docs {
            let mut rec = BaseRecord::to("matches")
                .key(key.as_str())
                .payload(doc.as_str());
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        p.poll(Duration::from_millis(20));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every message of a topic: key, payload, `newterms-error` header.
    pub(crate) fn read_all(&self, topic: &str) -> Vec<(Vec<u8>, Vec<u8>, Option<String>)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md.topics()[0].partitions().len() as i32;
        let mut out = Vec::new();
        for p in 0..partitions {
            let (low, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "{topic}[{p}] lost its start to the mock's size limit"
            );
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .expect("tpl");
            c.assign(&tpl).expect("assign");
            let started = Instant::now();
            let mut next = low;
            while next < high {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "reading {topic} stalled"
                );
                if let Some(m) = c.poll(Duration::from_millis(200)) {
                    let m = m.expect("message");
                    next = m.offset() + 1;
                    let header = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "newterms-error")
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    out.push((
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().unwrap_or_default().to_vec(),
                        header,
                    ));
                }
            }
        }
        out
    }

    /// The ids of every alert written, duplicates included.
    pub(crate) fn alert_ids(&self) -> Vec<String> {
        uuids(
            &self
                .read_all("alerts")
                .into_iter()
                .flat_map(|(_, mut doc, _)| {
                    doc.push(b'\n');
                    doc
                })
                .collect::<Vec<u8>>(),
        )
    }

    fn consumer(&self, name: &str) -> Child {
        self.consumer_with(name, &[])
    }

    /// A `newterms consume` member named `name`, with `extra` arguments.
    pub(crate) fn consumer_with(&self, name: &str, extra: &[&str]) -> Child {
        let stats = tmp(&format!("{name}.stats.json"));
        let log = std::fs::File::create(tmp(&format!("{name}.log"))).expect("log");
        Command::new(env!("CARGO_BIN_EXE_newterms"))
            .args([
                "consume",
                "--brokers",
                &self.brokers,
                "--topic",
                "matches",
                "--state-topic",
                "state",
                "--alerts-topic",
                "alerts",
                "--errors-topic",
                "errors",
                "--state-every",
                "1000",
                "--state-every-seconds",
                "86400",
                "--exit-when-idle",
                "20",
                "--stats",
                stats.to_str().expect("utf8"),
                "--kafka",
                "session.timeout.ms=6000",
                "--kafka",
                "heartbeat.interval.ms=500",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn newterms consume")
    }
}

pub(crate) fn wait(mut c: Child, name: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(status) = c.try_wait().expect("wait") {
            let log = std::fs::read_to_string(tmp(&format!("{name}.log"))).unwrap_or_default();
            assert!(status.success(), "{name} failed: {log}");
            let stats =
                std::fs::read_to_string(tmp(&format!("{name}.stats.json"))).expect("stats file");
            return serde_json::from_str(&stats).expect("stats JSON");
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = c.kill();
            panic!("{name} did not finish");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 3 consumers over 12 partitions; one killed and one added mid-stream; the alert ids equal
/// the single detector's.
#[test]
fn a_group_gives_the_single_answer_through_a_kill_and_a_join() {
    let records = tmp("group.ndjson");
    std::fs::write(&records, newterms_host::gen::sts_calls(210_000, 6_000, 32))
        .expect("write records");
    let (docs, expected) = edge_and_single(&records);
    assert_eq!(docs.len(), 210_000, "one match per record");
    let terms: BTreeSet<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(terms.len() >= 5_000, "{} terms", terms.len());
    assert!(
        expected.len() > terms.len(),
        "some terms are new again after the window"
    );

    let cluster = Cluster::start();
    let producer = cluster.producer();
    let third = docs.len() / 3;
    cluster.produce(&producer, &docs[..third]);
    let a = cluster.consumer("a");
    let b = cluster.consumer("b");
    let mut c = cluster.consumer("c");
    std::thread::sleep(Duration::from_secs(8));
    cluster.produce(&producer, &docs[third..2 * third]);
    // Mid-stream: c dies without saving what it decided since its last save.
    c.kill().expect("kill c");
    let _ = c.wait();
    let d = cluster.consumer("d");
    cluster.produce(&producer, &docs[2 * third..]);
    let stats: Vec<Value> = [(a, "a"), (b, "b"), (d, "d")]
        .into_iter()
        .map(|(child, name)| wait(child, name))
        .collect();

    let ids = cluster.alert_ids();
    let got: BTreeSet<String> = ids.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} expected, {} got; missing {missing:?}, extra {extra:?}",
        expected.len(),
        got.len()
    );
    eprintln!(
        "group: {} alerts written for {} ids ({} duplicates after the kill)",
        ids.len(),
        got.len(),
        ids.len() - got.len()
    );
    assert!(cluster.read_all("errors").is_empty(), "no errors");
    for s in &stats {
        assert_eq!(
            s["expired"], 0,
            "no record dropped by the mock before it was decided"
        );
    }
    // Partitions moved between members with their memory.
    let origins: Vec<String> = stats
        .iter()
        .flat_map(|s| s["partitions"].as_array().cloned().unwrap_or_default())
        .map(|p| p["origin"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        origins.iter().any(|o| o.starts_with("restored from")),
        "some partition was restored from its state: {origins:?}"
    );
    let mut per_partition: BTreeMap<i64, u64> = BTreeMap::new();
    for s in &stats {
        for p in s["partitions"].as_array().into_iter().flatten() {
            per_partition
                .entry(p["partition"].as_i64().expect("partition"))
                .or_default();
        }
    }
    assert_eq!(
        per_partition.len(),
        PARTITIONS as usize,
        "every partition was held"
    );
}

/// A damaged state message: reported loudly, copied to the errors topic, and the partition
/// starts empty from its earliest offset (so the answer is still the single one).
#[test]
fn a_damaged_state_message_is_quarantined() {
    let records = tmp("damaged.ndjson");
    std::fs::write(&records, newterms_host::gen::sts_calls(6_000, 300, 20)).expect("write records");
    let (docs, expected) = edge_and_single(&records);
    let cluster = Cluster::start();
    let producer = cluster.producer();
    cluster.produce(&producer, &docs);
    // Partition 5's state: garbage under its key.
    let rec = BaseRecord::to("state")
        .partition(5)
        .key("matches/5")
        .payload("newterms-partition-state/1\n{\"topic\":\"matches\"}\nnot a checksum\n");
    producer.send(rec).map_err(|(e, _)| e).expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");

    let stats = wait(cluster.consumer("q"), "q");
    let log = std::fs::read_to_string(tmp("q.log")).expect("log");
    assert!(
        log.contains("QUARANTINED state state[5]") && log.contains("partition 5 STARTS EMPTY"),
        "{log}"
    );
    assert_eq!(stats["quarantined"], 1);
    let errors = cluster.read_all("errors");
    assert_eq!(errors.len(), 1, "the damaged message, copied");
    assert_eq!(errors[0].0, b"matches/5");
    assert!(errors[0]
        .2
        .as_deref()
        .unwrap_or("")
        .contains("does not restore"));
    let got: BTreeSet<String> = cluster.alert_ids().into_iter().collect();
    assert_eq!(got, expected);
}

/// Records that are not match documents are counted and sent to the errors topic.
#[test]
fn bad_records_go_to_the_errors_topic() {
    let cluster = Cluster::start();
    let producer = cluster.producer();
    let records = tmp("bad.ndjson");
    std::fs::write(&records, newterms_host::gen::sts_calls(50, 10, 2)).expect("write records");
    let (docs, expected) = edge_and_single(&records);
    let mut bad = vec![
        ("k1".to_owned(), "not json".to_owned()),
        ("k2".to_owned(), r#"{"no":"key"}"#.to_owned()),
    ];
    // A document keyed otherwise than it says.
    bad.push(("other".to_owned(), docs[0].1.clone()));
    cluster.produce(&producer, &bad);
    cluster.produce(&producer, &docs);
    let stats = wait(cluster.consumer("bad"), "bad");
    assert_eq!(stats["errors"], 3);
    let errors = cluster.read_all("errors");
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|(_, _, why)| why.is_some()));
    let got: BTreeSet<String> = cluster.alert_ids().into_iter().collect();
    assert_eq!(got, expected);
}
