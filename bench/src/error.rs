//! The one error type of hsm-bench, and how a PKCS#11 failure is named in the results.

use std::fmt;

/// What can go wrong in hsm-bench outside a measured operation (those are [`OpError`]s and end
/// up in the table instead).
#[derive(Debug)]
#[non_exhaustive]
pub enum BenchError {
    /// Bad command-line input.
    Usage(String),
    /// A file or process could not be used.
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A results file could not be read or written as JSON.
    Json {
        /// Which file.
        what: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// Loading or initializing a PKCS#11 module, or preparing its token, failed.
    Module(String),
    /// The chart could not be drawn.
    Chart(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(m) => write!(f, "usage: {m}"),
            BenchError::Io { what, source } => write!(f, "{what}: {source}"),
            BenchError::Json { what, source } => write!(f, "{what}: {source}"),
            BenchError::Module(m) => write!(f, "PKCS#11 module: {m}"),
            BenchError::Chart(m) => write!(f, "chart: {m}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Io { source, .. } => Some(source),
            BenchError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Builds the `Io` variant with a description of what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// A failed setup step or operation, as it is reported in a table cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// `CKR_*` name, or a short description for failures that are not PKCS#11 return codes.
    pub code: String,
    /// The module does not offer what the operation needs: the cell reads "n/a", not "error".
    pub unsupported: bool,
}

impl OpError {
    /// A failure that is not about support.
    pub fn failed(code: impl Into<String>) -> OpError {
        OpError {
            code: code.into(),
            unsupported: false,
        }
    }

    /// The module does not offer what the operation needs.
    pub fn unsupported(why: impl Into<String>) -> OpError {
        OpError {
            code: why.into(),
            unsupported: true,
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// Return codes that mean "this module cannot do that", as opposed to "it broke".
const UNSUPPORTED_CODES: &[&str] = &[
    "CKR_MECHANISM_INVALID",
    "CKR_MECHANISM_PARAM_INVALID",
    "CKR_DOMAIN_PARAMS_INVALID",
    "CKR_CURVE_NOT_SUPPORTED",
    "CKR_KEY_SIZE_RANGE",
    "CKR_KEY_TYPE_INCONSISTENT",
    "CKR_FUNCTION_NOT_SUPPORTED",
    "CKR_ATTRIBUTE_VALUE_INVALID",
    "CKR_TEMPLATE_INCONSISTENT",
];

impl From<cryptoki::error::Error> for OpError {
    fn from(e: cryptoki::error::Error) -> OpError {
        let code = match &e {
            cryptoki::error::Error::Pkcs11(rv, _) => ckr_name(&format!("{rv:?}")),
            other => other.to_string(),
        };
        let unsupported = UNSUPPORTED_CODES.contains(&code.as_str());
        OpError { code, unsupported }
    }
}

/// `MechanismInvalid` (cryptoki's `RvError` variant name) → `CKR_MECHANISM_INVALID`.
fn ckr_name(variant: &str) -> String {
    if variant.contains('(') {
        // A vendor-defined or unknown code: keep cryptoki's rendering with the number.
        return variant.to_string();
    }
    let mut out = String::from("CKR");
    for c in variant.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_variants_become_ckr_names() {
        assert_eq!(ckr_name("MechanismInvalid"), "CKR_MECHANISM_INVALID");
        assert_eq!(ckr_name("DataLenRange"), "CKR_DATA_LEN_RANGE");
        assert_eq!(ckr_name("GeneralError"), "CKR_GENERAL_ERROR");
    }

    #[test]
    fn support_errors_are_told_apart() {
        let e = cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::MechanismInvalid,
            cryptoki::context::Function::SignInit,
        );
        let op = OpError::from(e);
        assert_eq!(op.code, "CKR_MECHANISM_INVALID");
        assert!(op.unsupported);
    }
}
