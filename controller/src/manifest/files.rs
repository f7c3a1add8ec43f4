//! The manifest files as last read: what each held, and enough about the file to tell whether it
//! changed since without reading it again. Only changed files are read and parsed.
//!
//! A file counts as unchanged when its size, modification and change times, inode and device are
//! what they were at the last read. File times are coarse (a kernel tick), so a file written
//! again within the same tick at the same size would look unchanged: a file whose modification
//! time was recent when it was read is "racy" (as git calls it) and is read again, and compared
//! by content hash, on the next refresh.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::parse::{parse, FileObjects};
use crate::diagnostic::Diagnostic;

/// A file modified less than this long before it was read may change again unnoticed by its
/// metadata. Generous, to cover file systems whose clocks are not ours (NFS).
const RACY: Duration = Duration::from_secs(2);

/// What the metadata says about a file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSig {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    changed: (i64, i64),
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileSig {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            changed: (meta.ctime(), meta.ctime_nsec()),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
        }
    }
}

/// One file as last read.
#[derive(Debug, Default)]
pub(super) struct CachedFile {
    /// `None`: the last attempt to read failed; read again next time.
    sig: Option<FileSig>,
    hash: Option<u64>,
    racy: bool,
    /// The objects of its last good read (documents that failed keep their previous objects).
    pub(super) objects: FileObjects,
    /// Diagnostics of its last read.
    pub(super) diagnostics: Vec<Diagnostic>,
}

/// What a refresh found.
#[derive(Debug, Default)]
pub(super) struct Refresh {
    /// Files whose objects changed (added, removed or edited), with the objects they held before.
    pub(super) changed: Vec<(PathBuf, FileObjects)>,
    /// Whether any file was read again (its diagnostics may have changed).
    pub(super) read: bool,
}

#[derive(Debug, Default)]
pub(super) struct FileCache {
    files: BTreeMap<PathBuf, CachedFile>,
}

fn digest(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(text.as_bytes());
    h.finish()
}

impl FileCache {
    /// Every file, in path order.
    pub(super) fn files(&self) -> &BTreeMap<PathBuf, CachedFile> {
        &self.files
    }

    /// Brings the cache up to date with `paths` (the files that exist now): drops files that
    /// are gone, and reads and parses the ones that changed.
    pub(super) fn refresh(&mut self, paths: &[PathBuf]) -> Refresh {
        let mut out = Refresh::default();
        let wanted: std::collections::BTreeSet<&PathBuf> = paths.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(file) = self.files.remove(&path) {
                out.changed.push((path, file.objects));
            }
        }
        for path in wanted {
            let file = self.files.entry(path.clone()).or_default();
            match check(path, file) {
                Check::Unchanged => {}
                Check::Read => out.read = true,
                Check::Parsed(previous) => {
                    out.read = true;
                    out.changed.push((path.clone(), previous));
                }
            }
        }
        out
    }
}

enum Check {
    Unchanged,
    /// Read again; the objects did not change.
    Read,
    /// Parsed again; the objects changed. Holds the previous objects.
    Parsed(FileObjects),
}

fn unreadable(path: &Path, file: &mut CachedFile, error: std::io::Error) -> Check {
    file.sig = None;
    file.hash = None;
    file.diagnostics = vec![Diagnostic::error(
        None,
        None,
        format!("cannot read {}: {error}", path.display()),
    )];
    Check::Read
}

fn check(path: &Path, file: &mut CachedFile) -> Check {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) => return unreadable(path, file, error),
    };
    let sig = FileSig::of(&meta);
    if file.sig == Some(sig) && !file.racy {
        return Check::Unchanged;
    }
    let reading = SystemTime::now();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return unreadable(path, file, error),
    };
    file.sig = Some(sig);
    file.racy = sig.modified.is_none_or(|m| m + RACY > reading);
    let hash = digest(&text);
    if file.hash == Some(hash) {
        return Check::Unchanged;
    }
    file.hash = Some(hash);
    let parsed = parse(path, &text, Some(&file.objects));
    file.diagnostics = parsed.diagnostics;
    if parsed.objects == file.objects {
        return Check::Read;
    }
    Check::Parsed(std::mem::replace(&mut file.objects, parsed.objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\n";
    const TWO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: ns}\n";

    fn names(objects: &FileObjects) -> Vec<String> {
        objects.keys().map(|r| r.to_string()).collect()
    }

    /// A temporary directory holding `a.yaml` with one Service (removed when dropped).
    fn one_file() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.yaml");
        std::fs::write(&a, ONE).unwrap();
        (tmp, a)
    }

    #[test]
    fn parses_only_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let (a, b) = (d.join("a.yaml"), d.join("b.yaml"));
        std::fs::write(&a, ONE).unwrap();
        std::fs::write(&b, TWO).unwrap();
        let mut cache = FileCache::default();
        let first = cache.refresh(&[a.clone(), b.clone()]);
        assert_eq!(first.changed.len(), 2);
        assert!(first.changed.iter().all(|(_, old)| old.is_empty()));

        // Nothing changed (the files are racy, so they are read again, but not parsed).
        let again = cache.refresh(&[a.clone(), b.clone()]);
        assert!(again.changed.is_empty());

        // Same size, new content, same second: caught by the racy check and the hash.
        std::fs::write(&a, ONE.replace("name: a", "name: c")).unwrap();
        let edited = cache.refresh(&[a.clone(), b.clone()]);
        assert_eq!(edited.changed.len(), 1);
        let (path, old) = &edited.changed[0];
        assert_eq!(path, &a);
        assert_eq!(names(old), ["Service ns/a"]);
        assert_eq!(names(&cache.files()[&a].objects), ["Service ns/c"]);

        // A file that is gone takes its objects with it.
        let removed = cache.refresh(std::slice::from_ref(&a));
        assert_eq!(removed.changed.len(), 1);
        assert_eq!(removed.changed[0].0, b);
        assert!(!cache.files().contains_key(&b));
    }

    #[test]
    fn settled_files_are_not_read() {
        let (_tmp, a) = one_file();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .and_then(|f| f.set_modified(old))
            .unwrap();
        let mut cache = FileCache::default();
        cache.refresh(std::slice::from_ref(&a));
        let again = cache.refresh(std::slice::from_ref(&a));
        assert!(!again.read, "an old, unchanged file is not read again");
    }

    #[test]
    fn unreadable_file_keeps_its_objects() {
        let (_tmp, a) = one_file();
        let mut cache = FileCache::default();
        cache.refresh(std::slice::from_ref(&a));
        // A directory where the file was: it exists but cannot be read as text.
        std::fs::remove_file(&a).unwrap();
        std::fs::create_dir(&a).unwrap();
        let r = cache.refresh(std::slice::from_ref(&a));
        assert!(r.changed.is_empty() && r.read);
        let file = &cache.files()[&a];
        assert_eq!(names(&file.objects), ["Service ns/a"]);
        assert!(file.diagnostics[0].message.starts_with("cannot read"));
    }
}
