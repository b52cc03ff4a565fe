//! The record walker this crate used before its iterative scanner: serde_json's
//! deserializer driven by seeds, recursing into every container on a rule's path. Kept as
//! the reference the scanner is tested against (`scan.rs` must accept, reject and capture
//! exactly as this does), never used outside tests.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Number;

use super::{Captured, Layout, Scalar};

type Mask = Vec<u32>;

/// What the reference walk captured.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RefView<'a> {
    pub(super) caps: Vec<Captured<'a>>,
    pub(super) records: Option<Vec<&'a str>>,
    pub(super) detail: Option<&'a str>,
}

impl<'a> RefView<'a> {
    fn cap_mut(&mut self, slot: usize) -> &mut Captured<'a> {
        &mut self.caps[slot]
    }
}

/// Parses like the old `RecordView::parse` (after its UTF-8 check): `Ok(None)` for JSON
/// that is not an object, `Err` for text that is not JSON.
pub(super) fn parse<'a>(
    text: &'a str,
    layout: &Layout,
    envelopes: bool,
) -> Result<Option<RefView<'a>>, serde_json::Error> {
    let mut view = RefView {
        caps: (0..layout.paths.len()).map(|_| Captured::Absent).collect(),
        ..RefView::default()
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let mut walk = Walk {
        layout,
        view: &mut view,
        envelopes,
    };
    let is_object = TopSeed { walk: &mut walk }
        .deserialize(&mut de)
        .and_then(|is_object| de.end().map(|()| is_object))?;
    Ok(is_object.then_some(view))
}

/// The state shared by every seed of one parse.
struct Walk<'l, 'v, 'a> {
    layout: &'l Layout,
    view: &'v mut RefView<'a>,
    envelopes: bool,
}

/// What a key means for the walk.
enum KeyMatch {
    Skip,
    Records,
    Detail,
    /// `exact`: the slot this key completes; `prefix`: the slots it leads towards.
    Path {
        exact: Option<u32>,
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
        let mut prefix: Mask = Vec::new();
        for &i in &self.cands {
            let rest = &self.layout.paths[i as usize].as_bytes()[self.len..];
            if let Some(after) = rest.strip_prefix(key.as_bytes()) {
                match after.first() {
                    None => exact = Some(i),
                    Some(b'.') => prefix.push(i),
                    Some(_) => {}
                }
            }
        }
        if exact.is_none() && prefix.is_empty() {
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
            cands: cands.clone(),
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
                    walk.view.detail = Some(raw.get());
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
        let all = (0..self.walk.layout.paths.len() as u32).collect();
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
    exact: Option<u32>,
    prefix: Mask,
    len: usize,
}

impl<'de> ValueSeed<'_, '_, '_, 'de> {
    fn scalar(self, s: Scalar<'de>) {
        if let Some(i) = self.exact {
            self.walk.view.cap_mut(i as usize).push(s);
        }
        for &i in &self.prefix {
            *self.walk.view.cap_mut(i as usize) = Captured::Mismatch;
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
        if !self.prefix.is_empty() {
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
                prefix: self.prefix.clone(),
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
            records.push(raw.get());
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
