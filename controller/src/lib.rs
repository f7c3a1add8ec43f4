//! weir's controller: reads Kubernetes objects (from files now, from the API later), indexes
//! them, compiles them into a [`weir_dataplane::RouteTable`] and publishes it.

pub mod cluster;
pub mod compact;
pub mod compile;
pub mod diagnostic;
pub mod duration;
pub mod index;
pub mod manifest;
pub mod object;
pub mod publish;

pub use compile::{compile, CompileOptions, Compiled, Compiler};
pub use diagnostic::{Diagnostic, Severity};
pub use index::Index;
pub use object::{Kind, Object, ObjectKey, ObjectRef, Origin};
pub use publish::{table_channel, ConfigMetrics, Publisher, TableReceiver, TableSender};
pub mod crd;
