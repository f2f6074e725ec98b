//! The inverted index: every series the storage knows (in the head or persisted), its
//! labels as interned symbols, and postings lists from each `name="value"` pair to the
//! series carrying it.
//!
//! Invariants: postings lists are sorted and hold live series only; a series' labels are
//! sorted by name; each distinct string is stored once, shared by every series using it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use nunchi_model::{Label, Labels};
use promql_parser::label::Matcher;
use rustc_hash::{FxBuildHasher, FxHashMap};

/// A series' number, stable for its life (it is the persisted series id too).
pub type SeriesRef = u32;

/// The 64-bit identity hash of a label set, given as sorted `(name, value)` pairs.
pub fn labels_hash<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    for (n, v) in labels {
        h.write(n.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}

/// A series' labels as (name, value) symbol ids, sorted by name.
type SymbolPairs = Box<[(u32, u32)]>;

#[derive(Default)]
struct Symbols {
    strings: Vec<Arc<str>>,
    ids: FxHashMap<Arc<str>, u32>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.strings.push(a.clone());
        self.ids.insert(a, id);
        id
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn str(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }
}

/// The index. Not synchronised: the head wraps it in a lock.
#[derive(Default)]
pub struct Index {
    symbols: Symbols,
    /// Labels of each series by ref; `None` once deleted.
    series: Vec<Option<SymbolPairs>>,
    by_hash: FxHashMap<u64, Vec<SeriesRef>>,
    postings: FxHashMap<(u32, u32), Vec<SeriesRef>>,
    /// Values seen for each label name.
    values: FxHashMap<u32, Vec<u32>>,
    live: usize,
}

impl Index {
    /// Number of live series.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The next ref [`Index::insert`] would hand out.
    pub fn next_ref(&self) -> SeriesRef {
        self.series.len() as SeriesRef
    }

    /// The series with exactly these sorted labels.
    pub fn lookup<'a>(
        &self,
        hash: u64,
        labels: impl Fn(&mut dyn FnMut(&str, &str) -> bool) -> bool + 'a,
    ) -> Option<SeriesRef> {
        let candidates = self.by_hash.get(&hash)?;
        candidates.iter().copied().find(|&r| {
            let Some(Some(mine)) = self.series.get(r as usize) else {
                return false;
            };
            let mut i = 0usize;
            let all_equal = labels(&mut |n, v| {
                let ok = mine.get(i).is_some_and(|&(mn, mv)| {
                    self.symbols.str(mn) == n && self.symbols.str(mv) == v
                });
                i += 1;
                ok
            });
            all_equal && i == mine.len()
        })
    }

    /// Adds a series under `r` (a ref from [`Index::next_ref`] or a persisted id).
    pub fn insert(&mut self, r: SeriesRef, hash: u64, labels: &[(&str, &str)]) {
        let syms: SymbolPairs = labels
            .iter()
            .map(|(n, v)| (self.symbols.intern(n), self.symbols.intern(v)))
            .collect();
        for &(n, v) in syms.iter() {
            let list = self.postings.entry((n, v)).or_default();
            if list.is_empty() {
                self.values.entry(n).or_default().push(v);
            }
            match list.last() {
                Some(&last) if last > r => {
                    let at = list.partition_point(|&x| x < r);
                    list.insert(at, r);
                }
                _ => list.push(r),
            }
        }
        let slot = r as usize;
        if self.series.len() <= slot {
            self.series.resize(slot + 1, None);
        }
        self.series[slot] = Some(syms);
        self.by_hash.entry(hash).or_default().push(r);
        self.live += 1;
    }

    /// Removes a series.
    pub fn remove(&mut self, r: SeriesRef) {
        let Some(syms) = self.series.get_mut(r as usize).and_then(Option::take) else {
            return;
        };
        for &(n, v) in syms.iter() {
            if let Some(list) = self.postings.get_mut(&(n, v)) {
                if let Ok(i) = list.binary_search(&r) {
                    list.remove(i);
                }
                if list.is_empty() {
                    self.postings.remove(&(n, v));
                    if let Some(vals) = self.values.get_mut(&n) {
                        vals.retain(|&x| x != v);
                    }
                }
            }
        }
        let pairs: Vec<(&str, &str)> = syms
            .iter()
            .map(|&(n, v)| (self.symbols.str(n), self.symbols.str(v)))
            .collect();
        let hash = labels_hash(pairs.iter().copied());
        if let Some(list) = self.by_hash.get_mut(&hash) {
            list.retain(|&x| x != r);
            if list.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
        self.live -= 1;
    }

    /// The labels of a live series.
    pub fn labels(&self, r: SeriesRef) -> Option<Labels> {
        let syms = self.series.get(r as usize)?.as_ref()?;
        Some(Labels::from_sorted(
            syms.iter()
                .map(|&(n, v)| Label {
                    name: self.symbols.str(n).to_owned(),
                    value: self.symbols.str(v).to_owned(),
                })
                .collect(),
        ))
    }

    /// Calls `f` with each (name, value) of a live series, by name.
    pub fn for_each_pair(&self, r: SeriesRef, mut f: impl FnMut(&str, &str)) {
        if let Some(Some(syms)) = self.series.get(r as usize) {
            for &(n, v) in syms.iter() {
                f(self.symbols.str(n), self.symbols.str(v));
            }
        }
    }

    /// Every live series ref, ascending.
    pub fn all(&self) -> Vec<SeriesRef> {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as SeriesRef)
            .collect()
    }

    /// Refs of the series matching every matcher, ascending.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesRef> {
        let mut include: Option<Vec<SeriesRef>> = None;
        let mut exclude: Vec<Vec<SeriesRef>> = Vec::new();
        for m in matchers {
            let name = self.symbols.get(&m.name);
            let values: &[u32] = name
                .and_then(|n| self.values.get(&n))
                .map_or(&[], Vec::as_slice);
            let lists = |want: bool| -> Vec<SeriesRef> {
                let mut acc: Vec<SeriesRef> = Vec::new();
                for &v in values {
                    if m.is_match(self.symbols.str(v)) == want
                        && let Some(p) = name.and_then(|n| self.postings.get(&(n, v)))
                    {
                        acc.extend_from_slice(p);
                    }
                }
                acc.sort_unstable();
                acc.dedup();
                acc
            };
            if m.is_match("") {
                exclude.push(lists(false));
            } else {
                let found = lists(true);
                include = Some(match include {
                    None => found,
                    Some(prev) => intersect(&prev, &found),
                });
            }
        }
        let mut out = include.unwrap_or_else(|| self.all());
        for ex in exclude {
            out.retain(|r| ex.binary_search(r).is_err());
        }
        out
    }

    /// Label names in use, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .values
            .iter()
            .filter(|(_, vals)| !vals.is_empty())
            .map(|(&n, _)| self.symbols.str(n).to_owned())
            .collect();
        v.sort();
        v
    }
}

fn intersect(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// A `HashMap` keyed by series ref.
pub type RefMap<V> = HashMap<SeriesRef, V, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::MatchOp;

    fn add(ix: &mut Index, labels: &[(&str, &str)]) -> SeriesRef {
        let r = ix.next_ref();
        ix.insert(r, labels_hash(labels.iter().copied()), labels);
        r
    }

    fn m(op: &str, name: &str, value: &str) -> Matcher {
        let re = |s: &str| regex::Regex::new(&format!("^(?:{s})$")).expect("regex");
        let op = match op {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::Re(re(value)),
            _ => MatchOp::NotRe(re(value)),
        };
        Matcher::new(op, name, value)
    }

    #[test]
    fn every_matcher_kind_selects_like_prometheus() {
        let mut ix = Index::default();
        let a = add(&mut ix, &[("__name__", "up"), ("job", "a")]);
        let b = add(&mut ix, &[("__name__", "up"), ("job", "b")]);
        let c = add(&mut ix, &[("__name__", "up")]);
        let d = add(&mut ix, &[("__name__", "other"), ("job", "a")]);
        let up = m("=", "__name__", "up");
        assert_eq!(ix.select(std::slice::from_ref(&up)), [a, b, c]);
        assert_eq!(ix.select(&[up.clone(), m("=", "job", "a")]), [a]);
        assert_eq!(ix.select(&[up.clone(), m("!=", "job", "a")]), [b, c]);
        assert_eq!(ix.select(&[up.clone(), m("=", "job", "")]), [c]);
        assert_eq!(ix.select(&[up.clone(), m("=~", "job", "a|b")]), [a, b]);
        assert_eq!(ix.select(&[up.clone(), m("=~", "job", "a|")]), [a, c]);
        assert_eq!(ix.select(&[up.clone(), m("!~", "job", "a")]), [b, c]);
        assert_eq!(ix.select(&[up.clone(), m("!~", "job", "a|")]), [b]);
        assert_eq!(ix.select(&[m("=", "job", "a")]), [a, d]);
        assert_eq!(ix.select(&[m("=", "nope", "x")]), Vec::<SeriesRef>::new());
    }

    #[test]
    fn lookup_and_remove() {
        let mut ix = Index::default();
        let pairs = [("__name__", "x"), ("k", "v")];
        let r = add(&mut ix, &pairs);
        let h = labels_hash(pairs.iter().copied());
        let found = ix.lookup(h, |f| pairs.iter().all(|(n, v)| f(n, v)));
        assert_eq!(found, Some(r));
        let short = ix.lookup(h, |f| f("__name__", "x"));
        assert_eq!(short, None);
        ix.remove(r);
        assert_eq!(ix.lookup(h, |f| pairs.iter().all(|(n, v)| f(n, v))), None);
        assert!(ix.select(&[m("=", "k", "v")]).is_empty());
        assert!(ix.label_names().is_empty());
        assert!(ix.is_empty());
    }
}
