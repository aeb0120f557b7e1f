//! The PKCS#11 columns: any module loaded through `cryptoki`. Keys are token objects made
//! during setup (unmeasured); each thread opens its own session; the application logs in once.

use crate::error::{BenchError, OpError};
use crate::limit::iv;
use crate::measure::{Heartbeat, Runner, RunnerFactory};
use crate::ops::Op;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// DER `OBJECT IDENTIFIER` of prime256v1.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER `OBJECT IDENTIFIER` of secp384r1.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER `OBJECT IDENTIFIER` id-Ed25519 (RFC 8410), the form PKCS#11 3.0 recommends.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER `PrintableString` "edwards25519", the form older modules (and pkcs11-tool) use.
const ED25519_NAME: &[u8] = &[
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// Opens logged-in sessions on the benchmark's slot; cheap to clone into threads.
#[derive(Clone)]
struct Opener {
    ctx: Pkcs11,
    slot: Slot,
    pin: Arc<AuthPin>,
}

impl Opener {
    /// A read-write session in the logged-in state. PKCS#11 login is per application, so a
    /// new session normally is logged in already; log in only if the module says it is not.
    fn open(&self) -> Result<Session, OpError> {
        let session = self.ctx.open_rw_session(self.slot)?;
        let logged_in = session.get_session_info().is_ok_and(|i| {
            matches!(
                i.session_state(),
                SessionState::RwUser | SessionState::RoUser
            )
        });
        if !logged_in {
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(session)
    }
}

/// A loaded, initialized module with the benchmark user logged in.
pub struct Module {
    opener: Opener,
    /// Keeps the application logged in for the whole run (closing the last session would log
    /// it out) and serves the setup calls.
    setup: Session,
    mechanisms: Vec<MechanismType>,
    description: String,
    /// Prefix of every label this run creates, unique per run.
    tag: String,
    /// The `C_FindObjects` population made so far.
    filled: Vec<ObjectHandle>,
    /// A failed fill makes every later `C_FindObjects` row fail the same way.
    fill_error: Option<OpError>,
}

/// What an operation needs at run time, and what to destroy afterwards.
pub struct Prepared {
    /// Builds the runner of each thread.
    pub factory: Box<RunnerFactory<'static>>,
    objects: Vec<ObjectHandle>,
}

fn module_err(what: &str) -> impl Fn(CkError) -> BenchError + '_ {
    move |e| BenchError::Module(format!("{what}: {}", OpError::from(e)))
}

impl Module {
    /// Loads `path`, initializes it (OS locking), picks the slot whose token has
    /// `token_label` (or the first initialized token) and logs the user in with `pin`.
    ///
    /// # Errors
    /// Any of those steps failing.
    pub fn open(
        path: &Path,
        pin: AuthPin,
        token_label: Option<&str>,
    ) -> Result<Module, BenchError> {
        let ctx = Pkcs11::new(path)
            .map_err(|e| BenchError::Module(format!("cannot load {}: {e}", path.display())))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(module_err("C_Initialize"))?;
        let mut chosen = None;
        for slot in ctx
            .get_slots_with_initialized_token()
            .map_err(module_err("C_GetSlotList"))?
        {
            let info = ctx
                .get_token_info(slot)
                .map_err(module_err("C_GetTokenInfo"))?;
            if token_label.is_none_or(|l| info.label().trim_end() == l) {
                chosen = Some((slot, info.label().trim_end().to_string()));
                break;
            }
        }
        let (slot, token) = chosen.ok_or_else(|| {
            BenchError::Module(match token_label {
                Some(l) => format!("no token labelled {l:?} in {}", path.display()),
                None => format!("no initialized token in {}", path.display()),
            })
        })?;
        let lib = ctx.get_library_info().map_err(module_err("C_GetInfo"))?;
        let description = format!(
            "{}: {} {}.{}, token {token:?}",
            lib.manufacturer_id().trim_end(),
            lib.library_description().trim_end(),
            lib.library_version().major(),
            lib.library_version().minor(),
        );
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(module_err("C_GetMechanismList"))?;
        let opener = Opener {
            ctx,
            slot,
            pin: Arc::new(pin),
        };
        let setup = opener
            .open()
            .map_err(|e| BenchError::Module(format!("open a session and log in: {e}")))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or_default();
        Ok(Module {
            opener,
            setup,
            mechanisms,
            description,
            tag: format!("hsm-bench-{}-{nanos}", std::process::id()),
            filled: Vec::new(),
            fill_error: None,
        })
    }

    /// Library, version, manufacturer and token label.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn require(&self, needed: &[MechanismType]) -> Result<(), OpError> {
        match needed.iter().find(|m| !self.mechanisms.contains(m)) {
            Some(m) => Err(OpError::unsupported(format!("{m} not offered"))),
            None => Ok(()),
        }
    }

    /// Checks a key size (bits) against `C_GetMechanismInfo`, when the module answers it.
    fn require_size(&self, mechanism: MechanismType, bits: usize) -> Result<(), OpError> {
        let Ok(info) = self
            .opener
            .ctx
            .get_mechanism_info(self.opener.slot, mechanism)
        else {
            return Ok(());
        };
        let (min, max) = (info.min_key_size(), info.max_key_size());
        if max >= min && max > 0 && (bits < min || bits > max) {
            return Err(OpError::unsupported(format!(
                "{mechanism} offers {min}-{max}-bit keys, not {bits}"
            )));
        }
        Ok(())
    }

    fn label(&self, what: &str) -> Vec<u8> {
        format!("{}-{what}", self.tag).into_bytes()
    }

    /// Makes what `op` needs (unmeasured) and the per-thread runner factory.
    ///
    /// # Errors
    /// `unsupported` when the module does not offer the mechanism or key size, `failed` when
    /// setup breaks.
    pub fn prepare(
        &mut self,
        op: Op,
        fill_threads: usize,
        heartbeat: &Heartbeat,
    ) -> Result<Prepared, OpError> {
        let opener = self.opener.clone();
        let data: Vec<u8> = (0u8..32).collect();
        match op {
            Op::Rsa2048Sign | Op::Rsa2048Verify | Op::Rsa3072Sign => {
                let bits = if op == Op::Rsa3072Sign { 3072 } else { 2048 };
                self.require(&[
                    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                    MechanismType::SHA256_RSA_PKCS,
                ])?;
                self.require_size(MechanismType::SHA256_RSA_PKCS, bits)?;
                let (public, private) = self.generate_pair(&KeyGen::Rsa(bits as u64), &op.id())?;
                let objects = vec![public, private];
                if op == Op::Rsa2048Verify {
                    let sig = self.setup.sign(&Mechanism::Sha256RsaPkcs, private, &data)?;
                    Ok(verifier(
                        opener,
                        Sig::Sha256RsaPkcs,
                        public,
                        data,
                        sig,
                        objects,
                    ))
                } else {
                    Ok(signer(opener, Sig::Sha256RsaPkcs, private, data, objects))
                }
            }
            Op::P256Sign | Op::P256Verify | Op::P384Sign => {
                let (params, bits, len) = if op == Op::P384Sign {
                    (P384_PARAMS, 384, 48)
                } else {
                    (P256_PARAMS, 256, 32)
                };
                self.require(&[MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA])?;
                self.require_size(MechanismType::ECDSA, bits)?;
                let (public, private) =
                    self.generate_pair(&KeyGen::Ec(params.to_vec()), &op.id())?;
                let objects = vec![public, private];
                let digest: Vec<u8> = (0u8..len).collect();
                if op == Op::P256Verify {
                    let sig = self.setup.sign(&Mechanism::Ecdsa, private, &digest)?;
                    Ok(verifier(opener, Sig::Ecdsa, public, digest, sig, objects))
                } else {
                    Ok(signer(opener, Sig::Ecdsa, private, digest, objects))
                }
            }
            Op::Ed25519Sign => {
                self.require(&[
                    MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                    MechanismType::EDDSA,
                ])?;
                let (public, private) =
                    match self.generate_pair(&KeyGen::Ed25519(ED25519_OID.to_vec()), &op.id()) {
                        Ok(pair) => pair,
                        Err(first) if first.unsupported => self
                            .generate_pair(&KeyGen::Ed25519(ED25519_NAME.to_vec()), &op.id())
                            .map_err(|_| first)?,
                        Err(e) => return Err(e),
                    };
                Ok(signer(
                    opener,
                    Sig::Eddsa,
                    private,
                    data,
                    vec![public, private],
                ))
            }
            Op::AesGcm1K | Op::AesGcm1M => {
                self.require(&[MechanismType::AES_KEY_GEN, MechanismType::AES_GCM])?;
                let key = self
                    .setup
                    .generate_key(&Mechanism::AesKeyGen, &aes_template(self.label(&op.id())))?;
                let len = if op == Op::AesGcm1K { 1 << 10 } else { 1 << 20 };
                let plaintext = Arc::new(vec![0x5a_u8; len]);
                Ok(Prepared {
                    factory: Box::new(move |thread| {
                        Ok(Box::new(GcmRunner {
                            session: opener.open()?,
                            key,
                            plaintext: Arc::clone(&plaintext),
                            thread: u32::try_from(thread).unwrap_or(u32::MAX),
                            counter: 0,
                        }) as Box<dyn Runner>)
                    }),
                    objects: vec![key],
                })
            }
            Op::Hmac1K => {
                self.require(&[MechanismType::SHA256_HMAC])?;
                let key = self.hmac_key(&op.id())?;
                Ok(signer(
                    opener,
                    Sig::Sha256Hmac,
                    key,
                    vec![0xa5; 1 << 10],
                    vec![key],
                ))
            }
            Op::Rsa2048Gen | Op::P256Gen | Op::AesCreate => {
                let kind = match op {
                    Op::Rsa2048Gen => {
                        self.require(&[MechanismType::RSA_PKCS_KEY_PAIR_GEN])?;
                        self.require_size(MechanismType::RSA_PKCS_KEY_PAIR_GEN, 2048)?;
                        KeyGen::Rsa(2048)
                    }
                    Op::P256Gen => {
                        self.require(&[MechanismType::ECC_KEY_PAIR_GEN])?;
                        self.require_size(MechanismType::ECC_KEY_PAIR_GEN, 256)?;
                        KeyGen::Ec(P256_PARAMS.to_vec())
                    }
                    _ => {
                        self.require(&[MechanismType::AES_KEY_GEN])?;
                        KeyGen::Aes
                    }
                };
                let label = self.label(&op.id());
                Ok(Prepared {
                    factory: Box::new(move |_| {
                        Ok(Box::new(GenRunner {
                            session: opener.open()?,
                            kind: kind.clone(),
                            label: label.clone(),
                            created: Vec::new(),
                        }) as Box<dyn Runner>)
                    }),
                    objects: Vec::new(),
                })
            }
            Op::Find(count) => {
                self.require(&[MechanismType::AES_KEY_GEN])?;
                self.fill(count as usize, fill_threads, heartbeat)?;
                let tag = self.tag.clone();
                Ok(Prepared {
                    factory: Box::new(move |thread| {
                        Ok(Box::new(FindRunner {
                            session: opener.open()?,
                            tag: tag.clone(),
                            count: u64::from(count),
                            state: 0x9e37_79b9_7f4a_7c15 ^ (thread as u64 + 1),
                        }) as Box<dyn Runner>)
                    }),
                    objects: Vec::new(),
                })
            }
        }
    }

    /// Destroys what [`Module::prepare`] made for one operation.
    ///
    /// # Errors
    /// The first `C_DestroyObject` failure (the others are still attempted).
    pub fn release(&self, prepared: Prepared) -> Result<(), OpError> {
        let mut first = None;
        for object in prepared.objects {
            if let Err(e) = self.setup.destroy_object(object) {
                first.get_or_insert(OpError::from(e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Destroys the `C_FindObjects` population, `threads` sessions in parallel.
    ///
    /// # Errors
    /// The first `C_DestroyObject` failure.
    pub fn cleanup(&mut self, threads: usize, heartbeat: &Heartbeat) -> Result<(), OpError> {
        let objects = std::mem::take(&mut self.filled);
        if objects.is_empty() {
            return Ok(());
        }
        eprintln!("  cleanup: destroying {} objects", objects.len());
        let chunk = objects.len().div_ceil(threads.max(1));
        let first: Mutex<Option<OpError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for part in objects.chunks(chunk) {
                let (opener, first) = (&self.opener, &first);
                scope.spawn(move || {
                    let result = opener.open().and_then(|s| {
                        for &o in part {
                            s.destroy_object(o)?;
                            heartbeat.beat();
                        }
                        Ok(())
                    });
                    if let (Err(e), Ok(mut f)) = (result, first.lock()) {
                        f.get_or_insert(e);
                    }
                });
            }
        });
        match first.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn generate_pair(
        &self,
        kind: &KeyGen,
        what: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), OpError> {
        kind.generate_pair(&self.setup, self.label(what))
    }

    /// A 32-byte HMAC key: generated when the module offers `CKM_GENERIC_SECRET_KEY_GEN`,
    /// imported with `C_CreateObject` otherwise.
    fn hmac_key(&self, what: &str) -> Result<ObjectHandle, OpError> {
        let label = self.label(what);
        let mut template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Label(label),
        ];
        if self
            .mechanisms
            .contains(&MechanismType::GENERIC_SECRET_KEY_GEN)
        {
            template.push(Attribute::ValueLen(32u64.into()));
            return Ok(self
                .setup
                .generate_key(&Mechanism::GenericSecretKeyGen, &template)?);
        }
        template.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value((0u8..32).collect()),
        ]);
        self.setup.create_object(&template).map_err(|e| {
            let mut e = OpError::from(e);
            e.code = format!("HMAC key import: {}", e.code);
            e
        })
    }

    /// Creates `count` more labelled AES-256 token keys from `threads` sessions and keeps them
    /// (`hsm-bench fill`, the scale test).
    ///
    /// # Errors
    /// The first failure; the keys made until then stay.
    pub fn fill_keys(
        &mut self,
        count: usize,
        threads: usize,
        heartbeat: &Heartbeat,
    ) -> Result<(), OpError> {
        self.fill(self.filled.len() + count, threads, heartbeat)
    }

    /// How many keys [`Module::fill_keys`] and the `C_FindObjects` rows have made.
    pub fn filled(&self) -> usize {
        self.filled.len()
    }

    /// Grows the population of labelled AES token keys to `count` (setup, unmeasured).
    fn fill(&mut self, count: usize, threads: usize, heartbeat: &Heartbeat) -> Result<(), OpError> {
        if let Some(e) = &self.fill_error {
            return Err(e.clone());
        }
        let start = self.filled.len();
        if count <= start {
            return Ok(());
        }
        eprintln!(
            "  setup: creating {} labelled AES token keys",
            count - start
        );
        let begun = std::time::Instant::now();
        let next = AtomicUsize::new(start);
        let done = AtomicUsize::new(start);
        let made: Mutex<Vec<ObjectHandle>> = Mutex::new(Vec::with_capacity(count - start));
        let first: Mutex<Option<OpError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                let (opener, tag) = (&self.opener, &self.tag);
                let (next, done, made, first) = (&next, &done, &made, &first);
                scope.spawn(move || {
                    let result = opener.open().and_then(|s| {
                        let mut mine = Vec::new();
                        let outcome = loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                break Ok(());
                            }
                            let label = format!("{tag}-find-{i}").into_bytes();
                            match s.generate_key(&Mechanism::AesKeyGen, &aes_template(label)) {
                                Ok(h) => mine.push(h),
                                Err(e) => break Err(OpError::from(e)),
                            }
                            heartbeat.beat();
                            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if d % (count / 10).max(1000) == 0 {
                                eprintln!("    {d}/{count}");
                            }
                        };
                        if let Ok(mut m) = made.lock() {
                            m.extend(mine);
                        }
                        outcome
                    });
                    if let (Err(e), Ok(mut f)) = (result, first.lock()) {
                        f.get_or_insert(e);
                        // Stop the other threads early.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                    }
                });
            }
        });
        self.filled.extend(made.into_inner().unwrap_or_default());
        if let Ok(Some(e)) = first.into_inner() {
            let e = OpError::failed(format!("setup (creating objects): {e}"));
            self.fill_error = Some(e.clone());
            return Err(e);
        }
        eprintln!(
            "  setup: {} objects in {:.1} s",
            self.filled.len(),
            begun.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

fn aes_template(label: Vec<u8>) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::ValueLen(32u64.into()),
        Attribute::Label(label),
    ]
}

/// A key to generate.
#[derive(Clone, Debug)]
enum KeyGen {
    /// RSA with this many bits, e = 65537.
    Rsa(u64),
    /// EC with these `CKA_EC_PARAMS`.
    Ec(Vec<u8>),
    /// Ed25519 with these `CKA_EC_PARAMS`.
    Ed25519(Vec<u8>),
    /// AES-256.
    Aes,
}

impl KeyGen {
    fn generate_pair(
        &self,
        session: &Session,
        label: Vec<u8>,
    ) -> Result<(ObjectHandle, ObjectHandle), OpError> {
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(label.clone()),
        ];
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(label),
        ];
        let mechanism = match self {
            KeyGen::Rsa(bits) => {
                public.push(Attribute::ModulusBits((*bits).into()));
                public.push(Attribute::PublicExponent(vec![1, 0, 1]));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeyGen::Ec(params) => {
                public.push(Attribute::EcParams(params.clone()));
                Mechanism::EccKeyPairGen
            }
            KeyGen::Ed25519(params) => {
                public.push(Attribute::EcParams(params.clone()));
                Mechanism::EccEdwardsKeyPairGen
            }
            KeyGen::Aes => return Err(OpError::failed("AES is not a key pair")),
        };
        Ok(session.generate_key_pair(&mechanism, &public, &private)?)
    }

    /// Generates one key (pair) and returns every object made.
    fn generate(&self, session: &Session, label: &[u8]) -> Result<Vec<ObjectHandle>, OpError> {
        match self {
            KeyGen::Aes => {
                Ok(vec![session.generate_key(
                    &Mechanism::AesKeyGen,
                    &aes_template(label.to_vec()),
                )?])
            }
            _ => {
                let (public, private) = self.generate_pair(session, label.to_vec())?;
                Ok(vec![public, private])
            }
        }
    }
}

/// A sign or MAC mechanism without parameters that outlive the call.
#[derive(Clone, Copy, Debug)]
enum Sig {
    Sha256RsaPkcs,
    Ecdsa,
    Eddsa,
    Sha256Hmac,
}

impl Sig {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            Sig::Sha256RsaPkcs => Mechanism::Sha256RsaPkcs,
            Sig::Ecdsa => Mechanism::Ecdsa,
            Sig::Eddsa => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            Sig::Sha256Hmac => Mechanism::Sha256Hmac,
        }
    }
}

fn signer(
    opener: Opener,
    sig: Sig,
    key: ObjectHandle,
    data: Vec<u8>,
    objects: Vec<ObjectHandle>,
) -> Prepared {
    let data = Arc::new(data);
    Prepared {
        factory: Box::new(move |_| {
            Ok(Box::new(SignRunner {
                session: opener.open()?,
                sig,
                key,
                data: Arc::clone(&data),
            }) as Box<dyn Runner>)
        }),
        objects,
    }
}

fn verifier(
    opener: Opener,
    sig: Sig,
    key: ObjectHandle,
    data: Vec<u8>,
    signature: Vec<u8>,
    objects: Vec<ObjectHandle>,
) -> Prepared {
    let (data, signature) = (Arc::new(data), Arc::new(signature));
    Prepared {
        factory: Box::new(move |_| {
            Ok(Box::new(VerifyRunner {
                session: opener.open()?,
                sig,
                key,
                data: Arc::clone(&data),
                signature: Arc::clone(&signature),
            }) as Box<dyn Runner>)
        }),
        objects,
    }
}

struct SignRunner {
    session: Session,
    sig: Sig,
    key: ObjectHandle,
    data: Arc<Vec<u8>>,
}

impl Runner for SignRunner {
    fn run(&mut self) -> Result<(), OpError> {
        self.session
            .sign(&self.sig.mechanism(), self.key, &self.data)
            .map(drop)
            .map_err(Into::into)
    }
}

struct VerifyRunner {
    session: Session,
    sig: Sig,
    key: ObjectHandle,
    data: Arc<Vec<u8>>,
    signature: Arc<Vec<u8>>,
}

impl Runner for VerifyRunner {
    fn run(&mut self) -> Result<(), OpError> {
        self.session
            .verify(&self.sig.mechanism(), self.key, &self.data, &self.signature)
            .map_err(Into::into)
    }
}

struct GcmRunner {
    session: Session,
    key: ObjectHandle,
    plaintext: Arc<Vec<u8>>,
    thread: u32,
    counter: u64,
}

impl Runner for GcmRunner {
    fn run(&mut self) -> Result<(), OpError> {
        self.counter += 1;
        let mut iv = iv(self.thread, self.counter);
        let params = GcmParams::new(&mut iv, &[], 128u64.into())?;
        self.session
            .encrypt(&Mechanism::AesGcm(params), self.key, &self.plaintext)
            .map(drop)
            .map_err(Into::into)
    }
}

struct GenRunner {
    session: Session,
    kind: KeyGen,
    label: Vec<u8>,
    created: Vec<ObjectHandle>,
}

impl Runner for GenRunner {
    fn run(&mut self) -> Result<(), OpError> {
        let made = self.kind.generate(&self.session, &self.label)?;
        self.created.extend(made);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OpError> {
        // Keep the token as it was, so later rows (C_FindObjects) see only their own objects.
        let mut first = None;
        for object in self.created.drain(..) {
            if let Err(e) = self.session.destroy_object(object) {
                first.get_or_insert(OpError::from(e));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

struct FindRunner {
    session: Session,
    tag: String,
    count: u64,
    state: u64,
}

impl Runner for FindRunner {
    fn run(&mut self) -> Result<(), OpError> {
        // xorshift64: a different object each time, no allocation-heavy RNG on the hot path.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let i = self.state % self.count;
        let label = format!("{}-find-{i}", self.tag).into_bytes();
        let found = self.session.find_objects(&[Attribute::Label(label)])?;
        if found.len() == 1 {
            Ok(())
        } else {
            Err(OpError::failed(format!(
                "C_FindObjects found {} objects, expected 1",
                found.len()
            )))
        }
    }
}
