//! The Kafka side of `newterms consume`: the producer that writes alerts, errors and state
//! (and reports failed deliveries), and reading a partition's latest state message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// How long a broker request may take before the command gives up on it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Counts deliveries that failed: an alert not delivered must not be covered by a commit.
#[derive(Default)]
pub(crate) struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| format!("to {}: {e}", m.topic()));
            }
        }
    }
}

/// The one producer of a member: alerts, errors and state.
pub(crate) struct Out {
    producer: BaseProducer<Deliveries>,
}

impl Out {
    pub(crate) fn new(config: &ClientConfig) -> Result<Out> {
        let mut config = config.clone();
        // Every write is waited for before the offsets that cover it are committed. Alerts
        // and snapshots are repetitive text: lz4 (a `--kafka compression.type=` overrides).
        config.set("acks", "all").set("enable.idempotence", "true");
        if config.get("compression.type").is_none() {
            config.set("compression.type", "lz4");
        }
        let producer = config
            .create_with_context(Deliveries::default())
            .context("creating the Kafka producer")?;
        Ok(Out { producer })
    }

    /// Queues one message (waiting while the local queue is full).
    pub(crate) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(anyhow!(e).context(format!("writing to {topic}"))),
            }
        }
    }

    /// Waits until everything queued is delivered; an error if anything was not.
    pub(crate) fn flush(&self) -> Result<()> {
        self.producer
            .flush(TIMEOUT)
            .context("waiting for Kafka to take our writes")?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self
                .producer
                .context()
                .first
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            bail!("{failed} writes were not delivered (first {first})");
        }
        Ok(())
    }

    /// Serves delivery reports without waiting.
    pub(crate) fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// How many partitions `topic` has (an error if it does not exist).
    pub(crate) fn partitions(&self, topic: &str) -> Result<i32> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if n == 0 {
            bail!("topic {topic} does not exist (create it; the state topic compacted)");
        }
        Ok(n as i32)
    }
}

/// The last message with `key` in one partition of the state topic, and its offset.
pub(crate) fn latest(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    key: &str,
) -> Result<Option<(i64, Vec<u8>)>> {
    let (low, high) = reader
        .fetch_watermarks(topic, partition, TIMEOUT)
        .with_context(|| format!("reading the offsets of {topic}[{partition}]"))?;
    if high <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
    reader.assign(&tpl)?;
    let started = Instant::now();
    let mut found = None;
    let mut next = low;
    while next < high {
        if started.elapsed() > TIMEOUT {
            bail!("reading {topic}[{partition}]: stalled at offset {next} of {high}");
        }
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => return Err(anyhow!(e).context(format!("reading {topic}[{partition}]"))),
            Some(Ok(m)) => {
                next = m.offset() + 1;
                if m.key() == Some(key.as_bytes()) {
                    found = Some((m.offset(), m.payload().unwrap_or_default().to_vec()));
                }
            }
        }
    }
    reader.unassign()?;
    Ok(found)
}
