//! Which fields the rules read, and where a record keeps them.
//!
//! The rules name fields by their ECS names (`event.action`). A [`Layout`] turns those
//! names into capture slots, one per distinct path: the ECS path itself, matched whether
//! the record nests it (`{"event":{"action":..}}`), dots it (`{"event.action":..}`) or
//! mixes both, and for a raw CloudTrail record the CloudTrail path Elastic's AWS
//! integration maps it from (`eventName`). The paths form a trie of their dot-separated
//! components, which the scanner walks key by key; there is no limit on the number of
//! fields or paths.

use crate::query::Fold;

/// A field the rules read, by ECS name; an index into its [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldId(pub(super) u32);

impl FieldId {
    /// The `i`-th field of a layout (`0..Layout::field_count()`).
    pub fn from_index(i: usize) -> FieldId {
        FieldId(i as u32)
    }
}

/// How a raw CloudTrail record provides an ECS field.
#[derive(Debug, Clone, Copy)]
enum CloudTrail {
    /// Read from the first of these CloudTrail paths the record has (one or two).
    Paths(&'static [&'static str]),
    /// `aws.cloudtrail`, the same for every CloudTrail record.
    Dataset,
    /// `failure` when `errorCode` or `errorMessage` is present, else `success`.
    Outcome,
}

/// ECS names as Elastic's AWS integration fills them from a raw CloudTrail record.
const CLOUDTRAIL_FIELDS: &[(&str, CloudTrail)] = &[
    ("event.dataset", CloudTrail::Dataset),
    ("data_stream.dataset", CloudTrail::Dataset),
    ("event.provider", CloudTrail::Paths(&["eventSource"])),
    ("event.action", CloudTrail::Paths(&["eventName"])),
    ("event.outcome", CloudTrail::Outcome),
    ("event.id", CloudTrail::Paths(&["eventID"])),
    ("@timestamp", CloudTrail::Paths(&["eventTime"])),
    (
        "aws.cloudtrail.user_identity.type",
        CloudTrail::Paths(&["userIdentity.type"]),
    ),
    (
        "aws.cloudtrail.user_identity.arn",
        CloudTrail::Paths(&["userIdentity.arn"]),
    ),
    (
        "aws.cloudtrail.user_identity.access_key_id",
        CloudTrail::Paths(&["userIdentity.accessKeyId"]),
    ),
    // An assumed role's or federated user's session has no userName: the role's.
    (
        "user.name",
        CloudTrail::Paths(&[
            "userIdentity.userName",
            "userIdentity.sessionContext.sessionIssuer.userName",
        ]),
    ),
    ("user.id", CloudTrail::Paths(&["userIdentity.principalId"])),
    ("user_agent.original", CloudTrail::Paths(&["userAgent"])),
    ("source.address", CloudTrail::Paths(&["sourceIPAddress"])),
    ("source.ip", CloudTrail::Paths(&["sourceIPAddress"])),
    ("cloud.region", CloudTrail::Paths(&["awsRegion"])),
    // An AWS service's call has no caller account: the account that received it.
    (
        "cloud.account.id",
        CloudTrail::Paths(&["userIdentity.accountId", "recipientAccountId"]),
    ),
    (
        "aws.cloudtrail.event_type",
        CloudTrail::Paths(&["eventType"]),
    ),
    (
        "aws.cloudtrail.error_code",
        CloudTrail::Paths(&["errorCode"]),
    ),
    (
        "aws.cloudtrail.error_message",
        CloudTrail::Paths(&["errorMessage"]),
    ),
    (
        "aws.cloudtrail.recipient_account_id",
        CloudTrail::Paths(&["recipientAccountId"]),
    ),
];

/// `event.dataset` of every raw CloudTrail record.
pub(super) const DATASET: &str = "aws.cloudtrail";
/// `event.outcome` of a raw CloudTrail record: failed (an error code or message), or not.
pub(super) const FAILURE: &str = "failure";
pub(super) const SUCCESS: &str = "success";

/// The values a raw CloudTrail record implies for an ECS field without writing them in
/// its text (`event.dataset`: `aws.cloudtrail`; `event.outcome`: `success`, `failure`).
/// Any other value of any field, when a record has it, is verbatim in the record's text:
/// a prefilter may look for a value in the text only when it matches none of these.
pub fn implied_values(ecs_name: &str) -> &'static [&'static str] {
    match CLOUDTRAIL_FIELDS.iter().find(|(name, _)| *name == ecs_name) {
        Some((_, CloudTrail::Dataset)) => &[DATASET],
        Some((_, CloudTrail::Outcome)) => &[FAILURE, SUCCESS],
        _ => &[],
    }
}

/// The CloudTrail paths an ECS field is read from in a raw CloudTrail record, in order
/// (the first present wins); empty for a field the mapping derives (`event.outcome`,
/// `event.dataset`) or does not have.
pub(crate) fn cloudtrail_paths(ecs_name: &str) -> &'static [&'static str] {
    match CLOUDTRAIL_FIELDS.iter().find(|(name, _)| *name == ecs_name) {
        Some((_, CloudTrail::Paths(paths))) => paths,
        _ => &[],
    }
}

/// Where a field's value comes from in a raw CloudTrail record.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Slot(u32),
    /// The first slot, else the second.
    Either(u32, u32),
    /// `event.dataset` of a CloudTrail record: `aws.cloudtrail`.
    Dataset,
    Outcome,
    None,
}

#[derive(Debug, Clone)]
pub(super) struct FieldSpec {
    pub(super) name: Box<str>,
    /// A multi-field (`process.name.caseless`) reads its parent's value, folded.
    fold: Fold,
    pub(super) ecs: u32,
    pub(super) cloudtrail: Source,
}

/// One node of the path trie: a path component reached from its parent.
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    /// The slot whose path ends here.
    pub(super) slot: Option<u32>,
    /// The components below, sorted by name.
    children: Vec<(Box<str>, u32)>,
    /// Every slot whose path continues below this node (they all become mismatched when
    /// a scalar stands here).
    pub(super) below: Vec<u32>,
    /// The raw capture of this path's values' text, when one was asked for.
    pub(super) raw: Option<u32>,
}

impl Node {
    pub(super) fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    fn child(&self, component: &str) -> Option<u32> {
        self.children
            .binary_search_by(|(name, _)| by_length_then_bytes(name, component))
            .ok()
            .map(|i| self.children[i].1)
    }
}

/// The children's order: by length, then by bytes. Most comparisons in a lookup are then
/// settled by the lengths, without comparing bytes (which in WebAssembly is a call to a
/// `memcmp` that compares a byte at a time): a pack's layout has dozens of top-level names.
fn by_length_then_bytes(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Builds a [`Layout`] while the rules are compiled.
#[derive(Debug, Default)]
pub struct LayoutBuilder {
    paths: Vec<Box<str>>,
    fields: Vec<FieldSpec>,
    raws: Vec<Box<str>>,
    all: bool,
}

/// The capture slots of a rule or pack, and how each ECS field is read from them.
#[derive(Debug, Clone)]
pub struct Layout {
    pub(super) paths: Vec<Box<str>>,
    pub(super) fields: Vec<FieldSpec>,
    /// The path trie; node 0 is the root (the record's top level).
    pub(super) nodes: Vec<Node>,
    pub(super) event_source: u32,
    pub(super) event_name: u32,
    pub(super) error_code: u32,
    pub(super) error_message: u32,
    pub(super) detail_type: u32,
    /// How many raw captures there are.
    pub(super) raws: usize,
    /// Every scalar of a record is collected (for free text).
    all: bool,
}

impl LayoutBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self, path: &str) -> u32 {
        match self.paths.iter().position(|p| &**p == path) {
            Some(i) => i as u32,
            None => {
                self.paths.push(path.into());
                (self.paths.len() - 1) as u32
            }
        }
    }

    /// The id of an ECS field, adding its capture slots on first use. An ECS multi-field
    /// (`<field>.caseless`, `<field>.text`) is the field it extends, read folded: no
    /// document holds it, Elasticsearch derives it from the field.
    pub fn field(&mut self, name: &str) -> FieldId {
        if let Some(i) = self.fields.iter().position(|f| &*f.name == name) {
            return FieldId(i as u32);
        }
        let (fold, parent) = Fold::of(name);
        let ecs = self.slot(parent);
        let cloudtrail = match CLOUDTRAIL_FIELDS.iter().find(|(n, _)| *n == parent) {
            Some((_, CloudTrail::Paths([p]))) => Source::Slot(self.slot(p)),
            Some((_, CloudTrail::Paths([a, b, ..]))) => Source::Either(self.slot(a), self.slot(b)),
            Some((_, CloudTrail::Paths([]))) => Source::None,
            Some((_, CloudTrail::Dataset)) => Source::Dataset,
            Some((_, CloudTrail::Outcome)) => Source::Outcome,
            None => Source::None,
        };
        self.fields.push(FieldSpec {
            name: name.into(),
            fold,
            ecs,
            cloudtrail,
        });
        FieldId((self.fields.len() - 1) as u32)
    }

    /// A raw capture of a path: the text of every value the record has there (a nested
    /// query reads its elements). An id into [`crate::RecordView::raw`].
    pub fn raw(&mut self, path: &str) -> u32 {
        match self.raws.iter().position(|p| &**p == path) {
            Some(i) => i as u32,
            None => {
                self.raws.push(path.into());
                (self.raws.len() - 1) as u32
            }
        }
    }

    /// Collect every scalar value of each record (free text matches any of them).
    pub fn collect_all(&mut self) {
        self.all = true;
    }

    pub fn build(mut self) -> Layout {
        let event_source = self.slot("eventSource");
        let event_name = self.slot("eventName");
        let error_code = self.slot("errorCode");
        let error_message = self.slot("errorMessage");
        let detail_type = self.slot("detail-type");
        let mut nodes = vec![Node::default()];
        for (slot, path) in self.paths.iter().enumerate() {
            let end = insert(&mut nodes, path, Some(slot as u32));
            nodes[end].slot = Some(slot as u32);
        }
        for (raw, path) in self.raws.iter().enumerate() {
            let end = insert(&mut nodes, path, None);
            nodes[end].raw = Some(raw as u32);
        }
        for node in &mut nodes {
            node.children
                .sort_by(|a, b| by_length_then_bytes(&a.0, &b.0));
        }
        Layout {
            paths: self.paths,
            fields: self.fields,
            nodes,
            event_source,
            event_name,
            error_code,
            error_message,
            detail_type,
            raws: self.raws.len(),
            all: self.all,
        }
    }
}

/// The trie node of `path`, made as needed; every node on the way gets `below` in its
/// list of slots that continue beneath it.
fn insert(nodes: &mut Vec<Node>, path: &str, below: Option<u32>) -> usize {
    let mut at = 0;
    for component in path.split('.') {
        if let Some(slot) = below {
            nodes[at].below.push(slot);
        }
        at = match nodes[at].children.iter().find(|(c, _)| &**c == component) {
            Some(&(_, next)) => next as usize,
            None => {
                nodes.push(Node::default());
                let next = nodes.len() - 1;
                nodes[at].children.push((component.into(), next as u32));
                next
            }
        };
    }
    at
}

impl Layout {
    pub fn field_name(&self, id: FieldId) -> &str {
        &self.fields[id.0 as usize].name
    }

    /// Whether every scalar of a record is collected.
    pub fn collects_all(&self) -> bool {
        self.all
    }

    /// How a field's values are folded before matching (a multi-field's).
    pub fn fold(&self, id: FieldId) -> Fold {
        self.fields[id.0 as usize].fold
    }

    /// How many fields the layout reads.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// How many capture slots the layout has.
    pub fn slots(&self) -> usize {
        self.paths.len()
    }

    pub(super) fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    /// The node a key leads to from `from`: each dot-separated component of the key is one
    /// step (`{"aws.cloudtrail": {...}}` reaches what `{"aws": {"cloudtrail": ...}}` does).
    pub(super) fn step(&self, from: u32, key: &str) -> Option<u32> {
        let mut at = from;
        let mut rest = key;
        loop {
            match memchr::memchr(b'.', rest.as_bytes()) {
                None => return self.node(at).child(rest),
                Some(dot) => {
                    at = self.node(at).child(&rest[..dot])?;
                    rest = &rest[dot + 1..];
                }
            }
        }
    }
}
