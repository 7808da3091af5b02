//! The matchmaker's internal form of a ticket: strings interned to integers so that the hot
//! loop compares integers, lists sorted for binary search and merging.

use std::collections::HashMap;

use super::Ticket;

/// An interned string.
pub(super) type Sym = usize;

/// Reference-counted string interner: a symbol lives while some queued ticket uses it, so the
/// table does not grow with every string ever seen.
///
/// The lookup table is a `HashMap` for speed; it is never iterated, and symbols are assigned in
/// call order (reusing released ones last-released first), so the hash order cannot leak into
/// any result.
#[derive(Debug, Default)]
pub(super) struct Interner {
    ids: HashMap<Box<str>, Sym>,
    /// Name and reference count of each symbol; a released slot has count 0.
    entries: Vec<(Box<str>, usize)>,
    free: Vec<Sym>,
}

impl Interner {
    /// The symbol for `s`, taking a reference on it.
    pub(super) fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.ids.get(s) {
            if let Some(entry) = self.entries.get_mut(sym) {
                entry.1 += 1;
            }
            return sym;
        }
        let name: Box<str> = s.into();
        let sym = match self.free.pop() {
            Some(sym) => {
                if let Some(entry) = self.entries.get_mut(sym) {
                    *entry = (name.clone(), 1);
                }
                sym
            }
            None => {
                self.entries.push((name.clone(), 1));
                self.entries.len() - 1
            }
        };
        self.ids.insert(name, sym);
        sym
    }

    /// Drops one reference on `sym`, forgetting the string with the last one.
    pub(super) fn release(&mut self, sym: Sym) {
        let Some(entry) = self.entries.get_mut(sym) else {
            return;
        };
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            let name = std::mem::take(&mut entry.0);
            self.ids.remove(&name);
            self.free.push(sym);
        }
    }

    /// The string of `sym`.
    pub(super) fn name(&self, sym: Sym) -> &str {
        self.entries.get(sym).map_or("", |(name, _)| name)
    }

    /// Number of live symbols.
    #[cfg(test)]
    pub(super) fn live(&self) -> usize {
        self.ids.len()
    }
}

/// A compiled query clause.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clause {
    Eq(Sym, Sym),
    /// Key and inclusive bounds, missing bounds as infinities.
    Range(Sym, f64, f64),
}

/// A ticket's properties, query and latencies with interned strings.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Compiled {
    /// String properties sorted by key symbol.
    strings: Vec<(Sym, Sym)>,
    /// Numeric properties sorted by key symbol.
    numbers: Vec<(Sym, f64)>,
    must: Vec<Clause>,
    must_not: Vec<Clause>,
    /// Round-trip times sorted by region symbol.
    pub(super) latencies: Vec<(Sym, u32)>,
}

impl Compiled {
    /// Compiles a validated ticket, taking one interner reference per symbol it stores
    /// ([`Compiled::release`] gives them back).
    pub(super) fn new(ticket: &Ticket, interner: &mut Interner) -> Self {
        let mut clause = |c: &super::Clause| match c {
            super::Clause::Eq { key, value } => {
                Clause::Eq(interner.intern(key), interner.intern(value))
            }
            super::Clause::Range { key, min, max } => Clause::Range(
                interner.intern(key),
                min.unwrap_or(f64::NEG_INFINITY),
                max.unwrap_or(f64::INFINITY),
            ),
        };
        let must = ticket.query.must.iter().map(&mut clause).collect();
        let must_not = ticket.query.must_not.iter().map(&mut clause).collect();
        let mut strings: Vec<_> = ticket
            .properties
            .strings
            .iter()
            .map(|(k, v)| (interner.intern(k), interner.intern(v)))
            .collect();
        strings.sort_unstable_by_key(|&(k, _)| k);
        let mut numbers: Vec<_> = ticket
            .properties
            .numbers
            .iter()
            .map(|(k, &v)| (interner.intern(k), v))
            .collect();
        numbers.sort_unstable_by_key(|&(k, _)| k);
        let mut latencies: Vec<_> = ticket
            .latencies
            .iter()
            .map(|(r, rtt)| (interner.intern(r), *rtt))
            .collect();
        latencies.sort_unstable_by_key(|&(r, _)| r);
        Self {
            strings,
            numbers,
            must,
            must_not,
            latencies,
        }
    }

    /// Gives back every reference [`Compiled::new`] took.
    pub(super) fn release(&self, interner: &mut Interner) {
        for c in self.must.iter().chain(&self.must_not) {
            match *c {
                Clause::Eq(k, v) => {
                    interner.release(k);
                    interner.release(v);
                }
                Clause::Range(k, ..) => interner.release(k),
            }
        }
        for &(k, v) in &self.strings {
            interner.release(k);
            interner.release(v);
        }
        for &(k, _) in &self.numbers {
            interner.release(k);
        }
        for &(r, _) in &self.latencies {
            interner.release(r);
        }
    }

    /// The regions within `limit` as a set of bits (region symbol mod 64); all ones without
    /// latencies. See [`Seat::regions`](super::index::Seat::regions).
    pub(super) fn region_mask(&self, limit: f64) -> u64 {
        if self.latencies.is_empty() {
            return u64::MAX;
        }
        self.latencies
            .iter()
            .filter(|&&(_, rtt)| f64::from(rtt) <= limit)
            .fold(0, |mask, &(region, _)| mask | 1 << (region % 64))
    }

    /// The string properties as `(key, value)` symbol pairs.
    pub(super) fn strings(&self) -> &[(Sym, Sym)] {
        &self.strings
    }

    /// The numeric properties as `(key, value)` pairs.
    pub(super) fn numbers(&self) -> &[(Sym, f64)] {
        &self.numbers
    }

    /// Whether the ticket has the string property `key = value`.
    pub(super) fn offers(&self, (key, value): (Sym, Sym)) -> bool {
        self.strings
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .and_then(|i| self.strings.get(i))
            .is_some_and(|&(_, v)| v == value)
    }

    /// The `key` in `min ..= max` ranges every other ticket of a match must satisfy.
    pub(super) fn required_ranges(&self) -> impl Iterator<Item = (Sym, f64, f64)> + '_ {
        self.must.iter().filter_map(|c| match *c {
            Clause::Range(k, lo, hi) => Some((k, lo, hi)),
            Clause::Eq(..) => None,
        })
    }

    /// The `key == value` pairs every other ticket of a match must have.
    pub(super) fn required(&self) -> impl Iterator<Item = (Sym, Sym)> + '_ {
        self.must.iter().filter_map(|c| match *c {
            Clause::Eq(k, v) => Some((k, v)),
            Clause::Range(..) => None,
        })
    }

    fn holds(clause: &Clause, other: &Compiled) -> bool {
        match *clause {
            Clause::Eq(key, value) => other.offers((key, value)),
            Clause::Range(key, lo, hi) => other
                .numbers
                .binary_search_by_key(&key, |&(k, _)| k)
                .ok()
                .and_then(|i| other.numbers.get(i))
                .is_some_and(|&(_, x)| lo <= x && x <= hi),
        }
    }

    fn accepts(&self, other: &Compiled) -> bool {
        self.must.iter().all(|c| Self::holds(c, other))
            && !self.must_not.iter().any(|c| Self::holds(c, other))
    }

    /// Whether the two tickets' hard constraints allow them in one match, both directions.
    pub(super) fn compatible(&self, other: &Compiled) -> bool {
        self.accepts(other) && other.accepts(self)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Clause, Ticket};
    use super::*;

    #[test]
    fn interner_counts_references() {
        let mut i = Interner::default();
        let a = i.intern("a");
        assert_eq!(i.intern("a"), a);
        let b = i.intern("b");
        assert_ne!(a, b);
        i.release(a);
        assert_eq!(i.name(a), "a");
        i.release(a);
        assert_eq!(i.live(), 1);
        // The slot is reused for the next new string.
        let c = i.intern("c");
        assert_eq!(c, a);
        assert_eq!(i.name(c), "c");
        i.release(b);
        i.release(c);
        assert_eq!(i.live(), 0);
        // Releasing more than was taken is harmless.
        i.release(c);
        i.release(999);
        assert_eq!(i.live(), 0);
    }

    #[test]
    fn compiled_compatibility_agrees_with_ticket_semantics() {
        let mut i = Interner::default();
        let t1 = Ticket::solo("p", "a", 1.0)
            .with_string("map", "harbor")
            .with_number("level", 10.0)
            .must(Clause::eq("lang", "en"))
            .must_not(Clause::range("level", Some(50.0), None));
        let t2 = Ticket::solo("p", "b", 1.0)
            .with_string("lang", "en")
            .with_number("level", 20.0)
            .must(Clause::range("level", Some(5.0), Some(15.0)));
        let t3 = Ticket::solo("p", "c", 1.0)
            .with_string("lang", "en")
            .with_number("level", 60.0);
        let all = [&t1, &t2, &t3];
        let compiled: Vec<_> = all.iter().map(|t| Compiled::new(t, &mut i)).collect();
        for (a, ca) in all.iter().zip(&compiled) {
            for (b, cb) in all.iter().zip(&compiled) {
                assert_eq!(a.compatible(b), ca.compatible(cb), "{a:?} vs {b:?}");
            }
        }
        assert!(t1.compatible(&t2));
        assert!(!t1.compatible(&t3));
        assert_eq!(
            compiled[0].required().collect::<Vec<_>>().len(),
            1,
            "one must-equal clause"
        );
        for c in &compiled {
            c.release(&mut i);
        }
        assert_eq!(i.live(), 0);
    }
}
