//! Opening a detector: its rules, the settings over them and the tables of a snapshot,
//! in one constructor; and the snapshot that saves them.

use super::Detector;
use crate::detection::Detection;
use crate::error::ErrorKind;
use crate::gate::Gate;
use crate::index::{Admissions, IndexFields, TagIndices};
use crate::record::LayoutBuilder;
use crate::rule::{InputMode, OutputMode, Rule, RuleError, Settings};
use crate::snapshot::{self, SnapshotError};
use crate::stats::Stats;

impl Detector {
    /// Opens a detector: the rules a host found as `(source, text)`, with `settings`
    /// over each rule's own, and the term tables of a snapshot if one is given.
    ///
    /// - No rule is the built-in rule; one is that rule (an empty text is the built-in
    ///   rule); more are a pack, where each source names its rule in load errors and rule
    ///   ids must be distinct. A pack's host settings (`output`, `input`,
    ///   `max_record_bytes`, `on_error`, `state_*`) are its first rule's.
    /// - A snapshot (from any build) must hold the same rule id and new-terms fields.
    ///   In a pack each rule takes the table saved under its id; a rule the snapshot does
    ///   not hold starts empty, a saved rule no longer in the pack is dropped, and a
    ///   snapshot that holds none of the pack's rules is refused.
    pub fn open<S: AsRef<str>, T: AsRef<str>>(
        rules: &[(S, T)],
        settings: &Settings,
        snapshot: Option<&[u8]>,
    ) -> Result<Detector, RuleError> {
        let detector = match rules {
            [] => Detector::with_rules(vec![Rule::parse("", settings)?], &[])?,
            [(_, text)] => Detector::with_rules(vec![Rule::parse(text.as_ref(), settings)?], &[])?,
            many => Detector::pack(many, settings)?,
        };
        match snapshot {
            None => Ok(detector),
            Some(bytes) => detector.restored(bytes),
        }
    }

    /// Opens one rule file (empty: the built-in rule) with settings as a user writes
    /// them in TOML (`output = "annotate"`).
    pub fn from_config(rule_text: &str, settings: &str) -> Result<Detector, RuleError> {
        Detector::open(
            &[("rule", rule_text)],
            &Settings::from_toml(settings)?,
            None,
        )
    }

    fn pack<S: AsRef<str>, T: AsRef<str>>(
        rules: &[(S, T)],
        settings: &Settings,
    ) -> Result<Detector, RuleError> {
        let mut parsed: Vec<Rule> = Vec::with_capacity(rules.len());
        let mut sources: Vec<&str> = Vec::with_capacity(rules.len());
        for (source, text) in rules {
            let (source, text) = (source.as_ref(), text.as_ref());
            let in_pack = |error| RuleError::in_pack(source, error);
            if text.trim().is_empty() {
                return Err(in_pack(RuleError::key("rule", "the rule file is empty")));
            }
            let rule = Rule::parse(text, settings).map_err(in_pack)?;
            if let Some(i) = parsed.iter().position(|r| r.rule_id == rule.rule_id) {
                return Err(in_pack(RuleError::key(
                    "rule.rule_id",
                    format!("`{}` is also the id of {}", rule.rule_id, sources[i]),
                )));
            }
            parsed.push(rule);
            sources.push(source);
        }
        Detector::with_rules(parsed, &sources)
    }

    fn with_rules(rules: Vec<Rule>, sources: &[&str]) -> Result<Detector, RuleError> {
        let Some(first) = rules.first() else {
            return Err(RuleError::key("rule", "the pack has no rules"));
        };
        let output = first.settings.output();
        let input = first.settings.input();
        if input == InputMode::Matches && output == OutputMode::Matches {
            return Err(RuleError::key(
                "newterms.output",
                "a detector reading matches (input = \"matches\") cannot write them",
            ));
        }
        let max_record_bytes = first.settings.max_record_bytes();
        let host_index = first.settings.index.clone();
        let tags = TagIndices::new(&first.settings.index_by_tag).map_err(|(tag, message)| {
            RuleError::key(format!("newterms.index_by_tag.{tag}"), message)
        })?;
        let admissions = Admissions::new(
            rules.iter().map(|r| r.index.clone()).collect(),
            first.settings.unknown_index(),
        );
        let mut b = LayoutBuilder::new();
        let mut detections = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            let d = Detection::compile(rule, &mut b).map_err(|error| match sources.get(i) {
                Some(source) => RuleError::in_pack(source, error),
                None => error,
            })?;
            detections.push(d);
        }
        let event_id = b.field("event.id");
        let index_fields = admissions
            .any_patterns()
            .then(|| IndexFields::register(&mut b));
        let layout = b.build();
        for d in &mut detections {
            d.finish(&layout);
        }
        let index = super::IndexGate::new(index_fields, host_index, tags, admissions);
        let gate = (detections.len() > 1)
            .then(|| {
                let prefilters: Vec<Option<&crate::Prefilter>> =
                    detections.iter().map(|d| d.prefilter.as_ref()).collect();
                let foreseen = index.foreseen_rules();
                Gate::new(&prefilters, foreseen.is_some(), foreseen)
            })
            .flatten();
        let line_prefilter = match detections.as_slice() {
            [one] => one.prefilter.clone().filter(crate::Prefilter::is_active),
            _ => None,
        };
        let n = detections.len();
        Ok(Detector {
            layout,
            rules: detections,
            gate,
            event_id,
            output,
            input,
            max_record_bytes,
            stats: Stats::default(),
            frame_errors: [0; ErrorKind::ALL.len()],
            candidates: Vec::with_capacity(n),
            stamp: vec![0; n],
            generation: 0,
            line_prefilter,
            index,
            seen: Default::default(),
            changed: false,
        })
    }

    /// This detector with the term tables of a snapshot.
    fn restored(mut self, snapshot: &[u8]) -> Result<Detector, RuleError> {
        self.restore_state(snapshot)?;
        Ok(self)
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), RuleError> {
        let err = |error| RuleError::Snapshot { error };
        let snaps = snapshot::decode_any(bytes).map_err(err)?;
        let mut used = 0;
        let mut first_other = None;
        for snap in snaps {
            match self
                .rules
                .iter_mut()
                .find(|d| d.rule.rule_id == snap.rule_id)
            {
                Some(d) => {
                    d.restore(snap).map_err(err)?;
                    used += 1;
                }
                None => {
                    first_other.get_or_insert(snap);
                }
            }
        }
        if let (0, Some(snap)) = (used, first_other) {
            let rule = &self.rules[0].rule;
            let what = if self.rules.len() == 1 {
                format!(
                    "rule {} over [{}]",
                    rule.rule_id,
                    rule.new_terms_fields.join(", ")
                )
            } else {
                format!("any rule of this pack of {}", self.rules.len())
            };
            return Err(err(SnapshotError::OtherRule {
                snapshot: format!("rule {} over [{}]", snap.rule_id, snap.fields.join(", ")),
                rule: what,
            }));
        }
        Ok(())
    }

    /// The term tables as portable bytes (see [`crate::snapshot`]): one rule's snapshot,
    /// or for a pack the container of its rules' snapshots.
    pub fn snapshot(&self) -> Vec<u8> {
        match self.rules.as_slice() {
            [one] => one.snapshot().encode(),
            many => {
                snapshot::encode_pack(&many.iter().map(Detection::snapshot).collect::<Vec<_>>())
            }
        }
    }
}
