//! Reads manifest files and directories, builds the index, compiles and publishes; then watches
//! the paths and applies every change in place.
//!
//! An apply reads and parses only the files that changed and updates the index with their
//! objects; the compile that follows compiles again only the Ingresses whose objects changed,
//! and links and publishes a whole new table. It runs on a blocking thread, never
//! on a runtime worker, so traffic is served while a large configuration compiles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::debounce::Debounce;
use super::files::FileCache;
use super::merge::Merged;
use crate::compile::{CompileOptions, Compiler};
use crate::diagnostic::Diagnostic;
use crate::publish::Publisher;

/// A burst of file events ends after this long without one (writing a file makes several)...
const QUIET: Duration = Duration::from_millis(10);
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
    #[error("applying manifest changes failed: {0}")]
    Apply(#[from] tokio::task::JoinError),
}

pub struct ManifestSource {
    paths: Vec<PathBuf>,
    /// Keeps each Ingress's compiled form for the next apply.
    compiler: Compiler,
    /// What each file held at its last good read.
    files: FileCache,
    /// The index of all files' objects.
    merged: Merged,
    /// Whether a table was compiled yet (an empty configuration is published too).
    compiled: bool,
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
            compiler: Compiler::new(options),
            files: FileCache::default(),
            merged: Merged::default(),
            compiled: false,
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

    /// Reads the files that changed, compiles and publishes; returns whether a new table was
    /// published. A file that cannot be read or parsed keeps the objects of its last good read;
    /// a file that is gone takes its objects with it. Diagnostics of every file are logged and
    /// counted with each compile.
    pub fn reload(&mut self) -> bool {
        let started = Instant::now();
        let mut diagnostics = Vec::new();
        let paths = self.discover(&mut diagnostics);
        let refresh = self.files.refresh(&paths);
        if refresh.changed.is_empty() && !refresh.read && self.compiled {
            tracing::debug!("no manifest changed");
            return false;
        }
        for (path, previous) in &refresh.changed {
            self.merged.update(self.files.files(), path, previous);
        }
        for file in self.files.files().values() {
            diagnostics.extend(file.diagnostics.iter().cloned());
        }
        diagnostics.extend(self.merged.shadowed(self.files.files()));
        for d in &diagnostics {
            d.log();
        }
        let parse_errors = diagnostics.iter().filter(|d| d.is_error()).count();
        self.publisher.metrics().count_errors("parse", parse_errors);
        if refresh.changed.is_empty() && self.compiled {
            tracing::debug!("manifests read again; no object changed");
            return false;
        }
        let index = &self.merged.index;
        let compile_started = Instant::now();
        let compiled = self.compiler.compile(index);
        self.compiled = true;
        tracing::debug!(
            objects = index.len(),
            files_changed = refresh.changed.len(),
            ingresses_recompiled = compiled.recompiled,
            read_ms = (compile_started - started).as_secs_f64() * 1e3,
            compile_ms = compile_started.elapsed().as_secs_f64() * 1e3,
            "manifests compiled"
        );
        self.publisher.publish(compiled, started)
    }

    /// Applies the changes on a blocking thread and hands the source back.
    async fn reload_off_runtime(mut self) -> Result<Self, SourceError> {
        Ok(tokio::task::spawn_blocking(move || {
            self.reload();
            self
        })
        .await?)
    }

    /// Loads once, then applies every change to the watched paths until the process ends.
    pub async fn run(self) -> Result<(), SourceError> {
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
        let debounce = Debounce {
            quiet: QUIET,
            max_delay: MAX_DELAY,
        };
        let mut source = self.reload_off_runtime().await?;
        while debounce.next(&mut rx).await {
            source = source.reload_off_runtime().await?;
        }
        Ok(())
    }
}
