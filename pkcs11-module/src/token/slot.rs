//! General information, the one slot, the token and its mechanisms. No round trips: all of
//! it is known locally.

use super::Token;
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::ErrorCode;
use hsm_proto::mechlist;

/// `CK_UNAVAILABLE_INFORMATION` (`~0UL`; the bindings do not define it).
pub const UNAVAILABLE: ck::CK_ULONG = !0;

/// The only slot.
pub const SLOT_ID: ck::CK_SLOT_ID = 0;

const MANUFACTURER: &str = "hsm-cluster project";
const LIBRARY_DESCRIPTION: &str = "hsm-cluster PKCS#11 module";
const SLOT_DESCRIPTION: &str = "hsm-cluster network HSM";
const MODEL: &str = "hsm-cluster";
/// The label and serial number shown while no node can be asked for the cluster's identity.
const UNKNOWN_LABEL: &str = "hsm-cluster";
const UNKNOWN_SERIAL: &str = "0000000000000000";

/// Fills a fixed-size PKCS#11 text field: truncated at a character boundary, padded with
/// spaces, not NUL-terminated (the spec's rule for these fields).
pub fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out
}

fn library_version() -> ck::CK_VERSION {
    ck::CK_VERSION {
        major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
        minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
    }
}

/// Checks the slot id.
///
/// # Errors
/// `SlotIdInvalid` for anything but slot 0.
pub fn check_slot(slot: ck::CK_SLOT_ID) -> Result<()> {
    if slot == SLOT_ID {
        Ok(())
    } else {
        Err(Error::SlotIdInvalid)
    }
}

impl Token {
    /// `C_GetInfo`.
    pub fn info(&self) -> ck::CK_INFO {
        ck::CK_INFO {
            cryptokiVersion: ck::CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: padded(MANUFACTURER),
            flags: 0,
            libraryDescription: padded(LIBRARY_DESCRIPTION),
            libraryVersion: library_version(),
        }
    }

    /// `C_GetSlotList`: the slot ids (token present or not, ours is always present).
    pub fn slots(&self) -> &'static [ck::CK_SLOT_ID] {
        &[SLOT_ID]
    }

    /// `C_GetSlotInfo`.
    ///
    /// # Errors
    /// `SlotIdInvalid`.
    pub fn slot_info(&self, slot: ck::CK_SLOT_ID) -> Result<ck::CK_SLOT_INFO> {
        check_slot(slot)?;
        Ok(ck::CK_SLOT_INFO {
            slotDescription: padded(SLOT_DESCRIPTION),
            manufacturerID: padded(MANUFACTURER),
            flags: ck::CKF_TOKEN_PRESENT | ck::CKF_HW_SLOT,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
        })
    }

    /// The cluster's name and serial number (the first 16 hex digits of its id), so that two
    /// clusters never look like the same token. Asked of a node once; while none answers,
    /// placeholders are shown (and asked again next time).
    fn cluster_identity(&self) -> (String, String) {
        if let Some(known) = self.identity.get() {
            return known.clone();
        }
        match self.client().read(&hsm_proto::Request::Status) {
            Ok(hsm_proto::Response::Status(status)) => match status.cluster_id {
                Some(id) => {
                    let serial: String = id.chars().take(16).collect();
                    self.identity
                        .get_or_init(|| (status.cluster, serial))
                        .clone()
                }
                None => (status.cluster, UNKNOWN_SERIAL.to_owned()),
            },
            _ => (UNKNOWN_LABEL.to_owned(), UNKNOWN_SERIAL.to_owned()),
        }
    }

    /// `C_GetTokenInfo`.
    ///
    /// # Errors
    /// `SlotIdInvalid`.
    pub fn token_info(&self, slot: ck::CK_SLOT_ID) -> Result<ck::CK_TOKEN_INFO> {
        check_slot(slot)?;
        let (name, serial) = self.cluster_identity();
        let label = self.label.clone().unwrap_or(name);
        Ok(ck::CK_TOKEN_INFO {
            label: padded(&label),
            manufacturerID: padded(MANUFACTURER),
            model: padded(MODEL),
            serialNumber: padded(&serial),
            flags: ck::CKF_RNG
                | ck::CKF_LOGIN_REQUIRED
                | ck::CKF_USER_PIN_INITIALIZED
                | ck::CKF_TOKEN_INITIALIZED,
            ulMaxSessionCount: ck::CK_EFFECTIVELY_INFINITE,
            ulSessionCount: UNAVAILABLE,
            ulMaxRwSessionCount: ck::CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: UNAVAILABLE,
            // "name:password": room for both.
            ulMaxPinLen: 255,
            ulMinPinLen: 1,
            ulTotalPublicMemory: UNAVAILABLE,
            ulFreePublicMemory: UNAVAILABLE,
            ulTotalPrivateMemory: UNAVAILABLE,
            ulFreePrivateMemory: UNAVAILABLE,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
            // Only meaningful with CKF_CLOCK_ON_TOKEN, which we do not set.
            utcTime: [b' '; 16],
        })
    }

    /// `C_GetMechanismList`: every mechanism the cluster serves.
    ///
    /// # Errors
    /// `SlotIdInvalid`.
    pub fn mechanisms(
        &self,
        slot: ck::CK_SLOT_ID,
    ) -> Result<impl ExactSizeIterator<Item = ck::CK_MECHANISM_TYPE>> {
        check_slot(slot)?;
        Ok(mechlist::MECHANISMS
            .iter()
            .map(|m| m.kind as ck::CK_MECHANISM_TYPE))
    }

    /// `C_GetMechanismInfo`.
    ///
    /// # Errors
    /// `SlotIdInvalid`; `MechanismInvalid` for a mechanism we do not serve.
    pub fn mechanism_info(
        &self,
        slot: ck::CK_SLOT_ID,
        kind: ck::CK_MECHANISM_TYPE,
    ) -> Result<ck::CK_MECHANISM_INFO> {
        check_slot(slot)?;
        let info = mechlist::info(kind as u64).ok_or(ErrorCode::MechanismInvalid)?;
        Ok(ck::CK_MECHANISM_INFO {
            ulMinKeySize: info.min_key_size as ck::CK_ULONG,
            ulMaxKeySize: info.max_key_size as ck::CK_ULONG,
            flags: info.flags as ck::CK_FLAGS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_truncates_at_char_boundaries() {
        assert_eq!(&padded::<4>("ab"), b"ab  ");
        assert_eq!(&padded::<4>("abcdef"), b"abcd");
        // "é" is two bytes; it must not be cut in half.
        assert_eq!(&padded::<4>("abcé"), b"abc ");
    }
}
