//! Mechanisms with typed parameters, parsed from `CK_MECHANISM` at the C boundary.

use serde::{Deserialize, Serialize};

/// A mechanism: its `CKM_*` number and parameters already parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// `CKM_*` value.
    pub kind: u64,
    /// The parameters the mechanism takes.
    pub params: MechanismParams,
}

impl Mechanism {
    /// A mechanism that takes no parameter.
    pub fn plain(kind: u64) -> Self {
        Mechanism {
            kind,
            params: MechanismParams::None,
        }
    }
}

/// Parameters of a mechanism, one variant per parameter structure of the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MechanismParams {
    /// No parameter (`pParameter == NULL`).
    None,
    /// `CK_GCM_PARAMS`.
    Gcm {
        /// The IV (12 bytes is the only length we accept today).
        #[serde(with = "crate::bytes")]
        iv: Vec<u8>,
        /// Additional authenticated data.
        #[serde(with = "crate::bytes")]
        aad: Vec<u8>,
        /// Tag length in bits.
        tag_bits: u64,
    },
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss {
        /// `CKM_SHA*` of the message digest.
        hash: u64,
        /// `CKG_MGF1_SHA*`.
        mgf: u64,
        /// Salt length in bytes.
        salt_len: u64,
    },
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep {
        /// `CKM_SHA*` of the label hash.
        hash: u64,
        /// `CKG_MGF1_SHA*`.
        mgf: u64,
        /// The label (`CKZ_DATA_SPECIFIED` source), empty if none.
        #[serde(with = "crate::bytes")]
        label: Vec<u8>,
    },
    /// A bare byte string parameter (an IV for CBC, say).
    Bytes(#[serde(with = "crate::bytes")] Vec<u8>),
    /// `CK_GCM_PARAMS` whose IV the token generates (the caller passed an all-zero IV, the
    /// CloudHSM convention); the generated IV comes back in the response and the module writes
    /// it into the caller's `pIv`.
    GcmGeneratedIv {
        /// IV length wanted (12).
        iv_len: u64,
        /// Additional authenticated data.
        #[serde(with = "crate::bytes")]
        aad: Vec<u8>,
        /// Tag length in bits.
        tag_bits: u64,
    },
    /// `CK_AES_CTR_PARAMS`.
    AesCtr {
        /// Bits of the counter block that increment.
        counter_bits: u64,
        /// Initial counter block (16 bytes).
        #[serde(with = "crate::bytes")]
        block: Vec<u8>,
    },
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1Derive {
        /// `CKD_NULL` or `CKD_SHA*_KDF`.
        kdf: u64,
        /// KDF shared data (empty for `CKD_NULL`).
        #[serde(with = "crate::bytes")]
        shared_data: Vec<u8>,
        /// The other party's public point (raw or DER OCTET STRING).
        #[serde(with = "crate::bytes")]
        public_data: Vec<u8>,
    },
    /// `CK_EDDSA_PARAMS` (Ed25519ph / Ed25519ctx).
    Eddsa {
        /// Pre-hash variant.
        prehash: bool,
        /// Context string.
        #[serde(with = "crate::bytes")]
        context: Vec<u8>,
    },
}
