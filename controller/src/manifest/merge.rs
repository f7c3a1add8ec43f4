//! The index of every manifest file's objects, kept up to date file by file.
//!
//! An object defined in several files comes from the first file in path order; the others are
//! "shadowed" and reported on every apply. Only the objects of changed files are looked at, so
//! an edit costs what the edited file holds, not what all files hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::files::CachedFile;
use super::parse::FileObjects;
use crate::diagnostic::Diagnostic;
use crate::index::Index;
use crate::object::ObjectRef;

#[derive(Debug, Default)]
pub(super) struct Merged {
    pub(super) index: Index,
    /// Objects defined in more than one file: the files that lost, besides the winner (whose
    /// file is the index entry's origin).
    shadowed: BTreeMap<ObjectRef, BTreeSet<PathBuf>>,
}

impl Merged {
    /// Applies a change of the file at `path`: it held `previous` and now holds what `files`
    /// says (nothing, if it is gone).
    pub(super) fn update(
        &mut self,
        files: &BTreeMap<PathBuf, CachedFile>,
        path: &Path,
        previous: &FileObjects,
    ) {
        let empty = FileObjects::new();
        let now = files.get(path).map_or(&empty, |f| &f.objects);
        let touched: BTreeSet<&ObjectRef> = previous.keys().chain(now.keys()).collect();
        for object in touched {
            let mut definers = self.shadowed.remove(object).unwrap_or_default();
            if let Some(origin) = self.index.origin(object) {
                definers.insert(origin.file.clone());
            }
            definers.remove(path);
            if now.contains_key(object) {
                definers.insert(path.to_path_buf());
            }
            // The first file that (still) defines it; files changed in the same refresh and not
            // merged yet may no longer do so.
            let mut found = None;
            while let Some(file) = definers.pop_first() {
                found = files.get(&file).and_then(|f| f.objects.get(object));
                if found.is_some() {
                    break;
                }
            }
            match found {
                Some((value, origin)) => self.index.apply(value.clone(), Some(origin.clone())),
                None => {
                    self.index.delete(object.kind, &object.key);
                }
            }
            if !definers.is_empty() {
                self.shadowed.insert(object.clone(), definers);
            }
        }
    }

    /// A warning for every definition that lost to one in an earlier file.
    pub(super) fn shadowed(&self, files: &BTreeMap<PathBuf, CachedFile>) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (object, losers) in &self.shadowed {
            let Some(first) = self.index.origin(object) else {
                continue;
            };
            for loser in losers {
                let Some((_, origin)) = files.get(loser).and_then(|f| f.objects.get(object)) else {
                    continue;
                };
                let message = format!("defined again; the definition at {first} is used");
                out.push(
                    Diagnostic::warning(Some(object.clone()), None, message)
                        .at(Some(origin.clone())),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::FileCache;
    use super::*;

    fn service(name: &str, port: u16) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{ports: [{{port: {port}}}]}}\n---\n")
    }

    fn port(merged: &Merged, name: &str) -> Option<i32> {
        let key = crate::object::ObjectKey::new("ns", name);
        let spec = merged.index.services.get(&key)?.object.spec.clone()?;
        Some(spec.ports?[0].port)
    }

    struct World {
        dir: tempfile::TempDir,
        cache: FileCache,
        merged: Merged,
    }

    impl World {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                cache: FileCache::default(),
                merged: Merged::default(),
            }
        }

        /// Writes (or, with `None`, removes) files, then refreshes like the source does.
        fn set(&mut self, changes: &[(&str, Option<&str>)]) {
            for (name, text) in changes {
                let path = self.dir.path().join(name);
                match text {
                    Some(text) => std::fs::write(path, text).unwrap(),
                    None => std::fs::remove_file(path).unwrap(),
                }
            }
            let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            let refresh = self.cache.refresh(&paths);
            for (path, previous) in &refresh.changed {
                self.merged.update(self.cache.files(), path, previous);
            }
        }

        /// The index built from scratch, as the source did before it was incremental.
        fn rebuilt(&self) -> Index {
            let mut index = Index::default();
            let mut seen = BTreeSet::new();
            for file in self.cache.files().values() {
                for (object_ref, (object, origin)) in &file.objects {
                    if seen.insert(object_ref.clone()) {
                        index.apply(object.clone(), Some(origin.clone()));
                    }
                }
            }
            index
        }
    }

    #[test]
    fn first_file_wins_and_the_next_takes_over() {
        let mut w = World::new();
        let (a1, a2, b) = (service("a", 1), service("a", 2), service("b", 3));
        w.set(&[("2.yaml", Some(&a2)), ("3.yaml", Some(&b))]);
        assert_eq!(port(&w.merged, "a"), Some(2));

        // An earlier file defines it too: it wins, the later one is reported.
        w.set(&[("1.yaml", Some(&a1))]);
        assert_eq!(port(&w.merged, "a"), Some(1));
        let warnings = w.merged.shadowed(w.cache.files());
        assert_eq!(warnings.len(), 1);
        let text = warnings[0].to_string();
        assert!(
            text.contains("2.yaml (document 1): Service ns/a: defined again; the definition at"),
            "{text}"
        );
        assert!(text.ends_with("1.yaml (document 1) is used"), "{text}");
        assert_eq!(w.merged.index, w.rebuilt());

        // The winner goes: the shadowed definition takes over, with no warning left.
        w.set(&[("1.yaml", None)]);
        assert_eq!(port(&w.merged, "a"), Some(2));
        assert!(w.merged.shadowed(w.cache.files()).is_empty());

        // The last definition goes: so does the object.
        w.set(&[("2.yaml", Some(""))]);
        assert_eq!(port(&w.merged, "a"), None);
        assert_eq!(port(&w.merged, "b"), Some(3));
        assert_eq!(w.merged.index, w.rebuilt());
    }

    #[test]
    fn objects_moved_between_files_in_one_refresh() {
        let mut w = World::new();
        let (a, b) = (service("a", 1), service("b", 2));
        w.set(&[("1.yaml", Some(&a)), ("2.yaml", Some(&b))]);
        // Swap them in one go: both files change before either is merged.
        w.set(&[("1.yaml", Some(&b)), ("2.yaml", Some(&a))]);
        assert_eq!(w.merged.index, w.rebuilt());
        assert!(w.merged.shadowed(w.cache.files()).is_empty());
        // Both files define both; then the first drops them both.
        let both = format!("{a}{b}");
        w.set(&[("1.yaml", Some(&both)), ("2.yaml", Some(&both))]);
        assert_eq!(w.merged.shadowed(w.cache.files()).len(), 2);
        w.set(&[("1.yaml", Some(""))]);
        assert_eq!(w.merged.index, w.rebuilt());
        assert!(w.merged.shadowed(w.cache.files()).is_empty());
    }

    #[test]
    fn edits_match_a_full_rebuild() {
        let mut w = World::new();
        let all: String = (0..20).map(|i| service(&format!("s{i}"), 80)).collect();
        let half: String = (10..30).map(|i| service(&format!("s{i}"), 81)).collect();
        w.set(&[("a.yaml", Some(&all)), ("b.yaml", Some(&half))]);
        assert_eq!(w.merged.index, w.rebuilt());
        assert_eq!(w.merged.shadowed(w.cache.files()).len(), 10);
        w.set(&[("a.yaml", Some(&service("s15", 99)))]);
        assert_eq!(w.merged.index, w.rebuilt());
        assert_eq!(port(&w.merged, "s15"), Some(99));
        assert_eq!(port(&w.merged, "s12"), Some(81));
        assert_eq!(port(&w.merged, "s3"), None);
        assert_eq!(w.merged.shadowed(w.cache.files()).len(), 1);
    }
}
