//! Diagnostics: what is wrong with the configuration, naming the object, field and origin.

use std::fmt;

use crate::object::{ObjectRef, Origin};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Part of the configuration was not applied.
    Error,
    /// Applied, but probably not what the author meant (e.g. a route lost a conflict).
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub object: Option<ObjectRef>,
    pub origin: Option<Origin>,
    /// A field path such as `spec.rules[0].http.paths[1].path`.
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        object: Option<ObjectRef>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            object,
            origin: None,
            field,
            message: message.into(),
        }
    }

    pub fn warning(
        object: Option<ObjectRef>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, message)
        }
    }

    pub fn at(mut self, origin: Option<Origin>) -> Self {
        self.origin = origin;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Logs the diagnostic with structured fields.
    pub fn log(&self) {
        let object = self.object.as_ref().map(|o| o.to_string());
        let origin = self.origin.as_ref().map(|o| o.to_string());
        match self.severity {
            Severity::Error => tracing::error!(
                object = object.as_deref(),
                origin = origin.as_deref(),
                field = self.field.as_deref(),
                "{}",
                self.message
            ),
            Severity::Warning => tracing::warn!(
                object = object.as_deref(),
                origin = origin.as_deref(),
                field = self.field.as_deref(),
                "{}",
                self.message
            ),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}
