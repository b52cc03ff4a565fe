//! A borrowed view of one JSON record: only the fields the rule reads, captured in one pass.
//!
//! The rule names fields by their ECS names (`event.action`). A [`Layout`] turns those
//! names into capture slots: the ECS path itself, matched whether the record nests it
//! (`{"event":{"action":..}}`), dots it (`{"event.action":..}`) or mixes both, and for a raw
//! CloudTrail record the CloudTrail path Elastic's AWS integration maps it from
//! (`eventName`). [`RecordView::parse`] walks the JSON once with serde, borrowing strings
//! from the input and skipping every subtree no slot needs; nothing else is built.
//!
//! Two envelope keys are captured at the top level: a `Records` array (a CloudTrail S3
//! delivery file) and `detail` (an EventBridge event), so the engine can open them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Number;

use crate::error::{ErrorKind, RecordError};

/// How many capture slots a layout may hold (one bit each in a [`Mask`]). A view holds
/// the first [`INLINE_SLOTS`] inline; a layout with more (a large rule pack) gives each
/// parsed record one allocation for the rest.
pub const MAX_SLOTS: usize = 128;
/// Capture slots held inline in a [`RecordView`].
pub const INLINE_SLOTS: usize = 64;
/// A set of capture slots, one bit each.
type Mask = u128;

/// A field the rule reads, by ECS name; an index into its [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldId(u16);

/// How a raw CloudTrail record provides an ECS field.
#[derive(Debug, Clone, Copy)]
enum CloudTrail {
    /// Read from this CloudTrail path.
    Path(&'static str),
    /// `aws.cloudtrail`, the same for every CloudTrail record.
    Dataset,
    /// `failure` when `errorCode` or `errorMessage` is present, else `success`.
    Outcome,
}

/// ECS names as Elastic's AWS integration fills them from a raw CloudTrail record.
const CLOUDTRAIL_FIELDS: &[(&str, CloudTrail)] = &[
    ("event.dataset", CloudTrail::Dataset),
    ("event.provider", CloudTrail::Path("eventSource")),
    ("event.action", CloudTrail::Path("eventName")),
    ("event.outcome", CloudTrail::Outcome),
    ("event.id", CloudTrail::Path("eventID")),
    ("@timestamp", CloudTrail::Path("eventTime")),
    (
        "aws.cloudtrail.user_identity.type",
        CloudTrail::Path("userIdentity.type"),
    ),
    (
        "aws.cloudtrail.user_identity.arn",
        CloudTrail::Path("userIdentity.arn"),
    ),
    (
        "aws.cloudtrail.user_identity.access_key_id",
        CloudTrail::Path("userIdentity.accessKeyId"),
    ),
    ("user.name", CloudTrail::Path("userIdentity.userName")),
    ("user_agent.original", CloudTrail::Path("userAgent")),
    ("source.address", CloudTrail::Path("sourceIPAddress")),
    ("source.ip", CloudTrail::Path("sourceIPAddress")),
    ("cloud.region", CloudTrail::Path("awsRegion")),
    (
        "cloud.account.id",
        CloudTrail::Path("userIdentity.accountId"),
    ),
    ("aws.cloudtrail.event_type", CloudTrail::Path("eventType")),
    ("aws.cloudtrail.error_code", CloudTrail::Path("errorCode")),
    (
        "aws.cloudtrail.error_message",
        CloudTrail::Path("errorMessage"),
    ),
    (
        "aws.cloudtrail.recipient_account_id",
        CloudTrail::Path("recipientAccountId"),
    ),
];

/// Whether an ECS field's value, when a record has it, appears verbatim in the record's
/// text. False for the fields a CloudTrail record only implies (`event.dataset`,
/// `event.outcome`): a prefilter must not look for their values in the text.
pub fn verbatim_in_text(ecs_name: &str) -> bool {
    !CLOUDTRAIL_FIELDS.iter().any(|(name, how)| {
        *name == ecs_name && matches!(how, CloudTrail::Dataset | CloudTrail::Outcome)
    })
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Slot(u8),
    /// `event.dataset` of a CloudTrail record: `aws.cloudtrail`.
    Dataset,
    Outcome,
    None,
}

#[derive(Debug, Clone)]
struct FieldSpec {
    name: Box<str>,
    ecs: u8,
    cloudtrail: Source,
}

/// Builds a [`Layout`] while the rule is compiled.
#[derive(Debug, Default)]
pub struct LayoutBuilder {
    paths: Vec<Box<str>>,
    fields: Vec<FieldSpec>,
}

/// The capture slots for one rule, and how each ECS field is read from them.
#[derive(Debug, Clone)]
pub struct Layout {
    paths: Vec<Box<str>>,
    fields: Vec<FieldSpec>,
    all: Mask,
    event_source: u8,
    event_name: u8,
    error_code: u8,
    error_message: u8,
    detail_type: u8,
}

/// A rule reads more fields than a layout can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyFields;

impl fmt::Display for TooManyFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the rule reads too many distinct fields (at most {} capture paths)",
            MAX_SLOTS
        )
    }
}

impl LayoutBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self, path: &str) -> Result<u8, TooManyFields> {
        if let Some(i) = self.paths.iter().position(|p| &**p == path) {
            return Ok(i as u8);
        }
        if self.paths.len() == MAX_SLOTS {
            return Err(TooManyFields);
        }
        self.paths.push(path.into());
        Ok((self.paths.len() - 1) as u8)
    }

    /// The id of an ECS field, adding its capture slots on first use.
    pub fn field(&mut self, name: &str) -> Result<FieldId, TooManyFields> {
        if let Some(i) = self.fields.iter().position(|f| &*f.name == name) {
            return Ok(FieldId(i as u16));
        }
        let ecs = self.slot(name)?;
        let cloudtrail = match CLOUDTRAIL_FIELDS.iter().find(|(n, _)| *n == name) {
            Some((_, CloudTrail::Path(p))) => Source::Slot(self.slot(p)?),
            Some((_, CloudTrail::Dataset)) => Source::Dataset,
            Some((_, CloudTrail::Outcome)) => Source::Outcome,
            None => Source::None,
        };
        self.fields.push(FieldSpec {
            name: name.into(),
            ecs,
            cloudtrail,
        });
        Ok(FieldId((self.fields.len() - 1) as u16))
    }

    pub fn build(mut self) -> Result<Layout, TooManyFields> {
        let event_source = self.slot("eventSource")?;
        let event_name = self.slot("eventName")?;
        let error_code = self.slot("errorCode")?;
        let error_message = self.slot("errorMessage")?;
        let detail_type = self.slot("detail-type")?;
        let all = if self.paths.len() == MAX_SLOTS {
            Mask::MAX
        } else {
            (1 << self.paths.len()) - 1
        };
        Ok(Layout {
            paths: self.paths,
            fields: self.fields,
            all,
            event_source,
            event_name,
            error_code,
            error_message,
            detail_type,
        })
    }
}

impl Layout {
    pub fn field_name(&self, id: FieldId) -> &str {
        &self.fields[id.0 as usize].name
    }
}

/// One scalar JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(Number),
    Bool(bool),
}

impl Scalar<'_> {
    /// The value as text, the way an Elasticsearch keyword field indexes it.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Scalar::Str(s) => Cow::Borrowed(s),
            Scalar::Num(n) => Cow::Owned(n.to_string()),
            Scalar::Bool(true) => Cow::Borrowed("true"),
            Scalar::Bool(false) => Cow::Borrowed("false"),
        }
    }
}

/// What one slot captured.
#[derive(Debug, Default)]
enum Captured<'a> {
    #[default]
    Absent,
    One(Scalar<'a>),
    Many(Vec<Scalar<'a>>),
    /// An object (or array of objects) where a value was wanted.
    Object,
    /// A scalar where an object had to be descended into.
    Mismatch,
}

impl<'a> Captured<'a> {
    fn push(&mut self, s: Scalar<'a>) {
        match self {
            Captured::Absent => *self = Captured::One(s),
            Captured::One(_) => {
                if let Captured::One(first) = std::mem::take(self) {
                    *self = Captured::Many(vec![first, s]);
                }
            }
            Captured::Many(v) => v.push(s),
            Captured::Object | Captured::Mismatch => {}
        }
    }

    fn mark_object(&mut self) {
        if !matches!(self, Captured::Mismatch) {
            *self = Captured::Object;
        }
    }
}

/// A field's value in one record, as the query and the term table see it.
#[derive(Debug, Clone, Copy)]
pub enum Field<'v, 'a> {
    /// Absent or null.
    Absent,
    /// One or more scalar values (an array contributes each element).
    Values(&'v [Scalar<'a>]),
    /// Present as an object: it exists, but has no value to compare.
    Object,
    /// Present with a shape the field cannot have (a scalar on the path to it).
    Mismatch,
}

static DATASET_CLOUDTRAIL: Scalar<'static> = Scalar::Str(Cow::Borrowed("aws.cloudtrail"));
static OUTCOME_FAILURE: Scalar<'static> = Scalar::Str(Cow::Borrowed("failure"));
static OUTCOME_SUCCESS: Scalar<'static> = Scalar::Str(Cow::Borrowed("success"));

/// The fields of one record that its rule reads, borrowed from the record's text.
pub struct RecordView<'a> {
    caps: [Captured<'a>; INLINE_SLOTS],
    /// Slots past the inline ones, for layouts that have them.
    more: Vec<Captured<'a>>,
    records: Option<Vec<&'a RawValue>>,
    detail: Option<&'a RawValue>,
    cloudtrail: bool,
}

impl<'a> RecordView<'a> {
    /// Parses `text` once, capturing the layout's slots. With `envelopes`, the top-level
    /// `Records` array and `detail` object are captured too.
    pub fn parse(text: &'a [u8], layout: &Layout, envelopes: bool) -> Result<Self, RecordError> {
        let mut view = RecordView {
            caps: [const { Captured::Absent }; INLINE_SLOTS],
            more: Vec::new(),
            records: None,
            detail: None,
            cloudtrail: false,
        };
        if layout.paths.len() > INLINE_SLOTS {
            view.more
                .resize_with(layout.paths.len() - INLINE_SLOTS, Captured::default);
        }
        // Validating UTF-8 up front lets the parser skip it per string, and makes a record
        // with invalid UTF-8 anywhere an error, not only in the fields the rule reads.
        let text = std::str::from_utf8(text)
            .map_err(|e| RecordError::new(ErrorKind::InvalidJson, format!("invalid UTF-8: {e}")))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let mut walk = Walk {
            layout,
            view: &mut view,
            envelopes,
        };
        let is_object = TopSeed { walk: &mut walk }
            .deserialize(&mut de)
            .and_then(|is_object| de.end().map(|()| is_object))
            .map_err(|e| RecordError::new(ErrorKind::InvalidJson, e.to_string()))?;
        if !is_object {
            return Err(RecordError::new(
                ErrorKind::NotObject,
                "a record must be a JSON object",
            ));
        }
        view.cloudtrail =
            has_string(view.cap(layout.event_source)) && has_string(view.cap(layout.event_name));
        Ok(view)
    }

    /// Whether the record is a raw CloudTrail record (it has string `eventSource` and
    /// `eventName` at the top level).
    pub fn is_cloudtrail(&self) -> bool {
        self.cloudtrail
    }

    /// The elements of a top-level `Records` array, when the record is a delivery file.
    pub fn take_records(&mut self) -> Option<Vec<&'a RawValue>> {
        self.records.take()
    }

    /// The CloudTrail record inside an EventBridge envelope: `detail` when `detail-type`
    /// ends with `via CloudTrail` (`AWS API Call via CloudTrail`, `AWS Console Sign In via
    /// CloudTrail`, ...).
    pub fn eventbridge_detail(&self, layout: &Layout) -> Option<&'a RawValue> {
        let detail = self.detail?;
        match self.cap(layout.detail_type) {
            Captured::One(Scalar::Str(t)) if t.ends_with("via CloudTrail") => Some(detail),
            _ => None,
        }
    }

    /// The value of an ECS field: the record's own, else (for a raw CloudTrail record)
    /// the one the CloudTrail mapping gives.
    pub fn get<'v>(&'v self, layout: &Layout, id: FieldId) -> Field<'v, 'a> {
        let spec = &layout.fields[id.0 as usize];
        let own = self.slot(spec.ecs);
        if !matches!(own, Field::Absent) || !self.cloudtrail {
            return own;
        }
        match spec.cloudtrail {
            Source::Slot(s) => self.slot(s),
            Source::Dataset => Field::Values(std::slice::from_ref(&DATASET_CLOUDTRAIL)),
            Source::Outcome => {
                let failed = !matches!(self.cap(layout.error_code), Captured::Absent)
                    || !matches!(self.cap(layout.error_message), Captured::Absent);
                let v = if failed {
                    &OUTCOME_FAILURE
                } else {
                    &OUTCOME_SUCCESS
                };
                Field::Values(std::slice::from_ref(v))
            }
            Source::None => Field::Absent,
        }
    }

    fn cap(&self, slot: u8) -> &Captured<'a> {
        let i = slot as usize;
        match self.caps.get(i) {
            Some(c) => c,
            None => &self.more[i - INLINE_SLOTS],
        }
    }

    fn cap_mut(&mut self, slot: usize) -> &mut Captured<'a> {
        match self.caps.get_mut(slot) {
            Some(c) => c,
            None => &mut self.more[slot - INLINE_SLOTS],
        }
    }

    fn slot<'v>(&'v self, slot: u8) -> Field<'v, 'a> {
        match self.cap(slot) {
            Captured::Absent => Field::Absent,
            Captured::One(s) => Field::Values(std::slice::from_ref(s)),
            Captured::Many(v) => Field::Values(v),
            Captured::Object => Field::Object,
            Captured::Mismatch => Field::Mismatch,
        }
    }
}

/// Whether a slot captured a string (a repeated key captures several).
fn has_string(c: &Captured<'_>) -> bool {
    match c {
        Captured::One(s) => matches!(s, Scalar::Str(_)),
        Captured::Many(v) => v.iter().any(|s| matches!(s, Scalar::Str(_))),
        _ => false,
    }
}

/// The state shared by every seed of one parse.
struct Walk<'l, 'v, 'a> {
    layout: &'l Layout,
    view: &'v mut RecordView<'a>,
    envelopes: bool,
}

/// What a key means for the walk.
enum KeyMatch {
    Skip,
    Records,
    Detail,
    /// `exact`: the slot this key completes; `prefix`: the slots it leads towards.
    Path {
        exact: Option<u8>,
        prefix: Mask,
        len: usize,
    },
}

struct KeySeed<'l> {
    layout: &'l Layout,
    cands: Mask,
    len: usize,
    top_envelope: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = KeyMatch;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<KeyMatch, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = KeyMatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyMatch, E> {
        if self.top_envelope {
            match key {
                "Records" => return Ok(KeyMatch::Records),
                "detail" => return Ok(KeyMatch::Detail),
                _ => {}
            }
        }
        let mut exact = None;
        let mut prefix: Mask = 0;
        let mut bits = self.cands;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let rest = &self.layout.paths[i].as_bytes()[self.len..];
            if let Some(after) = rest.strip_prefix(key.as_bytes()) {
                match after.first() {
                    None => exact = Some(i as u8),
                    Some(b'.') => prefix |= 1 << i,
                    Some(_) => {}
                }
            }
        }
        if exact.is_none() && prefix == 0 {
            Ok(KeyMatch::Skip)
        } else {
            Ok(KeyMatch::Path {
                exact,
                prefix,
                len: self.len + key.len() + 1,
            })
        }
    }
}

/// Walks the entries of an object whose path so far is shared by the slots in `cands`.
fn walk_map<'de, A: MapAccess<'de>>(
    walk: &mut Walk<'_, '_, 'de>,
    map: &mut A,
    cands: Mask,
    len: usize,
    top: bool,
) -> Result<(), A::Error> {
    let top_envelope = top && walk.envelopes;
    loop {
        let seed = KeySeed {
            layout: walk.layout,
            cands,
            len,
            top_envelope,
        };
        let Some(m) = map.next_key_seed(seed)? else {
            return Ok(());
        };
        match m {
            KeyMatch::Skip => {
                map.next_value::<IgnoredAny>()?;
            }
            KeyMatch::Records => map.next_value_seed(RecordsSeed { walk: &mut *walk })?,
            KeyMatch::Detail => {
                let raw: &'de RawValue = map.next_value()?;
                if raw.get().starts_with('{') {
                    walk.view.detail = Some(raw);
                }
            }
            KeyMatch::Path { exact, prefix, len } => map.next_value_seed(ValueSeed {
                walk: &mut *walk,
                exact,
                prefix,
                len,
            })?,
        }
    }
}

/// The top-level value: an object to walk, or anything else (reported as not an object).
struct TopSeed<'w, 'l, 'v, 'a> {
    walk: &'w mut Walk<'l, 'v, 'a>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_, '_, 'de> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_, '_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let all = self.walk.layout.all;
        walk_map(self.walk, &mut map, all, 0, true)?;
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// A value at a path that completes slot `exact` and/or leads to the slots in `prefix`.
struct ValueSeed<'w, 'l, 'v, 'a> {
    walk: &'w mut Walk<'l, 'v, 'a>,
    exact: Option<u8>,
    prefix: Mask,
    len: usize,
}

impl<'de> ValueSeed<'_, '_, '_, 'de> {
    fn scalar(self, s: Scalar<'de>) {
        if let Some(i) = self.exact {
            self.walk.view.cap_mut(i as usize).push(s);
        }
        let mut bits = self.prefix;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            *self.walk.view.cap_mut(i) = Captured::Mismatch;
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Num(v.into()));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::Num(v.into()));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if let Some(n) = Number::from_f64(v) {
            self.scalar(Scalar::Num(n));
        }
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.scalar(Scalar::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.scalar(Scalar::Str(Cow::Owned(v)));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some(i) = self.exact {
            self.walk.view.cap_mut(i as usize).mark_object();
        }
        if self.prefix != 0 {
            walk_map(self.walk, &mut map, self.prefix, self.len, false)
        } else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(())
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let element = ValueSeed {
                walk: &mut *self.walk,
                exact: self.exact,
                prefix: self.prefix,
                len: self.len,
            };
            if seq.next_element_seed(element)?.is_none() {
                return Ok(());
            }
        }
    }
}

/// The top-level `Records` value: an array's elements are kept as raw slices; anything
/// else is skipped (the object is then an ordinary record).
struct RecordsSeed<'w, 'l, 'v, 'a> {
    walk: &'w mut Walk<'l, 'v, 'a>,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            records.push(raw);
        }
        self.walk.view.records = Some(records);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(fields: &[&str]) -> (Layout, Vec<FieldId>) {
        let mut b = LayoutBuilder::new();
        let ids = fields.iter().map(|f| b.field(f).unwrap()).collect();
        (b.build().unwrap(), ids)
    }

    fn texts(view: &RecordView<'_>, l: &Layout, id: FieldId) -> Option<Vec<String>> {
        match view.get(l, id) {
            Field::Values(v) => Some(v.iter().map(|s| s.text().into_owned()).collect()),
            _ => None,
        }
    }

    #[test]
    fn nested_dotted_and_mixed_keys_read_alike() {
        let (l, ids) = layout(&["event.action", "aws.cloudtrail.user_identity.arn"]);
        for rec in [
            r#"{"event":{"action":"A"},"aws":{"cloudtrail":{"user_identity":{"arn":"X"}}}}"#,
            r#"{"event.action":"A","aws.cloudtrail.user_identity.arn":"X"}"#,
            r#"{"event":{"action":"A"},"aws.cloudtrail":{"user_identity.arn":"X"}}"#,
        ] {
            let v = RecordView::parse(rec.as_bytes(), &l, true).unwrap();
            assert_eq!(texts(&v, &l, ids[0]), Some(vec!["A".to_owned()]), "{rec}");
            assert_eq!(texts(&v, &l, ids[1]), Some(vec!["X".to_owned()]), "{rec}");
            assert!(!v.is_cloudtrail());
        }
    }

    #[test]
    fn cloudtrail_mapping() {
        let (l, ids) = layout(&[
            "event.dataset",
            "event.action",
            "aws.cloudtrail.user_identity.arn",
            "event.outcome",
        ]);
        let rec = r#"{"eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity",
            "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"errorCode":"AccessDenied"}"#;
        let v = RecordView::parse(rec.as_bytes(), &l, true).unwrap();
        assert!(v.is_cloudtrail());
        assert_eq!(
            texts(&v, &l, ids[0]),
            Some(vec!["aws.cloudtrail".to_owned()])
        );
        assert_eq!(
            texts(&v, &l, ids[1]),
            Some(vec!["GetCallerIdentity".to_owned()])
        );
        assert_eq!(
            texts(&v, &l, ids[2]),
            Some(vec!["arn:aws:iam::1:user/a".to_owned()])
        );
        assert_eq!(texts(&v, &l, ids[3]), Some(vec!["failure".to_owned()]));
        let ok = r#"{"eventSource":"s","eventName":"n"}"#;
        let v = RecordView::parse(ok.as_bytes(), &l, true).unwrap();
        assert_eq!(texts(&v, &l, ids[3]), Some(vec!["success".to_owned()]));
    }

    #[test]
    fn arrays_escapes_and_types() {
        let (l, ids) = layout(&["a.b", "c", "d"]);
        let rec = r#"{"a":[{"b":"x"},{"b":["y",2]}],"c":"\u0041\n","d":{"e":1}}"#;
        let v = RecordView::parse(rec.as_bytes(), &l, true).unwrap();
        assert_eq!(
            texts(&v, &l, ids[0]),
            Some(vec!["x".into(), "y".into(), "2".into()])
        );
        assert_eq!(texts(&v, &l, ids[1]), Some(vec!["A\n".into()]));
        assert!(matches!(v.get(&l, ids[2]), Field::Object));
        let rec = r#"{"a":"scalar","c":null}"#;
        let v = RecordView::parse(rec.as_bytes(), &l, true).unwrap();
        assert!(matches!(v.get(&l, ids[0]), Field::Mismatch));
        assert!(matches!(v.get(&l, ids[1]), Field::Absent));
    }

    #[test]
    fn envelopes_and_errors() {
        let (l, _) = layout(&["event.action"]);
        let mut v = RecordView::parse(br#"{"Records":[{"a":1},{"b":2}]}"#, &l, true).unwrap();
        let recs = v.take_records().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].get(), r#"{"b":2}"#);
        let eb = br#"{"detail-type":"AWS API Call via CloudTrail","detail":{"eventName":"X"}}"#;
        let v = RecordView::parse(eb, &l, true).unwrap();
        assert_eq!(
            v.eventbridge_detail(&l).map(|r| r.get()),
            Some(r#"{"eventName":"X"}"#)
        );
        let v = RecordView::parse(eb, &l, false).unwrap();
        assert!(v.eventbridge_detail(&l).is_none());

        let err = |t: &[u8]| RecordView::parse(t, &l, true).err().map(|e| e.kind());
        assert_eq!(err(b"{"), Some(ErrorKind::InvalidJson));
        assert_eq!(err(b"{} x"), Some(ErrorKind::InvalidJson));
        assert_eq!(err(b"[1]"), Some(ErrorKind::NotObject));
        assert_eq!(err(b"\"s\""), Some(ErrorKind::NotObject));
        assert_eq!(err(b"{\"a\":\"\xff\"}"), Some(ErrorKind::InvalidJson));
        assert_eq!(
            err(br#"{"event.action":"\ud800"}"#),
            Some(ErrorKind::InvalidJson)
        );
        // Skipped subtrees are skipped without recursion, at any depth.
        let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(err(deep.as_bytes()), None);
        let deep = format!("[{}]", "[".repeat(100_000) + &"]".repeat(100_000));
        assert_eq!(err(deep.as_bytes()), Some(ErrorKind::NotObject));
        // A read field nested past the parser's limit (128) is an error, not a crash.
        let deep = format!(
            "{{\"event.action\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(err(deep.as_bytes()), Some(ErrorKind::InvalidJson));
    }
}
