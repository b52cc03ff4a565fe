//! A borrowed view of one JSON record: only the fields the rules read, captured in one
//! pass.
//!
//! [`Layout`] says which paths to capture; [`RecordView::parse`] walks the JSON once with
//! an iterative scanner ([`scan`]), borrowing strings from the input and skipping every
//! subtree no path needs. Nothing else is built, and the walk uses no recursion: the stack
//! it needs does not grow with the record's nesting, which a host with a small fixed stack
//! (Fluent Bit's WAMR: 8 KiB by default) depends on.
//!
//! Two envelope keys are captured at the top level: a `Records` array (a CloudTrail S3
//! delivery file) and `detail` (an EventBridge event), so the engine can open them.

mod layout;
#[cfg(test)]
mod reference;
mod scan;

use std::borrow::Cow;

use serde_json::Number;

pub(crate) use layout::cloudtrail_paths;
pub use layout::{implied_values, FieldId, Layout, LayoutBuilder};
pub(crate) use scan::{elements, entries};

use crate::error::{ErrorKind, RecordError};
use layout::Source;

/// Capture slots held inline in a [`RecordView`]; a layout with more (a large rule pack)
/// gives each parsed record one allocation for the rest.
pub const INLINE_SLOTS: usize = 64;

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
#[derive(Debug, Default, PartialEq)]
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

static DATASET_CLOUDTRAIL: Scalar<'static> = Scalar::Str(Cow::Borrowed(layout::DATASET));
static OUTCOME_FAILURE: Scalar<'static> = Scalar::Str(Cow::Borrowed(layout::FAILURE));
static OUTCOME_SUCCESS: Scalar<'static> = Scalar::Str(Cow::Borrowed(layout::SUCCESS));

/// The fields of one record that its rules read, borrowed from the record's text.
pub struct RecordView<'a> {
    caps: [Captured<'a>; INLINE_SLOTS],
    /// Slots past the inline ones, for layouts that have them.
    more: Vec<Captured<'a>>,
    /// The elements of a top-level `Records` array, as text.
    records: Option<Vec<&'a str>>,
    /// A top-level `detail` object, as text.
    detail: Option<&'a str>,
    cloudtrail: bool,
    /// Every scalar, when the layout collects them all (free text).
    all: Vec<Scalar<'a>>,
    /// The text of each raw path's values.
    raws: Vec<Vec<&'a str>>,
}

impl<'a> RecordView<'a> {
    /// Parses `text` once, capturing the layout's slots. With `envelopes`, the top-level
    /// `Records` array and `detail` object are captured too.
    ///
    /// Errors: `invalid-json` for text that is not JSON (or not UTF-8, or nests the fields
    /// the rules read deeper than 128 levels); `not-object` for JSON that is not an object.
    pub fn parse(text: &'a [u8], layout: &Layout, envelopes: bool) -> Result<Self, RecordError> {
        let mut view = RecordView {
            caps: [const { Captured::Absent }; INLINE_SLOTS],
            more: Vec::new(),
            records: None,
            detail: None,
            cloudtrail: false,
            all: Vec::new(),
            raws: Vec::new(),
        };
        if layout.raws > 0 {
            view.raws.resize_with(layout.raws, Vec::new);
        }
        if layout.slots() > INLINE_SLOTS {
            view.more
                .resize_with(layout.slots() - INLINE_SLOTS, Captured::default);
        }
        // Validating UTF-8 up front lets the scanner borrow strings without checks, and
        // makes a record with invalid UTF-8 anywhere an error, not only in the fields the
        // rules read.
        let text = std::str::from_utf8(text)
            .map_err(|e| RecordError::new(ErrorKind::InvalidJson, format!("invalid UTF-8: {e}")))?;
        let is_object = scan::scan(text, layout, envelopes, &mut view)
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
    pub fn take_records(&mut self) -> Option<Vec<&'a str>> {
        self.records.take()
    }

    /// The CloudTrail record inside an EventBridge envelope: `detail` when `detail-type`
    /// ends with `via CloudTrail` (`AWS API Call via CloudTrail`, `AWS Console Sign In via
    /// CloudTrail`, ...).
    pub fn eventbridge_detail(&self, layout: &Layout) -> Option<&'a str> {
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
            Source::Either(a, b) => match self.slot(a) {
                Field::Absent => self.slot(b),
                found => found,
            },
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

    /// The record's own value of an ECS field, never one the CloudTrail mapping implies.
    pub fn own<'v>(&'v self, layout: &Layout, id: FieldId) -> Field<'v, 'a> {
        self.slot(layout.fields[id.0 as usize].ecs)
    }

    /// Every scalar value of the record (a layout that collects them all; empty else).
    pub fn all_values(&self) -> &[Scalar<'a>] {
        &self.all
    }

    /// The text of the values at a raw path ([`LayoutBuilder::raw`]).
    pub fn raw(&self, id: u32) -> &[&'a str] {
        self.raws.get(id as usize).map_or(&[], Vec::as_slice)
    }

    fn raw_mut(&mut self, id: u32) -> &mut Vec<&'a str> {
        &mut self.raws[id as usize]
    }

    fn cap(&self, slot: u32) -> &Captured<'a> {
        let i = slot as usize;
        match self.caps.get(i) {
            Some(c) => c,
            None => &self.more[i - INLINE_SLOTS],
        }
    }

    fn cap_mut(&mut self, slot: u32) -> &mut Captured<'a> {
        let i = slot as usize;
        match self.caps.get_mut(i) {
            Some(c) => c,
            None => &mut self.more[i - INLINE_SLOTS],
        }
    }

    fn slot<'v>(&'v self, slot: u32) -> Field<'v, 'a> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(fields: &[&str]) -> (Layout, Vec<FieldId>) {
        let mut b = LayoutBuilder::new();
        let ids = fields.iter().map(|f| b.field(f)).collect();
        (b.build(), ids)
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
        assert_eq!(recs[1], r#"{"b":2}"#);
        let eb = br#"{"detail-type":"AWS API Call via CloudTrail","detail":{"eventName":"X"}}"#;
        let v = RecordView::parse(eb, &l, true).unwrap();
        assert_eq!(v.eventbridge_detail(&l), Some(r#"{"eventName":"X"}"#));
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

    /// A random JSON-ish text: mostly valid, with every kind of defect the scanner must
    /// judge as serde_json does (escapes, surrogates, numbers, nesting, commas).
    fn random_text(next: &mut impl FnMut() -> u64) -> String {
        const KEYS: &[&str] = &[
            "a",
            "b",
            "c",
            "a.b",
            "b.c",
            "a.b.c",
            "Records",
            "detail",
            "detail-type",
            "eventSource",
            "eventName",
            "x",
            "",
            "a.",
            "\\u0061",
            "a\\u002eb",
            "\\ud800",
        ];
        const SCALARS: &[&str] = &[
            "1",
            "-0",
            "0.5",
            "1e400",
            "-1e-400",
            "01",
            "1.",
            "1e",
            "-",
            "18446744073709551616",
            "-9223372036854775809",
            "true",
            "false",
            "null",
            "nul",
            "tru",
            "\"s\"",
            "\"\"",
            "\"\\u0041\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800x\"",
            "\"\\ud800\\n\"",
            "\"\\ud800\\ud800\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\t\"",
            "\"a\\/b\"",
            "\"via CloudTrail\"",
            "\"AWS API Call via CloudTrail\"",
            "\"unterminated",
        ];
        fn value(next: &mut dyn FnMut() -> u64, depth: u32, out: &mut String) {
            let pick = next() % 10;
            if depth > 6 || pick < 5 {
                out.push_str(SCALARS[(next() % SCALARS.len() as u64) as usize]);
            } else if pick < 8 {
                out.push('{');
                for i in 0..next() % 4 {
                    if i > 0 {
                        out.push_str(if next() % 40 == 0 { "" } else { "," });
                    }
                    out.push('"');
                    out.push_str(KEYS[(next() % KEYS.len() as u64) as usize]);
                    out.push_str(if next() % 50 == 0 { "\" " } else { "\": " });
                    value(next, depth + 1, out);
                }
                if next() % 60 == 0 {
                    out.push(',');
                }
                out.push('}');
            } else {
                out.push('[');
                for i in 0..next() % 4 {
                    if i > 0 {
                        out.push(',');
                    }
                    value(next, depth + 1, out);
                }
                if next() % 60 == 0 {
                    out.push(',');
                }
                out.push(']');
            }
        }
        let mut out = String::new();
        value(next, 0, &mut out);
        match next() % 30 {
            0 => out.push_str(" x"),
            1 => out = out[..out.len() / 2].to_owned(),
            2 => out = format!("{{\"a\":{}1{}}}", "[".repeat(130), "]".repeat(130)),
            3 => out = format!("{{\"b\":{}1{}}}", "[".repeat(126), "]".repeat(126)),
            4 => out = format!("{{\"b\":{}1{}}}", "[".repeat(127), "]".repeat(127)),
            _ => {}
        }
        out
    }

    /// What a parse gives, in one comparable shape: `Err` for not JSON, `Ok(None)` for not
    /// an object.
    type Parsed<'a> =
        Result<Option<(Vec<Captured<'a>>, Option<Vec<&'a str>>, Option<&'a str>)>, ()>;

    fn by_scanner<'a>(text: &'a str, l: &Layout, envelopes: bool) -> Parsed<'a> {
        match RecordView::parse(text.as_bytes(), l, envelopes) {
            Ok(mut v) => {
                let caps = (0..l.slots() as u32)
                    .map(|i| std::mem::take(v.cap_mut(i)))
                    .collect();
                Ok(Some((caps, v.records.take(), v.detail)))
            }
            Err(e) if e.kind() == ErrorKind::NotObject => Ok(None),
            Err(_) => Err(()),
        }
    }

    fn by_reference<'a>(text: &'a str, l: &Layout, envelopes: bool) -> Parsed<'a> {
        match reference::parse(text, l, envelopes) {
            Ok(Some(v)) => Ok(Some((v.caps, v.records, v.detail))),
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        }
    }

    #[test]
    fn the_scanner_agrees_with_the_serde_walker() {
        let (l, _) = layout(&["a", "a.b", "a.b.c", "b.c", "x", "event.action"]);
        let mut seed: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut invalid, mut objects) = (0, 0);
        for round in 0..60_000 {
            let text = random_text(&mut next);
            for envelopes in [true, false] {
                let want = by_reference(&text, &l, envelopes);
                let got = by_scanner(&text, &l, envelopes);
                assert_eq!(got, want, "round {round}, envelopes {envelopes}: {text}");
                invalid += usize::from(want.is_err());
                objects += usize::from(matches!(want, Ok(Some(_))));
            }
        }
        assert!(invalid > 10_000 && objects > 10_000, "{invalid} {objects}");
    }

    #[test]
    fn the_scanner_agrees_on_real_cloudtrail() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/cloudtrail/invictus-ir");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("SKIPPED: no shared data at {}", dir.display());
            return;
        };
        let (l, _) = layout(&[
            "event.action",
            "aws.cloudtrail.user_identity.arn",
            "aws.cloudtrail.user_identity.type",
            "source.ip",
            "user_agent.original",
            "requestParameters.bucketName",
        ]);
        let mut n = 0;
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let want = by_reference(&text, &l, true);
            assert_eq!(by_scanner(&text, &l, true), want);
            if let Ok(Some((_, Some(records), _))) = want {
                for r in records {
                    assert_eq!(by_scanner(r, &l, false), by_reference(r, &l, false), "{r}");
                    n += 1;
                }
            }
        }
        assert!(n > 2_000, "{n} records");
    }

    #[test]
    fn deep_records_need_no_deep_stack() {
        // Run on a thread with a small stack: the scanner is iterative.
        let (l, ids) = layout(&["a.b"]);
        let deep_skipped = format!(
            "{{\"z\":{}1{},\"a\":{{\"b\":\"x\"}}}}",
            "[{\"q\":".repeat(50_000),
            "}]".repeat(50_000)
        );
        let deep_read = format!(
            "{{\"a\":{{\"b\":{}\"x\"{}}}}}",
            "[".repeat(126),
            "]".repeat(126)
        );
        let handle = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let v = RecordView::parse(deep_skipped.as_bytes(), &l, false).unwrap();
                let first = texts(&v, &l, ids[0]);
                let err = RecordView::parse(deep_read.as_bytes(), &l, false)
                    .err()
                    .map(|e| e.to_string());
                (first, err)
            })
            .unwrap();
        let (first, err) = handle.join().unwrap();
        assert_eq!(first, Some(vec!["x".to_owned()]));
        assert!(err.unwrap().contains("recursion limit"));
    }
}
