//! The manifest source: Kubernetes YAML files served without a cluster, watched for changes.

mod debounce;
mod files;
mod merge;
mod parse;
mod source;

pub use parse::{parse, FileObjects, FileParse};
pub use source::{ManifestSource, SourceError};
