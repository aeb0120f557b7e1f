//! Error codes on the wire. Each maps 1:1 to a PKCS#11 `CKR_*` value, so the module can hand
//! the daemon's verdict to the application without a lossy translation table.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $ckr:ident,)*) => {
        /// A PKCS#11 return code the daemon can answer with. Serialized as the `CKR_*` number
        /// itself, so adding a variant never shifts the meaning of another on the wire.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(into = "u64", try_from = "u64")]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// Every code, for tests and tables.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The `CKR_*` value of this code.
            pub const fn ckr(self) -> u64 {
                match self {
                    $(ErrorCode::$name => cryptoki_sys::$ckr as u64,)*
                }
            }

            /// The code for a `CKR_*` value, if it is one the protocol carries.
            pub const fn from_ckr(value: u64) -> Option<ErrorCode> {
                $(if value == cryptoki_sys::$ckr as u64 { return Some(ErrorCode::$name); })*
                None
            }

            /// The spec's name, for log lines.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($ckr),)*
                }
            }
        }
    };
}

error_codes! {
    GeneralError = CKR_GENERAL_ERROR,
    ArgumentsBad = CKR_ARGUMENTS_BAD,
    /// Used for "the node is sealed" and other node-side faults the caller cannot fix.
    DeviceError = CKR_DEVICE_ERROR,
    DeviceMemory = CKR_DEVICE_MEMORY,
    DeviceRemoved = CKR_DEVICE_REMOVED,
    FunctionNotSupported = CKR_FUNCTION_NOT_SUPPORTED,
    FunctionFailed = CKR_FUNCTION_FAILED,
    AttributeReadOnly = CKR_ATTRIBUTE_READ_ONLY,
    AttributeSensitive = CKR_ATTRIBUTE_SENSITIVE,
    AttributeTypeInvalid = CKR_ATTRIBUTE_TYPE_INVALID,
    AttributeValueInvalid = CKR_ATTRIBUTE_VALUE_INVALID,
    ActionProhibited = CKR_ACTION_PROHIBITED,
    DataInvalid = CKR_DATA_INVALID,
    DataLenRange = CKR_DATA_LEN_RANGE,
    EncryptedDataInvalid = CKR_ENCRYPTED_DATA_INVALID,
    EncryptedDataLenRange = CKR_ENCRYPTED_DATA_LEN_RANGE,
    KeyHandleInvalid = CKR_KEY_HANDLE_INVALID,
    KeySizeRange = CKR_KEY_SIZE_RANGE,
    KeyTypeInconsistent = CKR_KEY_TYPE_INCONSISTENT,
    KeyFunctionNotPermitted = CKR_KEY_FUNCTION_NOT_PERMITTED,
    KeyNotWrappable = CKR_KEY_NOT_WRAPPABLE,
    KeyUnextractable = CKR_KEY_UNEXTRACTABLE,
    MechanismInvalid = CKR_MECHANISM_INVALID,
    MechanismParamInvalid = CKR_MECHANISM_PARAM_INVALID,
    ObjectHandleInvalid = CKR_OBJECT_HANDLE_INVALID,
    OperationActive = CKR_OPERATION_ACTIVE,
    OperationNotInitialized = CKR_OPERATION_NOT_INITIALIZED,
    PinIncorrect = CKR_PIN_INCORRECT,
    PinInvalid = CKR_PIN_INVALID,
    PinLenRange = CKR_PIN_LEN_RANGE,
    PinLocked = CKR_PIN_LOCKED,
    SessionHandleInvalid = CKR_SESSION_HANDLE_INVALID,
    SessionReadOnly = CKR_SESSION_READ_ONLY,
    SignatureInvalid = CKR_SIGNATURE_INVALID,
    SignatureLenRange = CKR_SIGNATURE_LEN_RANGE,
    TemplateIncomplete = CKR_TEMPLATE_INCOMPLETE,
    TemplateInconsistent = CKR_TEMPLATE_INCONSISTENT,
    TokenWriteProtected = CKR_TOKEN_WRITE_PROTECTED,
    UserAlreadyLoggedIn = CKR_USER_ALREADY_LOGGED_IN,
    UserNotLoggedIn = CKR_USER_NOT_LOGGED_IN,
    UserPinNotInitialized = CKR_USER_PIN_NOT_INITIALIZED,
    UserTypeInvalid = CKR_USER_TYPE_INVALID,
    UserAnotherAlreadyLoggedIn = CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CurveNotSupported = CKR_CURVE_NOT_SUPPORTED,
    DomainParamsInvalid = CKR_DOMAIN_PARAMS_INVALID,
    BufferTooSmall = CKR_BUFFER_TOO_SMALL,
    RandomSeedNotSupported = CKR_RANDOM_SEED_NOT_SUPPORTED,
    WrappedKeyInvalid = CKR_WRAPPED_KEY_INVALID,
    WrappingKeyHandleInvalid = CKR_WRAPPING_KEY_HANDLE_INVALID,
    UnwrappingKeyHandleInvalid = CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    KeyIndigestible = CKR_KEY_INDIGESTIBLE,
    WrappedKeyLenRange = CKR_WRAPPED_KEY_LEN_RANGE,
    SessionReadOnlyExists = CKR_SESSION_READ_ONLY_EXISTS,
}

impl From<ErrorCode> for u64 {
    fn from(code: ErrorCode) -> u64 {
        code.ckr()
    }
}

impl TryFrom<u64> for ErrorCode {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        ErrorCode::from_ckr(value).ok_or_else(|| format!("unknown error code {value:#x}"))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error answered by the daemon: the code the application sees and a message for logs.
///
/// The message never carries secret material or crypto-oracle detail (which padding byte was
/// wrong); it names the attribute, handle or condition so an operator can act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What the PKCS#11 caller gets.
    pub code: ErrorCode,
    /// Why, for the module's log.
    pub message: String,
    /// The node cannot serve anything right now (sealed, not yet joined, no quorum, a
    /// failed store), so another node may: the module fails over instead of reporting it.
    pub unavailable: bool,
}

impl WireError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            unavailable: false,
        }
    }

    /// A `CKR_DEVICE_ERROR` that says this node cannot serve now (another node may).
    pub fn unavailable(message: impl Into<String>) -> Self {
        WireError {
            unavailable: true,
            ..WireError::new(ErrorCode::DeviceError, message)
        }
    }

    /// The answer of a sealed node to anything but status and unseal.
    pub fn sealed() -> Self {
        WireError::unavailable("the node is sealed: run `hsmctl unseal` first")
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.ckr()), "{code} maps to a CKR value twice");
            assert_eq!(ErrorCode::from_ckr(code.ckr()), Some(*code));
            let bytes = postcard::to_stdvec(code).unwrap();
            let back: ErrorCode = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, *code);
        }
        assert_eq!(ErrorCode::from_ckr(0xdead_beef), None);
        assert_eq!(ErrorCode::BufferTooSmall.ckr(), 0x150);
    }
}
