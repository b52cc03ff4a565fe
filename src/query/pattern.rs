//! Matching one value: KQL patterns (`*` wildcards), globs (`*` and `?`, from exception
//! entries and query DSL filters), and how ECS multi-fields fold a value before matching.

/// How a field's values are read before matching: as they are, or as an ECS multi-field
/// of the field whose name it extends reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fold {
    /// The value as it is (a keyword field).
    None,
    /// `<field>.caseless`: lowercased, as Elasticsearch's lowercase normalizer does
    /// (Lucene's `LowerCaseFilter`: each character's simple lowercase mapping).
    Lower,
    /// `<field>.text`: analysed text, read as its words (see [`words`]).
    Text,
}

impl Fold {
    /// The multi-field a field name ends with, and the field it is of.
    pub fn of(name: &str) -> (Fold, &str) {
        if let Some(parent) = name.strip_suffix(".caseless").filter(|p| !p.is_empty()) {
            (Fold::Lower, parent)
        } else if let Some(parent) = name.strip_suffix(".text").filter(|p| !p.is_empty()) {
            (Fold::Text, parent)
        } else {
            (Fold::None, name)
        }
    }
}

/// A value lowercased as Lucene's `LowerCaseFilter` does: each character's simple
/// lowercase mapping (`İ` becomes `i`, where Unicode's full mapping adds a dot).
pub fn lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            c => c.to_lowercase().next().unwrap_or(c),
        })
        .collect()
}

/// The words of analysed text, as we read Elasticsearch's standard analyzer: runs of
/// letters and digits, lowercased. (The standard analyzer follows Unicode's word
/// boundaries, which also keep `'` and `.` inside some words; we split at them.)
pub fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(lower)
}

/// Whether `text` matches `pattern`: `*` any run of characters, `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_with(pattern, text, false)
}

/// [`glob`], optionally ignoring case, without allocating: it runs for every value a
/// wildcard filter or exception entry reads.
pub fn glob_with(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let same =
        |p: char, t: char| p == t || (case_insensitive && p.to_lowercase().eq(t.to_lowercase()));
    let next = |s: &str, at: usize| s[at..].chars().next();
    // Byte offsets into `pattern` and `text`, always on character boundaries.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(t) = next(text, ti) {
        match next(pattern, pi) {
            Some(p) if p == '?' || same(p, t) => {
                pi += p.len_utf8();
                ti += t.len_utf8();
            }
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    let skipped = next(text, st).map_or(1, char::len_utf8);
                    pi = sp + 1;
                    ti = st + skipped;
                    star = Some((sp, st + skipped));
                }
                None => return false,
            },
        }
    }
    pattern[pi..].chars().all(|c| c == '*')
}
