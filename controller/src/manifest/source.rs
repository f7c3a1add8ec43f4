//! Reads manifest files and directories, builds the index, compiles and publishes; then watches
//! the paths and applies every change in place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::parse::{parse, FileObjects};
use crate::compile::{compile, CompileOptions};
use crate::diagnostic::Diagnostic;
use crate::index::Index;
use crate::object::{ObjectRef, Origin};
use crate::publish::Publisher;

/// Changes that arrive within this window are applied together.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// ...but a steady stream of changes never delays an apply longer than this.
const MAX_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("--manifests {}: {error}", path.display())]
    Path {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot watch {}: {error}", path.display())]
    Watch { path: PathBuf, error: notify::Error },
}

pub struct ManifestSource {
    paths: Vec<PathBuf>,
    options: CompileOptions,
    /// What each file held at its last good read.
    files: BTreeMap<PathBuf, FileObjects>,
    publisher: Publisher,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Hidden entries are skipped: editors' swap files, and the `..data` links Kubernetes uses for
/// mounted ConfigMaps (their files are also visible under their plain names).
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            diagnostics.push(Diagnostic::error(
                None,
                None,
                format!("cannot read directory {}: {e}", dir.display()),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            walk(&path, out, diagnostics);
        } else if is_manifest(&path) {
            out.push(path);
        }
    }
}

impl ManifestSource {
    /// Checks that every path exists. Nothing is read yet.
    pub fn new(
        paths: Vec<PathBuf>,
        options: CompileOptions,
        publisher: Publisher,
    ) -> Result<Self, SourceError> {
        for path in &paths {
            std::fs::metadata(path).map_err(|error| SourceError::Path {
                path: path.clone(),
                error,
            })?;
        }
        Ok(Self {
            paths,
            options,
            files: BTreeMap::new(),
            publisher,
        })
    }

    fn discover(&self, diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for path in &self.paths {
            if path.is_dir() {
                walk(path, &mut files, diagnostics);
            } else if path.exists() {
                files.push(path.clone());
            } else {
                diagnostics.push(Diagnostic::error(
                    None,
                    None,
                    format!("{} does not exist", path.display()),
                ));
            }
        }
        files.dedup();
        files
    }

    /// Reads every file, compiles and publishes. A file that cannot be read or parsed keeps the
    /// objects of its last good read; a file that is gone takes its objects with it.
    pub fn reload(&mut self) -> bool {
        let started = Instant::now();
        let mut diagnostics = Vec::new();
        let mut files = BTreeMap::new();
        for path in self.discover(&mut diagnostics) {
            let previous = self.files.get(&path);
            let objects = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let parsed = parse(&path, &text, previous);
                    diagnostics.extend(parsed.diagnostics);
                    parsed.objects
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::error(
                        None,
                        None,
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    previous.cloned().unwrap_or_default()
                }
            };
            files.insert(path, objects);
        }
        self.files = files;

        let mut index = Index::default();
        let mut seen: BTreeMap<&ObjectRef, &Origin> = BTreeMap::new();
        for objects in self.files.values() {
            for (object_ref, (object, origin)) in objects {
                if let Some(first) = seen.get(object_ref) {
                    // The first file (in path order) wins.
                    let message = format!("defined again; the definition at {first} is used");
                    diagnostics.push(
                        Diagnostic::warning(Some(object_ref.clone()), None, message)
                            .at(Some(origin.clone())),
                    );
                    continue;
                }
                seen.insert(object_ref, origin);
                index.apply(object.clone(), Some(origin.clone()));
            }
        }
        for d in &diagnostics {
            d.log();
        }
        let parse_errors = diagnostics.iter().filter(|d| d.is_error()).count();
        self.publisher.metrics().count_errors("parse", parse_errors);
        let compiled = compile(&index, &self.options);
        tracing::debug!(objects = index.len(), "manifests compiled");
        self.publisher.publish(compiled, started)
    }

    /// Loads once, then applies every change to the watched paths until the process ends.
    pub async fn run(mut self) -> Result<(), SourceError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(e) => match e.kind {
                        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                        EventKind::Access(_) => false,
                        _ => true,
                    },
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.send(());
                }
            })
            .map_err(|error| SourceError::Watch {
                path: PathBuf::new(),
                error,
            })?;
        for path in &self.paths {
            // A file is watched through its directory, so replacing it (editors, ConfigMap
            // updates) is seen too.
            let (target, mode) = if path.is_dir() {
                (path.clone(), RecursiveMode::Recursive)
            } else {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                (
                    parent.unwrap_or(Path::new(".")).to_path_buf(),
                    RecursiveMode::NonRecursive,
                )
            };
            watcher
                .watch(&target, mode)
                .map_err(|error| SourceError::Watch {
                    path: target.clone(),
                    error,
                })?;
        }
        self.reload();
        while rx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let wait =
                    DEBOUNCE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                    Ok(None) => return Ok(()),
                    _ => break,
                }
            }
            self.reload();
        }
        Ok(())
    }
}
