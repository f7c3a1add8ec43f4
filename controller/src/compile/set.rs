//! A sorted set that stays a small vector while it is small: most hosts, backends and objects
//! have one claimant or reader, and a B-tree node for one element costs about a kilobyte.

use std::collections::BTreeSet;

/// Past this many elements, a B-tree (inserting into a long vector moves it).
const FEW: usize = 16;

#[derive(Debug)]
pub(super) enum Set<T> {
    Few(Vec<T>),
    Many(BTreeSet<T>),
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set::Few(Vec::new())
    }
}

impl<T: Ord> Set<T> {
    pub(super) fn one(value: T) -> Self {
        Set::Few(vec![value])
    }

    pub(super) fn insert(&mut self, value: T) {
        match self {
            Set::Few(v) => match v.binary_search(&value) {
                Ok(_) => {}
                Err(i) if v.len() < FEW => v.insert(i, value),
                Err(_) => {
                    let mut all: BTreeSet<T> = std::mem::take(v).into_iter().collect();
                    all.insert(value);
                    *self = Set::Many(all);
                }
            },
            Set::Many(s) => {
                s.insert(value);
            }
        }
    }

    pub(super) fn remove(&mut self, value: &T) {
        match self {
            Set::Few(v) => {
                if let Ok(i) = v.binary_search(value) {
                    v.remove(i);
                }
            }
            Set::Many(s) => {
                s.remove(value);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Set::Few(v) => v.is_empty(),
            Set::Many(s) => s.is_empty(),
        }
    }

    pub(super) fn first(&self) -> Option<&T> {
        match self {
            Set::Few(v) => v.first(),
            Set::Many(s) => s.first(),
        }
    }

    /// In order.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = &T> + '_> {
        match self {
            Set::Few(v) => Box::new(v.iter()),
            Set::Many(s) => Box::new(s.iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_sorted_across_the_switch() {
        let mut set = Set::default();
        for i in (0..40).rev() {
            set.insert(i * 7 % 40);
            set.insert(i * 7 % 40);
        }
        assert!(matches!(set, Set::Many(_)));
        assert_eq!(
            set.iter().copied().collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        for i in 0..40 {
            set.remove(&i);
        }
        assert!(set.is_empty());
        let mut few = Set::one(3);
        few.insert(1);
        few.remove(&3);
        assert_eq!(few.first(), Some(&1));
    }
}
