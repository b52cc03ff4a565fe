//! The scale-out's figures, measured in one run: `newterms consume` throughput per
//! instance, the time from an assignment to the first decided record (the partition's
//! state read and restored first), and the state topic's size per million terms.
//!
//! Against librdkafka's mock cluster (in this process: no broker to install) and the
//! `newterms` command. `NEWTERMS_KAFKA_BENCH_RECORDS` (default 200,000) sets the stream. The mock keeps at most
//! 5 MB a partition, so the writers compress and the stream stays under it.

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

fn main() {
    let n: usize = std::env::var("NEWTERMS_KAFKA_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let identities = (n / 2) as u64;
    let dir = std::env::temp_dir().join(format!("newterms-kafka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let records = dir.join("records.ndjson");
    std::fs::write(&records, newterms_host::gen::sts_calls(n, identities, 30)).expect("write");
    let bin = env!("CARGO_BIN_EXE_newterms");

    let started = Instant::now();
    let edge = Command::new(bin)
        .args([
            "run",
            "--output",
            "matches",
            "-q",
            records.to_str().expect("utf8"),
        ])
        .output()
        .expect("edge");
    let edge_secs = started.elapsed().as_secs_f64();
    assert!(
        edge.status.success(),
        "{}",
        String::from_utf8_lossy(&edge.stderr)
    );
    let docs: Vec<(String, String)> = String::from_utf8_lossy(&edge.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("match");
            (
                v["newterms_key"].as_str().expect("key").to_owned(),
                l.to_owned(),
            )
        })
        .collect();

    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    for (t, p) in [("matches", 12), ("state", 12), ("alerts", 12)] {
        mock.create_topic(t, p, 1).expect("topic");
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let produce = |docs: &[(String, String)]| {
        for (k, d) in docs {
            let mut rec = BaseRecord::to("matches")
                .key(k.as_str())
                .payload(d.as_str());
            while let Err((_, r)) = producer.send(rec) {
                rec = r;
                producer.poll(Duration::from_millis(10));
            }
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
    };
    let consume = |name: &str| -> Value {
        let stats = dir.join(format!("{name}.json"));
        // Saves by records only: the generated month passes in seconds, so the record
        // clock (60 s) would save after every batch, as no live stream ever does.
        let options = "consume --topic matches --state-topic state --alerts-topic alerts \
                       --exit-when-idle 3 --quiet --state-every 10000 \
                       --state-every-seconds 100000000";
        let out = Command::new(bin)
            .args(options.split_whitespace())
            .args([
                "--brokers",
                &brokers,
                "--stats",
                stats.to_str().expect("utf8"),
            ])
            .output()
            .expect("consume");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats")).expect("json")
    };

    let half = docs.len() / 2;
    produce(&docs[..half]);
    let first = consume("first");
    produce(&docs[half..]);
    let second = consume("second");

    for s in [&first, &second] {
        assert_eq!(
            s["expired"], 0,
            "the mock dropped records: lower the record count"
        );
    }
    let parts = |s: &Value| s["partitions"].as_array().cloned().unwrap_or_default();
    let sum = |s: &Value, k: &str| {
        parts(s)
            .iter()
            .map(|p| p[k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    let terms = sum(&second, "terms_held");
    let bytes = sum(&second, "state_bytes");
    let mut to_first: Vec<f64> = parts(&second)
        .iter()
        .filter_map(|p| p["rebalance_to_first_record_ms"].as_f64())
        .collect();
    to_first.sort_by(f64::total_cmp);

    println!("newterms consume against librdkafka's mock cluster ({} matches, {} identities, 30 days, 12 partitions)", docs.len(), identities);
    println!();
    println!("| measure | figure |");
    println!("|---|---:|");
    println!(
        "| edge (`newterms run --output matches`), records/s | {:.0} |",
        n as f64 / edge_secs
    );
    for (name, s) in [
        ("first half, empty tables", &first),
        ("second half, restored tables", &second),
    ] {
        let recs = s["records"].as_f64().unwrap_or(0.0);
        let secs = s["deciding_seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| consume, {name}: matches/s per instance | {:.0} |",
            recs / secs
        );
    }
    println!("| assignment to first decided record, median / max over 12 partitions, ms | {:.0} / {:.0} |",
        to_first.get(to_first.len() / 2).copied().unwrap_or(f64::NAN),
        to_first.last().copied().unwrap_or(f64::NAN));
    println!("| terms held at the end | {terms:.0} |");
    println!("| state: latest messages, bytes | {bytes:.0} |");
    println!(
        "| state per million terms, MB | {:.1} |",
        bytes / terms * 1e6 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}
