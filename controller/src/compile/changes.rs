//! What changed in the index since the last compile, found by comparing each object with the
//! one the last compile saw: sources replace an object's `Arc` when they change it, so an
//! unchanged object is the same pointer and costs no key comparison.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::index::Entry;
use crate::object::ObjectKey;

/// The objects of one kind the last compile saw.
#[derive(Debug)]
pub(super) struct Seen<T>(BTreeMap<ObjectKey, Arc<T>>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

/// One object that is new, changed or gone: what it was and what it is.
pub(super) struct Change<T> {
    pub(super) key: ObjectKey,
    pub(super) before: Option<Arc<T>>,
    pub(super) now: Option<Arc<T>>,
}

impl<T> Seen<T> {
    /// The objects that differ between what was seen and `now`; `now` is seen from here on.
    pub(super) fn update(&mut self, now: &BTreeMap<ObjectKey, Entry<T>>) -> Vec<Change<T>> {
        let mut keys = Vec::new();
        let mut seen = self.0.iter().peekable();
        let mut current = now.iter().peekable();
        loop {
            match (seen.peek(), current.peek()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    keys.push((*k).clone());
                    seen.next();
                }
                (None, Some((k, _))) => {
                    keys.push((*k).clone());
                    current.next();
                }
                (Some((ks, vs)), Some((kc, vc))) => {
                    // The same object has the same key: both sides are at the same place.
                    if Arc::ptr_eq(vs, &vc.object) {
                        seen.next();
                        current.next();
                        continue;
                    }
                    match ks.cmp(kc) {
                        Ordering::Less => {
                            keys.push((*ks).clone());
                            seen.next();
                        }
                        Ordering::Greater => {
                            keys.push((*kc).clone());
                            current.next();
                        }
                        Ordering::Equal => {
                            keys.push((*ks).clone());
                            seen.next();
                            current.next();
                        }
                    }
                }
            }
        }
        keys.into_iter()
            .map(|key| {
                let now = now.get(&key).map(|e| e.object.clone());
                let before = match &now {
                    Some(object) => self.0.insert(key.clone(), object.clone()),
                    None => self.0.remove(&key),
                };
                Change { key, before, now }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(items: &[(&str, &Arc<u32>)]) -> BTreeMap<ObjectKey, Entry<u32>> {
        items
            .iter()
            .map(|(name, object)| {
                (
                    ObjectKey::new("ns", *name),
                    Entry {
                        object: (*object).clone(),
                        origin: None,
                    },
                )
            })
            .collect()
    }

    fn names(changes: &[Change<u32>]) -> Vec<(String, Option<u32>, Option<u32>)> {
        changes
            .iter()
            .map(|c| {
                (
                    c.key.name.clone(),
                    c.before.as_deref().copied(),
                    c.now.as_deref().copied(),
                )
            })
            .collect()
    }

    #[test]
    fn finds_added_changed_and_removed_objects() {
        let (a, b, c, b2, d) = (
            Arc::new(1),
            Arc::new(2),
            Arc::new(3),
            Arc::new(20),
            Arc::new(4),
        );
        let mut seen = Seen::default();
        let first = seen.update(&index(&[("a", &a), ("b", &b), ("c", &c)]));
        assert_eq!(names(&first).len(), 3);
        assert!(seen
            .update(&index(&[("a", &a), ("b", &b), ("c", &c)]))
            .is_empty());
        // b replaced, c gone, d new; an equal value in a new Arc counts as a change too.
        let changes = seen.update(&index(&[("a", &a), ("b", &b2), ("d", &d)]));
        assert_eq!(
            names(&changes),
            vec![
                ("b".to_string(), Some(2), Some(20)),
                ("c".to_string(), Some(3), None),
                ("d".to_string(), None, Some(4)),
            ]
        );
        assert!(seen
            .update(&index(&[("a", &a), ("b", &b2), ("d", &d)]))
            .is_empty());
        assert_eq!(names(&seen.update(&index(&[]))).len(), 3);
    }
}
