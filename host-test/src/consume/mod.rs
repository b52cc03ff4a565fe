//! `newterms consume`: a Kafka consumer-group member that decides match documents, with
//! one term table per assigned partition, so that a partition's memory moves with it.
//!
//! The order of writes is what makes delivery at least once and the answer exact:
//! 1. a batch's alerts (and errors) are written;
//! 2. when a partition's save is due (the core's [`Cadence`]) or it is revoked, those writes
//!    are flushed, then its snapshot goes to the state topic with the offset it covers,
//!    then that offset is committed;
//! 3. a partition assigned (here or elsewhere) resumes at its snapshot's offset, not the
//!    committed one. A crash between 1 and 2 replays records into the older snapshot: the
//!    same decisions, so the same alert ids again.

pub(crate) mod args;
mod kafka;
mod state;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::{json, Value};

use newterms::host::{Cadence, StatePolicy};
use newterms_host::{Limits, Output, Rules, Runtime, Session};

use args::ConsumeArgs;
use kafka::Out;

pub(crate) fn consume(args: &[String]) -> Result<ExitCode> {
    let Some(args) = args::parse(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let rules = Rules::load(&args.rules)?;
    let settings = newterms_host::settings_text(&newterms::Settings {
        input: Some(newterms::InputMode::Matches),
        ..args.settings.clone()
    })
    .map_err(|e| crate::usage(format!("the settings: {e}")))?;
    let rt = crate::runtime(None)?;
    let limits = Limits::for_rules(&rules, &settings);
    // The rules must load before the member joins the group.
    if let Err(e) = Session::open_rules(&rt, &rules, &settings, None, limits)? {
        return Err(crate::usage(format!(
            "the rules do not load: {}{}",
            e.key.map(|k| format!("{k}: ")).unwrap_or_default(),
            e.message
        )));
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.brokers);
    for (k, v) in &args.kafka {
        config.set(k, v);
    }
    let out = Out::new(&config)?;
    let state_partitions = out.partitions(&args.state_topic)?;
    let reader: BaseConsumer = config
        .clone()
        .set("group.id", format!("{}-state-reader", args.group))
        .set("enable.auto.commit", "false")
        // A partition read to its end must not wait out a long poll of the one before.
        .set("fetch.wait.max.ms", "10")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the state reader")?;
    let member = Arc::new(Mutex::new(Member {
        rt,
        rules,
        settings,
        limits,
        topic: args.topic.clone(),
        state_topic: args.state_topic.clone(),
        state_partitions,
        alerts_topic: args.alerts_topic.clone(),
        errors_topic: args.errors_topic.clone(),
        policy: args.policy,
        out,
        reader,
        stdout: std::io::stdout(),
        partitions: BTreeMap::new(),
        released: Vec::new(),
        fatal: None,
        totals: Totals::default(),
        rebalances: 0,
        assigned_ever: false,
    }));
    let consumer: BaseConsumer<Ctx> = config
        .clone()
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create_with_context(Ctx {
            member: member.clone(),
        })
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&[&args.topic])?;
    let result = run(&consumer, &member, &args);
    // Save and commit what is held before leaving the group.
    let closed = lock(&member).release_all(&consumer);
    drop(consumer);
    let m = lock(&member);
    if let Some(path) = &args.stats {
        std::fs::write(path, m.stats_json().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.quiet {
        eprintln!(
            "newterms consume: {} matches, {} alerts, {} errors, {} partitions quarantined",
            m.totals.records, m.totals.alerts, m.totals.errors, m.totals.quarantined
        );
    }
    result.and(closed)?;
    Ok(ExitCode::SUCCESS)
}

/// Polls and decides until idle (with `--exit-when-idle`) or a fatal error.
fn run(consumer: &BaseConsumer<Ctx>, member: &Mutex<Member>, args: &ConsumeArgs) -> Result<()> {
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let mut last_record = Instant::now();
    let mut last_progress = Instant::now();
    let mut batch: Vec<Polled> = Vec::new();
    loop {
        if let Some(e) = lock(member).fatal.take() {
            return Err(e);
        }
        batch.clear();
        let wait = Duration::from_millis(100);
        while batch.len() < args.batch {
            let rebalances = lock(member).rebalances;
            let polled = consumer.poll(if batch.is_empty() {
                wait
            } else {
                Duration::ZERO
            });
            if lock(member).rebalances != rebalances {
                // Messages taken before a rebalance came from the old assignment's
                // positions; each partition now reads on from where its state resumes.
                batch.clear();
            }
            match polled {
                None => break,
                Some(Err(e)) => eprintln!("newterms consume: kafka: {e}"),
                Some(Ok(m)) => batch.push(Polled {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                }),
            }
        }
        let mut m = lock(member);
        m.out.poll();
        if batch.is_empty() {
            // Idle counts from the first assignment: joining a group takes seconds.
            if !m.assigned_ever {
                last_record = Instant::now();
            } else if args
                .exit_when_idle
                .is_some_and(|idle| last_record.elapsed() >= idle)
            {
                return Ok(());
            }
        } else {
            last_record = Instant::now();
            m.totals.first.get_or_insert(last_record);
            m.decide(&mut batch, consumer)?;
            m.totals.last = Some(Instant::now());
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\r\x1b[Knewterms consume: {} matches, {} alerts, {} errors, partitions {:?}",
                m.totals.records,
                m.totals.alerts,
                m.totals.errors,
                m.partitions.keys().collect::<Vec<_>>()
            );
        }
    }
}

fn lock(m: &Mutex<Member>) -> MutexGuard<'_, Member> {
    // A panic elsewhere ends the process; the guard's data is never half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The consumer's context: restores partitions as they are assigned (and starts them at
/// the offset their state covers), saves them as they are revoked.
struct Ctx {
    member: Arc<Mutex<Member>>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut m = lock(&self.member);
        m.rebalances += 1;
        let parts: Vec<i32> = tpl
            .elements_for_topic(&m.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => (|| -> Result<()> {
                for &p in &parts {
                    let start = m.assign(p)?;
                    let topic = m.topic.clone();
                    tpl.set_partition_offset(&topic, p, start)?;
                }
                consumer.assign(tpl)?;
                Ok(())
            })(),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let saved = parts.iter().try_for_each(|&p| m.release(p, consumer));
                saved.and(consumer.unassign().map_err(anyhow::Error::from))
            }
            other => {
                eprintln!("newterms consume: rebalance error {other:?}");
                consumer.unassign().map_err(anyhow::Error::from)
            }
        };
        if let Err(e) = result {
            m.fatal.get_or_insert(e);
        }
    }
}

/// A message taken from the matches topic.
struct Polled {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

#[derive(Default)]
struct Totals {
    records: u64,
    alerts: u64,
    errors: u64,
    quarantined: u64,
    commit_failures: u64,
    /// Records the topic dropped before this member decided them.
    expired: u64,
    /// When the first and the latest batch were decided (for the throughput).
    first: Option<Instant>,
    last: Option<Instant>,
}

/// One assigned partition: its detector, where it is, and when it saves.
struct Partition {
    session: Session,
    next_offset: Option<i64>,
    cadence: Cadence,
    saves: u64,
    /// The first record after the assignment was where the state resumes.
    in_step: bool,
    /// A seek back to `next_offset` was asked for.
    seeking: bool,
    /// The size of the last state message written.
    state_bytes: usize,
    origin: String,
    assigned_at: Instant,
    rebalance_to_first_record: Option<Duration>,
}

/// What a member holds: the rules, the partitions assigned to it, and its writers.
struct Member {
    rt: Runtime,
    rules: Rules,
    settings: String,
    limits: Limits,
    topic: String,
    state_topic: String,
    state_partitions: i32,
    alerts_topic: Option<String>,
    errors_topic: Option<String>,
    policy: StatePolicy,
    out: Out,
    reader: BaseConsumer,
    stdout: std::io::Stdout,
    partitions: BTreeMap<i32, Partition>,
    /// Statistics of the partitions this member gave up.
    released: Vec<Value>,
    fatal: Option<anyhow::Error>,
    totals: Totals,
    /// Rebalance callbacks so far (a batch polled across one is dropped).
    rebalances: u64,
    /// Whether a partition was ever assigned here.
    assigned_ever: bool,
}

impl Member {
    fn open(&self, snapshot: Option<&[u8]>) -> Result<std::result::Result<Session, String>> {
        Ok(
            Session::open_rules(&self.rt, &self.rules, &self.settings, snapshot, self.limits)?
                .map_err(|e| e.message),
        )
    }

    /// Restores partition `p` from its latest state message; where to start reading it.
    fn assign(&mut self, p: i32) -> Result<Offset> {
        let started = Instant::now();
        let key = state::key(&self.topic, p);
        let sp = p % self.state_partitions;
        let latest = kafka::latest(&self.reader, &self.state_topic, sp, &key)?;
        let (session, next_offset, origin) = match latest {
            None => (
                self.open(None)?.map_err(anyhow::Error::msg)?,
                None,
                "no saved state: an empty table from the earliest offset".to_owned(),
            ),
            Some((at, bytes)) => {
                let restored = state::decode(&bytes, &self.topic, p).and_then(|(h, snap)| {
                    let session = self.open(Some(snap))?.map_err(anyhow::Error::msg)?;
                    Ok((session, h.next_offset))
                });
                match restored {
                    Ok((session, next)) => (
                        session,
                        Some(next),
                        format!(
                            "restored from {}[{sp}]@{at}, resuming at offset {next}",
                            self.state_topic
                        ),
                    ),
                    Err(why) => {
                        self.totals.quarantined += 1;
                        let place = format!("{}[{sp}]@{at}", self.state_topic);
                        let reason =
                            format!("state {place} of partition {p} does not restore: {why:#}");
                        let sent = self.report_error(&key, &bytes, &reason, &place);
                        let copy = match sent {
                            Ok(()) => match &self.errors_topic {
                                Some(t) => format!("a copy is in {t}"),
                                None => "no --errors-topic: not kept".to_owned(),
                            },
                            Err(e) => format!("could not copy it to the errors topic: {e:#}"),
                        };
                        eprintln!(
                            "newterms consume: QUARANTINED {reason}; {copy}; partition {p} \
                             STARTS EMPTY from its earliest offset (alerts it already \
                             wrote are written again, with the same ids)"
                        );
                        (
                            self.open(None)?.map_err(anyhow::Error::msg)?,
                            None,
                            format!("quarantined {place}: an empty table from the earliest offset"),
                        )
                    }
                }
            }
        };
        let took = started.elapsed();
        eprintln!(
            "newterms consume: partition {p}: {origin} ({} ms)",
            took.as_millis()
        );
        let start = next_offset.map_or(Offset::Beginning, Offset::Offset);
        self.assigned_ever = true;
        self.partitions.insert(
            p,
            Partition {
                session,
                next_offset,
                cadence: Cadence::new(self.policy),
                saves: 0,
                in_step: false,
                seeking: false,
                state_bytes: 0,
                origin,
                assigned_at: started,
                rebalance_to_first_record: None,
            },
        );
        Ok(start)
    }

    /// Decides a batch of messages, partition by partition.
    fn decide(&mut self, batch: &mut [Polled], consumer: &BaseConsumer<Ctx>) -> Result<()> {
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, m) in batch.iter().enumerate() {
            by_partition.entry(m.partition).or_default().push(i);
        }
        for (p, idx) in by_partition {
            let topic = self.topic.clone();
            let Some(part) = self.partitions.get_mut(&p) else {
                continue; // revoked since it was fetched: its new owner reads it
            };
            let from = part.next_offset.unwrap_or(i64::MIN);
            let mut taken = Vec::with_capacity(idx.len());
            for i in idx {
                let offset = batch[i].offset;
                if offset < from {
                    continue; // covered by the snapshot
                }
                // The first record after an assignment must be the one the state resumes
                // at. If the topic no longer holds it (retention, or a broker's size limit,
                // passed it), the records in between are gone: say so loudly and go on from
                // the earliest. Otherwise seek back to it once, and wait for it.
                if let (false, Some(expected)) = (part.in_step, part.next_offset) {
                    if offset != expected {
                        let (low, _) = consumer
                            .fetch_watermarks(&topic, p, kafka::TIMEOUT)
                            .with_context(|| format!("reading the offsets of {topic}[{p}]"))?;
                        if low > expected && offset == low {
                            self.totals.expired += (low - expected) as u64;
                            eprintln!(
                                "newterms consume: LOST {} records of {topic}[{p}] (offsets \
                                 {expected} to {}): the topic dropped them before they were \
                                 decided; keep retention longer than a partition can go unread",
                                low - expected,
                                low - 1
                            );
                        } else {
                            if !part.seeking {
                                part.seeking = true;
                                let to = Offset::Offset(expected.max(low));
                                consumer.seek(&topic, p, to, kafka::TIMEOUT).with_context(
                                    || format!("seeking {topic}[{p}] to {expected}"),
                                )?;
                            }
                            continue;
                        }
                    }
                }
                part.in_step = true;
                taken.push(i);
            }
            let last = taken.last().map(|&i| batch[i].offset);
            // Each record's payload moves into the call; its batch index names it again for
            // an alert's key or an error's place (built only when there is an error).
            let mut inputs = Vec::with_capacity(taken.len());
            let mut sources = Vec::with_capacity(taken.len());
            for i in taken {
                self.totals.records += 1;
                let m = &mut batch[i];
                match check(m.key.as_deref(), m.payload.as_deref()) {
                    Ok(()) => {
                        inputs.push(m.payload.take().unwrap_or_default());
                        sources.push(i);
                    }
                    Err(why) => {
                        self.totals.errors += 1;
                        let m = &batch[i];
                        let key = m.key.as_deref().map(String::from_utf8_lossy);
                        let payload = m.payload.as_deref().unwrap_or_default();
                        let place = format!("{topic}[{p}]@{}", m.offset);
                        self.report_error(key.as_deref().unwrap_or(""), payload, &why, &place)?;
                    }
                }
            }
            let Some(last) = last else { continue };
            let outputs = match self.partitions.get_mut(&p) {
                Some(part) if !inputs.is_empty() => part.session.process_batch(&inputs)?,
                _ => Vec::new(),
            };
            for o in outputs {
                let m = &batch[sources[o.input as usize]];
                let key = m.key.as_deref().unwrap_or_default();
                match o.output {
                    Output::Emit(alert) => {
                        self.totals.alerts += 1;
                        match &self.alerts_topic {
                            Some(t) => self.out.send(t, None, key, alert.as_bytes(), &[])?,
                            None => {
                                let mut w = self.stdout.lock();
                                w.write_all(alert.as_bytes())?;
                                w.write_all(b"\n")?;
                            }
                        }
                    }
                    Output::Error(e) => {
                        self.totals.errors += 1;
                        let why = format!("{}: {}", e.kind.as_str(), e.message);
                        let place = format!("{topic}[{p}]@{}", m.offset);
                        let payload = &inputs[o.input as usize];
                        self.report_error(&String::from_utf8_lossy(key), payload, &why, &place)?;
                    }
                }
            }
            let Some(part) = self.partitions.get_mut(&p) else {
                continue;
            };
            part.next_offset = Some(last + 1);
            if part.rebalance_to_first_record.is_none() {
                part.rebalance_to_first_record = Some(part.assigned_at.elapsed());
            }
            let now = part.session.record_clock()?;
            if part.cadence.tick(inputs.len() as u64, now) {
                self.save(p, consumer)?;
            }
        }
        Ok(())
    }

    /// Writes a record that could not be decided (or a damaged state message) where
    /// errors go, with the reason.
    fn report_error(&self, key: &str, payload: &[u8], why: &str, place: &str) -> Result<()> {
        match &self.errors_topic {
            Some(t) => self.out.send(
                t,
                None,
                key.as_bytes(),
                payload,
                &[("newterms-error", why), ("newterms-source", place)],
            ),
            None => {
                eprintln!("{}", json!({"source": place, "error": why}));
                Ok(())
            }
        }
    }

    /// Saves partition `p`: everything written so far is delivered, then its snapshot and
    /// the offset it covers, then that offset is committed.
    fn save(&mut self, p: i32, consumer: &BaseConsumer<Ctx>) -> Result<()> {
        self.stdout.lock().flush()?;
        self.out.flush()?;
        let Some(part) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        let Some(next_offset) = part.next_offset else {
            return Ok(()); // nothing read yet: nothing to cover
        };
        let snapshot = part.session.snapshot()?;
        let header = state::Header {
            topic: self.topic.clone(),
            partition: p,
            next_offset,
        };
        let bytes = state::encode(&header, &snapshot)?;
        let key = state::key(&self.topic, p);
        let sp = p % self.state_partitions;
        self.out
            .send(&self.state_topic, Some(sp), key.as_bytes(), &bytes, &[])?;
        self.out.flush()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(next_offset))?;
        // The state message, not the commit, is where a partition resumes: a commit that
        // fails (a rebalance under way, say) only leaves the group's lag figure behind.
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            self.totals.commit_failures += 1;
            eprintln!(
                "newterms consume: could not commit {}[{p}]@{next_offset} ({e}); its state is saved, so nothing is lost",
                self.topic
            );
        }
        part.saves += 1;
        part.state_bytes = bytes.len();
        let now = part.session.record_clock()?;
        part.cadence.saved(now);
        Ok(())
    }

    /// Saves partition `p` and lets it go.
    fn release(&mut self, p: i32, consumer: &BaseConsumer<Ctx>) -> Result<()> {
        if !self.partitions.contains_key(&p) {
            return Ok(());
        }
        self.save(p, consumer)?;
        if let Some(mut part) = self.partitions.remove(&p) {
            let stats = partition_json(p, &mut part)?;
            self.released.push(stats);
        }
        Ok(())
    }

    fn release_all(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<()> {
        let held: Vec<i32> = self.partitions.keys().copied().collect();
        held.into_iter().try_for_each(|p| self.release(p, consumer))
    }

    fn stats_json(&self) -> Value {
        json!({
            "records": self.totals.records,
            "alerts": self.totals.alerts,
            "errors": self.totals.errors,
            "quarantined": self.totals.quarantined,
            "commit_failures": self.totals.commit_failures,
            "expired": self.totals.expired,
            "deciding_seconds": match (self.totals.first, self.totals.last) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                _ => 0.0,
            },
            "partitions": self.released,
        })
    }
}

/// A partition's statistics as it is let go.
fn partition_json(p: i32, part: &mut Partition) -> Result<Value> {
    let mut doc = serde_json::Map::new();
    doc.insert("partition".into(), p.into());
    doc.insert("origin".into(), part.origin.clone().into());
    doc.insert("next_offset".into(), part.next_offset.into());
    doc.insert("saves".into(), part.saves.into());
    doc.insert("state_bytes".into(), part.state_bytes.into());
    doc.insert(
        "rebalance_to_first_record_ms".into(),
        part.rebalance_to_first_record
            .map(|d| d.as_secs_f64() * 1000.0)
            .into(),
    );
    for (k, v) in part.session.stats()?.fields() {
        doc.insert(k, v.into());
    }
    Ok(Value::Object(doc))
}

/// What the host checks before the detector: a key, a payload, and the key the document
/// names (a record keyed otherwise may sit in another term's partition).
fn check(key: Option<&[u8]>, payload: Option<&[u8]>) -> std::result::Result<(), String> {
    let Some(key) = key else {
        return Err("no message key (the edge's `newterms_key`)".into());
    };
    let Some(payload) = payload else {
        return Err("an empty message".into());
    };
    #[derive(serde::Deserialize)]
    struct Keyed<'a> {
        #[serde(borrow)]
        newterms_key: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Keyed<'_>>(payload) {
        Err(e) => Err(format!("invalid-json: {e}")),
        Ok(Keyed { newterms_key: None }) => Err("no `newterms_key` field".into()),
        Ok(Keyed {
            newterms_key: Some(k),
        }) if k.as_bytes() != key => Err(format!(
            "the message key {} is not the document's newterms_key {k}",
            String::from_utf8_lossy(key)
        )),
        Ok(_) => Ok(()),
    }
}
