//! Which index a record belongs to, and which rules that index admits.
//!
//! Elastic runs a rule only over the indices its `index` patterns name. A stream has no
//! indices, so the record's index is derived, in one place ([`IndexFields::read`]),
//! in this order:
//!
//! 1. `data_stream.type`-`data_stream.dataset`-`data_stream.namespace`, when the record
//!    has all three (how Elastic Agent names its data streams);
//! 2. `{agent.type}-{agent.version}` when `agent.type` names a Beat (`filebeat`,
//!    `winlogbeat`, ...): Beats write to indices named after the shipper and its version
//!    (`winlogbeat-8.11.0`; `unknown` stands for a missing version);
//! 3. the host's `index` setting, the index it names for the whole stream;
//! 4. `logs-{event.dataset}-default`, when the record names its dataset (how Elastic Agent
//!    would name its data stream);
//! 5. `logs-aws.cloudtrail-default` for a raw CloudTrail record (as the field mapping
//!    recognises one: string `eventSource` and `eventName` at the top level);
//! 6. otherwise the index is unknown, and the `unknown_index` setting says what a rule
//!    with index patterns does with it (by default it skips the record).
//!
//! Steps 1, 2 and 4 read the record's own fields, never values the CloudTrail mapping
//! implies.
//!
//! Patterns are read as Elasticsearch reads an index expression ([`Patterns`]).

use std::borrow::Cow;

use crate::record::{Field, FieldId, Layout, LayoutBuilder, RecordView};

/// The Beats whose indices are named after them (`{beat}-{version}`).
const BEATS: &[&str] = &[
    "auditbeat",
    "filebeat",
    "functionbeat",
    "heartbeat",
    "metricbeat",
    "packetbeat",
    "winlogbeat",
];

/// The index of a raw CloudTrail record: the data stream Elastic's AWS integration writes.
pub const CLOUDTRAIL_INDEX: &str = "logs-aws.cloudtrail-default";

/// Whether `name` can name a stream's index (the `index` setting): not empty, and no
/// pattern (`*`, `,`) or cluster (`:`) in it.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['*', ',', ':']) {
        return Err(format!(
            "`{name}` is not an index name (a name such as logs-aws.cloudtrail-default, no pattern)"
        ));
    }
    Ok(())
}

/// What a rule with index patterns does with a record whose index is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownIndex {
    /// The rule does not see it (as Elastic, where every document has an index).
    Skip,
    /// The rule sees it, as if it were in the rule's indices.
    Match,
}

/// One expression of an index list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// Adds the indices the pattern matches.
    Include(String),
    /// Takes the indices the pattern matches out of those added before it.
    Exclude(String),
}

/// A rule's index patterns, as Elasticsearch reads an index expression: a list (each
/// entry may itself be a comma-separated list), `*` wildcards, `-pattern` exclusions that
/// take out what the expressions before them added, and `cluster:pattern` names of a
/// remote cluster's indices, which match nothing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns {
    exprs: Vec<Expr>,
    /// The remote (`cluster:pattern`) and failure-store (`pattern::failures`)
    /// expressions, which no record here can be in.
    elsewhere: Vec<String>,
}

impl Patterns {
    /// Reads a rule's `index` list. Errors say which entry cannot be read.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Patterns, String> {
        let mut exprs = Vec::new();
        let mut elsewhere = Vec::new();
        for entry in list {
            for raw in entry.as_ref().split(',') {
                let text = raw.trim();
                if text.is_empty() {
                    return Err(format!("`{}`: an empty index pattern", entry.as_ref()));
                }
                let (exclude, body) = match text.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, text),
                };
                // A selector: `::data` is the data itself, `::failures` the failure store.
                let (body, selector) = match body.split_once("::") {
                    Some((b, s)) => (b, Some(s)),
                    None => (body, None),
                };
                match selector {
                    None | Some("data") => {}
                    Some("failures") => {
                        elsewhere.push(text.to_owned());
                        continue;
                    }
                    Some(other) => {
                        return Err(format!("`{text}`: unknown selector `::{other}`"));
                    }
                }
                if body.contains(':') {
                    elsewhere.push(text.to_owned());
                    continue;
                }
                if body.is_empty() {
                    return Err(format!("`{text}`: an empty index pattern"));
                }
                exprs.push(match exclude {
                    true => Expr::Exclude(body.to_owned()),
                    false => Expr::Include(body.to_owned()),
                });
            }
        }
        Ok(Patterns { exprs, elsewhere })
    }

    /// Whether `index` is one of the indices the patterns name.
    pub fn admits(&self, index: &str) -> bool {
        let mut admitted = false;
        for e in &self.exprs {
            match e {
                Expr::Include(p) if !admitted => {
                    admitted = wildcard(p.as_bytes(), index.as_bytes())
                }
                Expr::Exclude(p) if admitted => {
                    admitted = !wildcard(p.as_bytes(), index.as_bytes())
                }
                _ => {}
            }
        }
        admitted
    }

    /// The expressions that name indices of another cluster or a failure store: no
    /// record here is in them (a host says so at load).
    pub fn elsewhere(&self) -> &[String] {
        &self.elsewhere
    }

    /// Whether some local index could be admitted (false when every expression names a
    /// remote cluster's indices).
    pub fn names_local(&self) -> bool {
        self.exprs.iter().any(|e| matches!(e, Expr::Include(_)))
    }
}

/// The index each tag names (the `index_by_tag` setting): an exact tag first, else the
/// longest pattern that matches.
#[derive(Debug, Clone, Default)]
pub(crate) struct TagIndices {
    /// Longest pattern first.
    by_length: Vec<(String, String)>,
}

impl TagIndices {
    /// From the setting; an index that is no index name is an error naming its tag.
    pub(crate) fn new(
        table: &crate::exceptions::ValueLists,
    ) -> Result<TagIndices, (String, String)> {
        let mut by_length = Vec::with_capacity(table.len());
        for (tag, index) in table {
            check_name(index).map_err(|e| (tag.clone(), e))?;
            by_length.push((tag.clone(), index.clone()));
        }
        by_length.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(TagIndices { by_length })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_length.is_empty()
    }

    /// The index the tag names, if any pattern matches it.
    pub(crate) fn of(&self, tag: &str) -> Option<&str> {
        let exact = self.by_length.iter().find(|(p, _)| p == tag);
        exact
            .or_else(|| {
                self.by_length
                    .iter()
                    .find(|(p, _)| wildcard(p.as_bytes(), tag.as_bytes()))
            })
            .map(|(_, i)| i.as_str())
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of bytes (the only
/// wildcard of an index pattern). Greedy with one backtrack point: linear in practice,
/// and no allocation.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// The fields a record's index is read from, registered in the shared layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexFields {
    ds_type: FieldId,
    ds_dataset: FieldId,
    ds_namespace: FieldId,
    agent_type: FieldId,
    agent_version: FieldId,
    event_dataset: FieldId,
}

/// A record's index: named, or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexOf<'s> {
    Named(&'s str),
    Unknown,
}

impl IndexFields {
    pub(crate) fn register(b: &mut LayoutBuilder) -> IndexFields {
        IndexFields {
            ds_type: b.field("data_stream.type"),
            ds_dataset: b.field("data_stream.dataset"),
            ds_namespace: b.field("data_stream.namespace"),
            agent_type: b.field("agent.type"),
            agent_version: b.field("agent.version"),
            event_dataset: b.field("event.dataset"),
        }
    }

    /// The record's index (the order is the module's), written into `buf` when it is
    /// built from the record's fields; and whether the record named it itself (its
    /// `data_stream`, a Beat's `agent`, or its `event.dataset`).
    pub(crate) fn read<'s>(
        &self,
        view: &RecordView<'_>,
        layout: &Layout,
        host: Option<&'s str>,
        buf: &'s mut String,
    ) -> (IndexOf<'s>, bool) {
        let own = |id| one_value(view.own(layout, id));
        buf.clear();
        if let (Some(t), Some(d), Some(n)) = (
            own(self.ds_type),
            own(self.ds_dataset),
            own(self.ds_namespace),
        ) {
            for (i, part) in [t, d, n].iter().enumerate() {
                if i > 0 {
                    buf.push('-');
                }
                buf.push_str(part);
            }
            return (IndexOf::Named(buf), true);
        }
        if let Some(beat) = own(self.agent_type).filter(|t| BEATS.contains(&t.as_ref())) {
            let version = own(self.agent_version);
            buf.push_str(&beat);
            buf.push('-');
            buf.push_str(version.as_deref().unwrap_or("unknown"));
            return (IndexOf::Named(buf), true);
        }
        if let Some(host) = host {
            return (IndexOf::Named(host), false);
        }
        if let Some(dataset) = own(self.event_dataset) {
            buf.push_str("logs-");
            buf.push_str(&dataset);
            buf.push_str("-default");
            return (IndexOf::Named(buf), true);
        }
        if view.is_cloudtrail() {
            return (IndexOf::Named(CLOUDTRAIL_INDEX), false);
        }
        (IndexOf::Unknown, false)
    }
}

/// A field's one scalar value as text; an array, an object or an empty text is none.
fn one_value<'v>(field: Field<'v, '_>) -> Option<Cow<'v, str>> {
    match field {
        Field::Values([one]) => Some(one.text()).filter(|t| !t.is_empty()),
        _ => None,
    }
}

/// What a record's text says of its index before it is parsed.
///
/// Soundness: step 1 of the derivation needs a key `data_stream` (nested or dotted), so a
/// text without `"data_stream` has none; step 2 needs `agent.type` to be one of
/// [`BEATS`], a string the text then holds with its quotes (`"filebeat"`); step 4 needs
/// a key `dataset` (nested, `"dataset"`, or the last of a dotted key, `.dataset"`). A text
/// without any of these literals (where no escape can hide one) takes its index from step
/// 3 or later. Step 5 needs top-level `"eventSource"` and `"eventName"` keys, so a text
/// without both is not a raw CloudTrail record. The gate searches these literals along
/// with the rules' ([`crate::gate`]); only the absence of a literal is ever relied on. Each
/// is as long as the keys and values allow (the shortest is 9 bytes), since the shortest
/// literal of a skip search bounds how far it skips.
pub(crate) mod evidence {
    /// Literals whose presence means the record may name its own index.
    pub(crate) const NAMES_ITSELF: [&[u8]; 10] = [
        b"\"data_stream",
        b"\"auditbeat\"",
        b"\"filebeat\"",
        b"\"functionbeat\"",
        b"\"heartbeat\"",
        b"\"metricbeat\"",
        b"\"packetbeat\"",
        b"\"winlogbeat\"",
        b"\"dataset\"",
        b".dataset\"",
    ];
    /// The keys a raw CloudTrail record must have.
    pub(crate) const CLOUDTRAIL_SOURCE: &[u8] = b"\"eventSource\"";
    pub(crate) const CLOUDTRAIL_NAME: &[u8] = b"\"eventName\"";
}

/// What the text of a record tells of its index before it is parsed (see [`evidence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Foretold {
    /// The record may name its own index: known only after the parse.
    AfterParse,
    /// The host's index (step 3).
    Host,
    /// A raw CloudTrail record or an unknown index.
    CloudTrailOrUnknown,
    /// Not a raw CloudTrail record, and no index of its own: unknown.
    Unknown,
}

impl Foretold {
    /// From what the gate's search found: `names_itself` (a literal of
    /// [`evidence::NAMES_ITSELF`], or an escape that could hide one) and whether both
    /// CloudTrail keys were found.
    pub(crate) fn from_search(names_itself: bool, host: bool, cloudtrail_keys: bool) -> Foretold {
        match (names_itself, host, cloudtrail_keys) {
            (true, _, _) => Foretold::AfterParse,
            (false, true, _) => Foretold::Host,
            (false, false, true) => Foretold::CloudTrailOrUnknown,
            (false, false, false) => Foretold::Unknown,
        }
    }
}

/// Which rules an index admits, decided once per distinct index text (up to a bound)
/// and kept: each distinct answer is a *set*, numbered, so that what depends on the
/// admitted rules alone (a search for their literals) is built once per set.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    /// Each rule's patterns (`None`: no `index`, every record).
    patterns: Vec<Option<Patterns>>,
    /// The set of each index text seen.
    cache: hashbrown::HashMap<Box<str>, u32>,
    /// The sets, by id; set 0 is an unknown index's.
    sets: Vec<Box<[bool]>>,
    /// Each set's id.
    ids: hashbrown::HashMap<Box<[bool]>, u32>,
}

/// Distinct index texts whose admissions are kept; past it each is decided anew.
const CACHED_INDICES: usize = 1024;

/// The set of an unknown index.
pub(crate) const UNKNOWN_SET: u32 = 0;

impl Admissions {
    pub(crate) fn new(patterns: Vec<Option<Patterns>>, unknown: UnknownIndex) -> Admissions {
        let of_unknown: Box<[bool]> = patterns
            .iter()
            .map(|p| p.is_none() || unknown == UnknownIndex::Match)
            .collect();
        let mut ids = hashbrown::HashMap::new();
        ids.insert(of_unknown.clone(), UNKNOWN_SET);
        Admissions {
            patterns,
            cache: hashbrown::HashMap::new(),
            sets: vec![of_unknown],
            ids,
        }
    }

    /// Whether any rule has index patterns (else every rule sees every record, and no
    /// index need be derived).
    pub(crate) fn any_patterns(&self) -> bool {
        self.patterns.iter().any(Option::is_some)
    }

    /// Whether rule `r` names indices (else its index never matters to it).
    pub(crate) fn has_patterns(&self, r: usize) -> bool {
        self.patterns.get(r).is_some_and(Option::is_some)
    }

    /// Which rules `index` admits, by rule.
    pub(crate) fn of(&mut self, index: IndexOf<'_>) -> Cow<'_, [bool]> {
        match self.set_of(index) {
            Ok(set) => Cow::Borrowed(self.set(set)),
            Err(decided) => Cow::Owned(decided.into_vec()),
        }
    }

    /// The set of rules `index` admits, by id; past [`CACHED_INDICES`] index texts, a new
    /// text's admissions are decided anew each time and returned as they are.
    pub(crate) fn set_of(&mut self, index: IndexOf<'_>) -> Result<u32, Box<[bool]>> {
        let name = match index {
            IndexOf::Unknown => return Ok(UNKNOWN_SET),
            IndexOf::Named(n) => n,
        };
        if let Some(&set) = self.cache.get(name) {
            return Ok(set);
        }
        let decided: Box<[bool]> = self
            .patterns
            .iter()
            .map(|p| match p {
                Some(p) => p.admits(name),
                None => true,
            })
            .collect();
        if self.cache.len() >= CACHED_INDICES {
            return Err(decided);
        }
        let set = match self.ids.get(&decided) {
            Some(&set) => set,
            None => {
                let set = self.sets.len() as u32;
                self.ids.insert(decided.clone(), set);
                self.sets.push(decided);
                set
            }
        };
        self.cache.insert(name.into(), set);
        Ok(set)
    }

    /// The rules set `set` admits, by rule (empty for an id it never gave).
    pub(crate) fn set(&self, set: u32) -> &[bool] {
        self.sets.get(set as usize).map_or(&[], |s| s)
    }

    /// The rules a foretold index could admit (before the parse).
    pub(crate) fn foretold(&mut self, f: Foretold, host: Option<&str>) -> Vec<bool> {
        let n = self.patterns.len();
        match (f, host) {
            (Foretold::AfterParse, _) => vec![true; n],
            (Foretold::Host, Some(h)) => self.of(IndexOf::Named(h)).into_owned(),
            (Foretold::Host, None) | (Foretold::Unknown, _) => self.set(UNKNOWN_SET).to_vec(),
            (Foretold::CloudTrailOrUnknown, _) => {
                let ct = self.of(IndexOf::Named(CLOUDTRAIL_INDEX)).into_owned();
                ct.iter()
                    .zip(self.set(UNKNOWN_SET).iter())
                    .map(|(a, b)| *a || *b)
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Patterns {
        Patterns::parse(list).expect("patterns")
    }

    #[test]
    fn every_beat_is_evidence_of_an_own_index() {
        for beat in BEATS {
            let quoted = format!("\"{beat}\"");
            assert!(
                evidence::NAMES_ITSELF.contains(&quoted.as_bytes()),
                "{quoted} is a Beat's name, and so names its record's index"
            );
        }
    }

    #[test]
    fn wildcards_match_as_elasticsearch_does() {
        assert!(wildcard(
            b"logs-aws.cloudtrail-*",
            b"logs-aws.cloudtrail-default"
        ));
        assert!(wildcard(b"logs-*", b"logs-"));
        assert!(!wildcard(b"logs-*", b"logs"));
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"*beat-*", b"winlogbeat-8.11.0"));
        assert!(wildcard(
            b"logs-endpoint.events.*",
            b"logs-endpoint.events.process-default"
        ));
        assert!(!wildcard(
            b"logs-endpoint.events.*",
            b"logs-endpoint.alerts-default"
        ));
        assert!(wildcard(b"a*b*c", b"aXbYbZc"));
        assert!(!wildcard(b"a*b*c", b"aXbYbZ"));
        assert!(wildcard(b"exact", b"exact"));
        assert!(!wildcard(b"exact", b"exactly"));
        assert!(wildcard(b"**x", b"x"));
    }

    #[test]
    fn lists_exclusions_and_remote_clusters() {
        let ps = p(&["logs-*", "-logs-test-*", "filebeat-*,winlogbeat-*"]);
        assert!(ps.admits("logs-aws.cloudtrail-default"));
        assert!(!ps.admits("logs-test-x"));
        assert!(ps.admits("winlogbeat-8.0.0"));
        assert!(!ps.admits("metrics-x"));
        // An exclusion takes out only what came before it; a later inclusion adds back.
        let ps = p(&["-logs-a*", "logs-*"]);
        assert!(ps.admits("logs-a1"));
        let ps = p(&["logs-*", "-logs-a*", "logs-ab*"]);
        assert!(!ps.admits("logs-a1"));
        assert!(ps.admits("logs-ab1"));
        // Another cluster's indices and the failure store: nothing here.
        let ps = p(&["remote:logs-*", "*:filebeat-*", "logs-x-*::failures"]);
        assert!(!ps.admits("logs-aws.cloudtrail-default"));
        assert!(!ps.admits("filebeat-8"));
        assert!(!ps.admits("logs-x-y"));
        assert_eq!(ps.elsewhere().len(), 3);
        assert!(!ps.names_local());
        assert!(p(&["logs-*::data"]).admits("logs-a"));
        assert!(Patterns::parse(&["logs-*,"]).is_err());
        assert!(Patterns::parse(&["-"]).is_err());
        assert!(Patterns::parse(&["logs::bogus"]).is_err());
    }

    #[test]
    fn a_tag_names_its_index_exact_first_then_the_longest_pattern() {
        let table: crate::exceptions::ValueLists = [
            ("aws.*", "logs-aws.cloudtrail-default"),
            ("aws.guardduty*", "logs-aws.guardduty-default"),
            ("*", "logs-generic-default"),
            ("aws.guardduty", "logs-aws.guardduty-exact"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let t = TagIndices::new(&table).expect("table");
        assert_eq!(t.of("aws.cloudtrail"), Some("logs-aws.cloudtrail-default"));
        assert_eq!(t.of("aws.guardduty.x"), Some("logs-aws.guardduty-default"));
        assert_eq!(t.of("aws.guardduty"), Some("logs-aws.guardduty-exact"));
        assert_eq!(t.of("syslog"), Some("logs-generic-default"));
        let bad: crate::exceptions::ValueLists = [("x".to_owned(), "logs-*".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(
            TagIndices::new(&bad).err().map(|e| e.0),
            Some("x".to_owned())
        );
    }

    #[test]
    fn an_index_is_decided_once_and_unknown_follows_the_policy() {
        let mut a = Admissions::new(vec![Some(p(&["logs-aws*"])), None], UnknownIndex::Skip);
        assert_eq!(
            &*a.of(IndexOf::Named("logs-aws.cloudtrail-default")),
            &[true, true]
        );
        assert_eq!(&*a.of(IndexOf::Named("winlogbeat-8")), &[false, true]);
        assert_eq!(&*a.of(IndexOf::Unknown), &[false, true]);
        assert_eq!(a.cache.len(), 2);
        let mut m = Admissions::new(vec![Some(p(&["logs-aws*"])), None], UnknownIndex::Match);
        assert_eq!(&*m.of(IndexOf::Unknown), &[true, true]);
        assert_eq!(
            a.foretold(Foretold::CloudTrailOrUnknown, None),
            vec![true, true]
        );
        assert_eq!(a.foretold(Foretold::Unknown, None), vec![false, true]);
        assert_eq!(a.foretold(Foretold::Host, Some("x")), vec![false, true]);
    }
}
