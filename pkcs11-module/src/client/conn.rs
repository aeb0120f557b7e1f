//! One pipelined TLS connection to one node, driven by the application threads themselves.
//!
//! There is no I/O task: a caller encodes its frame on its own thread, encrypts it under a
//! short lock on the TLS state and writes it to the socket (whoever holds the write side
//! also sends what other callers queued meanwhile, so sixteen callers cost a handful of
//! syscalls). Then it waits for its answer *leader/follower* style: one waiting thread, the
//! leader, reads the socket and hands each response to the thread whose request it answers;
//! when its own answer arrives it returns and promotes another waiting thread to read. At one
//! session the caller writes, blocks in `read` and is woken once by the kernel: two context
//! switches per operation (the node's and ours) instead of four hand-offs between threads.
//!
//! No lock is held across blocking I/O except the write side's own (so a reader never waits
//! for a writer stuck on a full socket). When the connection dies (reset, bad frame, the
//! module closing it), every request in flight fails at once with the reason, so the caller
//! can fail over without waiting for its timeout; a connection idle for a while is checked
//! for a close by the node before a request is sent on it, so that a request is never lost
//! to a connection already known dead.

use crate::error::{Error, Result};
use hsm_proto::frame::{self, FrameError, MAX_FRAME_LEN};
use hsm_proto::{Envelope, Request, RequestId, Response};
use rustls::ClientConnection;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// Buffers that grew beyond this for one large request are shrunk back afterwards.
const KEEP_BUFFER: usize = 256 << 10;

/// How long one blocking read waits before the leader looks at its deadline again.
const READ_TICK: Duration = Duration::from_millis(25);

/// A connection nobody read from for this long is checked for a close before a request is
/// sent on it.
const IDLE_CHECK: Duration = Duration::from_millis(5);

/// Bytes read from the socket per system call.
const READ_CHUNK: usize = 64 << 10;

/// The highest log index any response reflected (read-your-writes): every request carries
/// it, and a node that has not applied it yet waits before serving, so a key created through
/// one node is usable at once through another.
static SEEN_INDEX: AtomicU64 = AtomicU64::new(0);

/// Connection ids, unique in the process (0 is never used).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// Not sent: the connection was already dead. Retrying elsewhere is always harmless.
    NotSent(String),
    /// Sent, and the connection died or the answer did not come in time: the node may or may
    /// not have acted on it.
    Unknown(String),
    /// The request cannot be sent at all (too large, the thread is exiting).
    Local(Error),
}

/// One connection's shared state.
pub struct Connection {
    /// Unique in the process; session objects and multi-part state name it.
    pub id: u64,
    /// `host:port`, for logs.
    pub node: String,
    /// Requests sent and not yet answered (for least-outstanding routing).
    outstanding: AtomicUsize,
    dead: AtomicBool,
    /// The login epoch this connection's node-side login reflects (see `Client`).
    pub epoch: AtomicU64,
    /// Serializes bringing this connection's login up to date.
    pub login_lock: Mutex<()>,
    /// Who waits for which response.
    pending: Mutex<HashMap<u64, Arc<Slot>>>,
    /// The TLS state: held only to encrypt or decrypt, never across I/O.
    tls: Mutex<ClientConnection>,
    /// The write side; its holder sends everything encrypted so far.
    out: Mutex<Outgoing>,
    /// The read side; its holder is the leader.
    incoming: Mutex<Incoming>,
    /// For shutting the socket down (which wakes a leader blocked in `read`).
    socket: TcpStream,
    /// When the last bytes arrived, in nanoseconds since `opened`.
    last_read: AtomicU64,
    /// When it was opened, for the flapping rule.
    pub opened: Instant,
}

struct Outgoing {
    socket: TcpStream,
    /// Encrypted records on their way to the socket.
    buf: Vec<u8>,
}

struct Incoming {
    socket: TcpStream,
    /// Encrypted bytes as read.
    raw: Vec<u8>,
    /// Decrypted bytes not yet decoded into whole frames.
    plain: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("node", &self.node)
            .field("alive", &self.is_alive())
            .field("outstanding", &self.outstanding())
            .finish_non_exhaustive()
    }
}

/// How a leader's turn ended.
enum Lead {
    /// Its own answer (or the connection's death) is in its slot.
    Answered,
    /// Its deadline passed.
    TimedOut,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

impl Connection {
    /// A connection over an established TLS session (after the version handshake).
    /// `write_timeout` bounds one blocking write.
    ///
    /// # Errors
    /// The socket cannot be configured or duplicated.
    pub fn new(
        node: String,
        socket: TcpStream,
        mut tls: ClientConnection,
        write_timeout: Duration,
    ) -> io::Result<Connection> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(READ_TICK))?;
        socket.set_write_timeout(Some(write_timeout.max(Duration::from_millis(100))))?;
        // A whole frame is encrypted at once (frames must not interleave); the frame size
        // limit bounds it.
        tls.set_buffer_limit(None);
        Ok(Connection {
            id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            node,
            outstanding: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            login_lock: Mutex::new(()),
            pending: Mutex::new(HashMap::with_capacity(64)),
            tls: Mutex::new(tls),
            out: Mutex::new(Outgoing {
                socket: socket.try_clone()?,
                buf: Vec::new(),
            }),
            incoming: Mutex::new(Incoming {
                socket: socket.try_clone()?,
                raw: vec![0; READ_CHUNK],
                plain: Vec::new(),
            }),
            socket,
            last_read: AtomicU64::new(0),
            opened: Instant::now(),
        })
    }

    /// Whether requests can still be sent.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
    }

    /// Requests in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Registers a waiter; false if the connection is dead.
    fn register(&self, id: u64, slot: Arc<Slot>) -> bool {
        let mut pending = lock(&self.pending);
        // Checked under the lock `kill` drains with, so no waiter is left behind.
        if !self.is_alive() {
            return false;
        }
        pending.insert(id, slot);
        true
    }

    /// Sends `request` under `id` with the request key `key` and waits (on this thread) for
    /// its response.
    pub fn call(
        &self,
        id: u64,
        key: u128,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let slot = THREAD
            .try_with(|t| t.slot.clone())
            .map_err(|_| Failure::Local(Error::Device("called during thread teardown".into())))?;
        let deadline = Instant::now() + timeout;
        slot.arm(id);
        if !self.register(id, slot.clone()) {
            slot.disarm();
            return Err(Failure::NotSent(format!(
                "connection to {} was lost",
                self.node
            )));
        }
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let result = match self.send(id, key, request) {
            Ok(()) => self.await_answer(id, &slot, deadline, timeout),
            Err(failure) => {
                lock(&self.pending).remove(&id);
                slot.disarm();
                Err(failure)
            }
        };
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// [`Connection::call`] for the module's background task (on the blocking pool, as it
    /// blocks).
    pub async fn call_async(
        self: &Arc<Self>,
        id: u64,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        let conn = self.clone();
        match tokio::task::spawn_blocking(move || conn.call(id, 0, &request, timeout)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Failure::NotSent(w) | Failure::Unknown(w))) => Err(w),
            Ok(Err(Failure::Local(e))) => Err(e.to_string()),
            Err(e) => Err(format!("request task failed: {e}")),
        }
    }

    /// Sends a request nobody waits for (its answer is read and dropped by whoever reads).
    ///
    /// # Errors
    /// The request cannot be encoded, or the connection is dead.
    pub fn enqueue(&self, id: u64, key: u128, request: &Request) -> Result<()> {
        self.send(id, key, request).map_err(|f| match f {
            Failure::Local(e) => e,
            Failure::NotSent(w) | Failure::Unknown(w) => Error::Device(w),
        })
    }

    /// Encodes the frame on the caller's thread and sends it.
    fn send(&self, id: u64, key: u128, request: &Request) -> Result<(), Failure> {
        let envelope = Envelope {
            id: RequestId(id),
            index: SEEN_INDEX.load(Ordering::Relaxed),
            key,
            body: request,
        };
        let sent = THREAD.try_with(|t| {
            let mut scratch = t.scratch.borrow_mut();
            let result = self.encode_send(&envelope, request, &mut scratch);
            wipe(&mut scratch);
            result
        });
        match sent {
            Ok(result) => result,
            // A thread without thread-locals left (teardown): a one-off buffer.
            Err(_) => {
                let mut scratch = Vec::new();
                let result = self.encode_send(&envelope, request, &mut scratch);
                wipe(&mut scratch);
                result
            }
        }
    }

    fn encode_send(
        &self,
        envelope: &Envelope<&Request>,
        request: &Request,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        match frame::encode_into(envelope, scratch) {
            Ok(()) => {}
            Err(FrameError::TooLarge(n)) => {
                tracing::debug!(request = request.name(), "request of {n} bytes too large");
                return Err(Failure::Local(Error::Code(
                    hsm_proto::ErrorCode::DataLenRange,
                )));
            }
            Err(e) => {
                return Err(Failure::Local(Error::Device(format!(
                    "cannot encode request: {e}"
                ))));
            }
        }
        if !self.is_alive() {
            return Err(Failure::NotSent(format!(
                "connection to {} was lost",
                self.node
            )));
        }
        if self.idle() >= IDLE_CHECK
            && let Err(why) = self.check(true)
        {
            self.fail(&why);
            return Err(Failure::NotSent(format!("{}: {why}", self.node)));
        }
        {
            let mut tls = lock(&self.tls);
            if let Err(e) = tls.writer().write_all(scratch) {
                drop(tls);
                let why = format!("cannot send: {e}");
                self.fail(&why);
                return Err(Failure::NotSent(format!("{}: {why}", self.node)));
            }
        }
        if let Err(why) = self.flush() {
            // The request's fate is unknown (part of it may have gone out); the kill fails
            // its waiter with the reason.
            self.fail(&why);
        }
        Ok(())
    }

    /// Time since bytes last arrived.
    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.last_read.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    fn mark_read(&self) {
        let now = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_read.store(now, Ordering::Relaxed);
    }

    /// Looks (without blocking) whether the node closed the connection, absorbing whatever
    /// arrived. Skipped when a leader is reading (it would notice). `wait_for_writer`: wait
    /// for a write in progress to finish, else skip.
    fn check(&self, wait_for_writer: bool) -> Result<(), String> {
        let Some(mut incoming) = try_lock(&self.incoming) else {
            return Ok(());
        };
        let checked = self.check_with(&mut incoming, wait_for_writer);
        drop(incoming);
        // Threads that wanted to read while we held the read side wait for a promotion.
        self.promote();
        checked
    }

    fn check_with(&self, incoming: &mut Incoming, wait_for_writer: bool) -> Result<(), String> {
        let read = {
            // No write may be in progress while the shared socket is non-blocking.
            let out = if wait_for_writer {
                lock(&self.out)
            } else {
                match try_lock(&self.out) {
                    Some(out) => out,
                    None => return Ok(()),
                }
            };
            out.socket
                .set_nonblocking(true)
                .map_err(|e| format!("socket: {e}"))?;
            let read = incoming.socket.read(&mut incoming.raw);
            out.socket
                .set_nonblocking(false)
                .map_err(|e| format!("socket: {e}"))?;
            read
        };
        match read {
            Ok(0) => Err("connection closed by the node".into()),
            Ok(n) => {
                self.mark_read();
                self.absorb(incoming, n, 0).map(|_| ())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    /// Checks an idle connection from the background task: a close by the node is noticed
    /// within a tick even when no application thread uses the connection.
    pub fn check_idle(&self) {
        if self.is_alive()
            && self.outstanding() == 0
            && self.idle() >= IDLE_CHECK
            && let Err(why) = self.check(false)
        {
            self.fail(&why);
        }
    }

    /// Writes everything encrypted so far, unless another thread holds the write side (it
    /// looks again after letting go, so nothing queued is left behind).
    fn flush(&self) -> Result<(), String> {
        loop {
            let Some(mut out) = try_lock(&self.out) else {
                return Ok(());
            };
            {
                let mut tls = lock(&self.tls);
                while tls.wants_write() {
                    if let Err(e) = tls.write_tls(&mut out.buf) {
                        return Err(format!("cannot encrypt: {e}"));
                    }
                }
            }
            if !out.buf.is_empty() {
                let out = &mut *out;
                let written = out.socket.write_all(&out.buf);
                out.buf.clear();
                if out.buf.capacity() > KEEP_BUFFER {
                    out.buf.shrink_to(KEEP_BUFFER);
                }
                if let Err(e) = written {
                    return Err(format!("write failed: {e}"));
                }
            }
            drop(out);
            if !lock(&self.tls).wants_write() {
                return Ok(());
            }
        }
    }

    /// Waits for request `id`'s answer: as the leader (reading the socket) when nobody
    /// else reads, else until the leader hands it over or passes on the reading.
    fn await_answer(
        &self,
        id: u64,
        slot: &Slot,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        loop {
            // Ready to lead before looking for a leader, so that a leader letting go
            // after this look promotes us.
            slot.set_waiting(true);
            if let Some(mut incoming) = try_lock(&self.incoming) {
                slot.set_waiting(false);
                // The previous leader may have delivered our answer already (only the holder
                // of the read side delivers, so it cannot arrive after this look unseen).
                let lead = if slot.has_result() {
                    Lead::Answered
                } else {
                    self.lead(&mut incoming, id, deadline)
                };
                drop(incoming);
                self.promote();
                match lead {
                    Lead::Answered => {}
                    Lead::TimedOut => break,
                }
            }
            match slot.wait_turn(deadline) {
                Turn::Answered { promoted } => {
                    if promoted {
                        // We were asked to read but no longer need to: pass it on.
                        self.promote();
                    }
                    if let Some(result) = slot.take() {
                        return result.map_err(Failure::Unknown);
                    }
                }
                Turn::Promoted => {}
                Turn::TimedOut => break,
            }
        }
        // The answer may have arrived just now; otherwise give up on it.
        if let Some(result) = slot.take() {
            return result.map_err(Failure::Unknown);
        }
        lock(&self.pending).remove(&id);
        slot.disarm();
        self.promote();
        Err(Failure::Unknown(format!(
            "no answer from {} within {} ms",
            self.node,
            timeout.as_millis()
        )))
    }

    /// Reads and hands out responses until `me`'s has come (or the connection died), or
    /// `deadline`.
    fn lead(&self, incoming: &mut Incoming, me: u64, deadline: Instant) -> Lead {
        loop {
            if !self.is_alive() {
                return Lead::Answered;
            }
            if Instant::now() >= deadline {
                return Lead::TimedOut;
            }
            let read = {
                let incoming = &mut *incoming;
                incoming.socket.read(&mut incoming.raw)
            };
            match read {
                Ok(0) => {
                    self.fail("connection closed by the node");
                    return Lead::Answered;
                }
                Ok(n) => {
                    self.mark_read();
                    match self.absorb(incoming, n, me) {
                        Ok(true) => return Lead::Answered,
                        Ok(false) => {}
                        Err(why) => {
                            self.fail(&why);
                            return Lead::Answered;
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.fail(&format!("read failed: {e}"));
                    return Lead::Answered;
                }
            }
        }
    }

    /// Decrypts `n` bytes read into `incoming.raw` and hands out every whole response;
    /// true if one of them answered `me`.
    fn absorb(&self, incoming: &mut Incoming, n: usize, me: u64) -> Result<bool, String> {
        let mut closed = false;
        let wants_write = {
            let mut tls = lock(&self.tls);
            let mut rd: &[u8] = &incoming.raw[..n];
            while !rd.is_empty() {
                tls.read_tls(&mut rd)
                    .map_err(|e| format!("TLS read: {e}"))?;
                let state = tls.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                let want = state.plaintext_bytes_to_read();
                if want > 0 {
                    let start = incoming.plain.len();
                    grow_zeroizing(&mut incoming.plain, want);
                    incoming.plain.resize(start + want, 0);
                    tls.reader()
                        .read_exact(&mut incoming.plain[start..])
                        .map_err(|e| format!("TLS read: {e}"))?;
                }
                closed |= state.peer_has_closed();
            }
            tls.wants_write()
        };
        if wants_write {
            // TLS's own answer (a key update); sent now if the write side is free, else
            // by its holder.
            self.flush()?;
        }
        let mine = self.deliver_frames(&mut incoming.plain, me)?;
        if closed {
            return Err("connection closed by the node".into());
        }
        Ok(mine)
    }

    /// Decodes and delivers the whole frames at the front of `plain`, keeping a partial one.
    fn deliver_frames(&self, plain: &mut Vec<u8>, me: u64) -> Result<bool, String> {
        let mut mine = false;
        let mut pos = 0;
        while plain.len() - pos >= 4 {
            let mut len = [0u8; 4];
            len.copy_from_slice(&plain[pos..pos + 4]);
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FRAME_LEN {
                return Err(format!(
                    "response frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}"
                ));
            }
            if plain.len() - pos - 4 < len {
                break;
            }
            let body = &plain[pos + 4..pos + 4 + len];
            let envelope = frame::decode::<Envelope<Response>>(body)
                .map_err(|e| format!("bad response from node: {e}"))?;
            pos += 4 + len;
            SEEN_INDEX.fetch_max(envelope.index, Ordering::Relaxed);
            mine |= envelope.id.0 == me;
            self.deliver(envelope.id.0, Ok(envelope.body));
        }
        // Responses carry plaintext and signatures: zero what was consumed.
        if pos == plain.len() {
            wipe(plain);
        } else if pos > 0 {
            let rest = plain.len() - pos;
            plain.copy_within(pos.., 0);
            plain[rest..].zeroize();
            plain.truncate(rest);
        }
        Ok(mine)
    }

    /// Hands a response to whoever waits for it (if they have not given up).
    fn deliver(&self, id: u64, result: Result<Response, String>) {
        let slot = lock(&self.pending).remove(&id);
        match slot {
            Some(slot) => slot.fill(id, result),
            None => tracing::trace!(id, "response nobody waits for"),
        }
    }

    /// Asks one thread that waits (and has no answer yet) to read.
    fn promote(&self) {
        let pending = lock(&self.pending);
        for slot in pending.values() {
            if slot.promote() {
                return;
            }
        }
    }

    /// [`Connection::kill`] for a failure of the connection itself (logged as such).
    fn fail(&self, why: &str) {
        if self.is_alive() {
            tracing::warn!(node = %self.node, "connection lost: {why}");
        }
        self.kill(why);
    }

    /// Marks the connection dead, fails every request in flight and shuts the socket down.
    pub fn kill(&self, why: &str) {
        let waiters: Vec<(u64, Arc<Slot>)> = {
            let mut pending = lock(&self.pending);
            let was_alive = !self.dead.swap(true, Ordering::AcqRel);
            if was_alive {
                tracing::debug!(node = %self.node, "connection closed: {why}");
            }
            pending.drain().collect()
        };
        for (id, slot) in waiters {
            slot.fill(id, Err(format!("connection to {} lost: {why}", self.node)));
        }
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Makes room for `additional` more bytes without leaving a copy of the old content in
/// freed memory.
fn grow_zeroizing(buf: &mut Vec<u8>, additional: usize) {
    if buf.capacity() - buf.len() >= additional {
        return;
    }
    let want = (buf.len() + additional).max(buf.capacity() * 2);
    let mut bigger = Vec::with_capacity(want);
    bigger.extend_from_slice(buf);
    buf.zeroize();
    *buf = bigger;
}

/// Zeroes the used part of a reused buffer, empties it, and gives back memory a large
/// request made it grow to.
fn wipe(buf: &mut Vec<u8>) {
    buf.as_mut_slice().zeroize();
    buf.clear();
    if buf.capacity() > KEEP_BUFFER {
        buf.shrink_to(KEEP_BUFFER);
    }
}

/// Per-thread state reused by every request of that thread, so the request path allocates
/// nothing but the frame.
struct ThreadState {
    slot: Arc<Slot>,
    scratch: RefCell<Vec<u8>>,
}

thread_local! {
    static THREAD: ThreadState = ThreadState {
        slot: Arc::new(Slot::default()),
        scratch: RefCell::new(Vec::new()),
    };
}

/// Where one thread waits for the response to its request, or for its turn to read.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// The request id this slot waits for (0: none); late answers to an abandoned request
    /// are dropped by comparing it.
    armed: u64,
    result: Option<Result<Response, String>>,
    /// The thread is ready to read for everyone.
    waiting: bool,
    /// A leader asked it to.
    promoted: bool,
}

/// Why [`Slot::wait_turn`] returned.
enum Turn {
    /// The answer is in the slot; `promoted` if a promotion came too (and was not used).
    Answered {
        promoted: bool,
    },
    Promoted,
    TimedOut,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        lock(&self.state)
    }

    fn arm(&self, id: u64) {
        let mut state = self.lock();
        *state = SlotState {
            armed: id,
            ..SlotState::default()
        };
    }

    fn disarm(&self) {
        *self.lock() = SlotState::default();
    }

    fn set_waiting(&self, waiting: bool) {
        self.lock().waiting = waiting;
    }

    fn fill(&self, id: u64, result: Result<Response, String>) {
        let mut state = self.lock();
        if state.armed == id {
            state.result = Some(result);
            self.ready.notify_one();
        }
    }

    /// Asks the thread to read, if it waits without an answer; true if asked.
    fn promote(&self) -> bool {
        let mut state = self.lock();
        if state.waiting && !state.promoted && state.result.is_none() && state.armed != 0 {
            state.promoted = true;
            self.ready.notify_one();
            true
        } else {
            false
        }
    }

    fn has_result(&self) -> bool {
        self.lock().result.is_some()
    }

    /// Takes the answer if it is there, disarming the slot.
    fn take(&self) -> Option<Result<Response, String>> {
        let mut state = self.lock();
        let result = state.result.take()?;
        *state = SlotState::default();
        Some(result)
    }

    /// Waits for the answer, a promotion or `deadline`.
    fn wait_turn(&self, deadline: Instant) -> Turn {
        let mut state = self.lock();
        loop {
            if state.result.is_some() {
                let promoted = state.promoted;
                state.promoted = false;
                state.waiting = false;
                return Turn::Answered { promoted };
            }
            if state.promoted {
                state.promoted = false;
                state.waiting = false;
                return Turn::Promoted;
            }
            let now = Instant::now();
            if now >= deadline {
                state.waiting = false;
                return Turn::TimedOut;
            }
            state = match self.ready.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_proto::frame::encode;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use std::net::TcpListener;

    #[test]
    fn slot_drops_late_answers() {
        let slot = Slot::default();
        slot.arm(5);
        slot.fill(4, Ok(Response::Verified));
        assert!(matches!(
            slot.wait_turn(Instant::now() + Duration::from_millis(1)),
            Turn::TimedOut
        ));
        slot.arm(6);
        slot.fill(6, Ok(Response::Verified));
        assert!(matches!(
            slot.wait_turn(Instant::now() + Duration::from_millis(1)),
            Turn::Answered { promoted: false }
        ));
        assert!(matches!(slot.take(), Some(Ok(Response::Verified))));
    }

    #[test]
    fn a_promotion_is_only_for_a_waiting_thread_without_an_answer() {
        let slot = Slot::default();
        slot.arm(1);
        assert!(!slot.promote(), "not waiting yet");
        slot.set_waiting(true);
        assert!(slot.promote());
        assert!(!slot.promote(), "already promoted");
        assert!(matches!(
            slot.wait_turn(Instant::now() + Duration::from_millis(1)),
            Turn::Promoted
        ));
        slot.set_waiting(true);
        slot.fill(1, Ok(Response::Verified));
        assert!(!slot.promote(), "has its answer");
    }

    /// A TLS server on 127.0.0.1 that answers each request frame with `Response::Verified`
    /// under the same id, after `delay(id)`, answering out of order when delays differ;
    /// stops (closing the connection) after `limit` requests.
    fn server(
        limit: usize,
        delay: fn(u64) -> Duration,
    ) -> (
        String,
        Arc<rustls::ClientConfig>,
        std::thread::JoinHandle<()>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_der = CertificateDer::from(cert.der().to_vec());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert_der.clone()], key_der)
                .unwrap(),
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der).unwrap();
        let client = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut tls = rustls::ServerConnection::new(server).unwrap();
            let mut plain = Vec::new();
            let mut due: Vec<(Instant, u64)> = Vec::new();
            let mut served = 0;
            tcp.set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 16];
            while served < limit {
                match tcp.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let mut rd = &buf[..n];
                        while !rd.is_empty() {
                            tls.read_tls(&mut rd).unwrap();
                            let state = tls.process_new_packets().unwrap();
                            let want = state.plaintext_bytes_to_read();
                            let start = plain.len();
                            plain.resize(start + want, 0);
                            tls.reader().read_exact(&mut plain[start..]).unwrap();
                        }
                        while plain.len() >= 4 {
                            let len = u32::from_be_bytes(plain[..4].try_into().unwrap()) as usize;
                            if plain.len() < 4 + len {
                                break;
                            }
                            let envelope: Envelope<Request> =
                                frame::decode(&plain[4..4 + len]).unwrap();
                            plain.drain(..4 + len);
                            due.push((Instant::now() + delay(envelope.id.0), envelope.id.0));
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
                let now = Instant::now();
                due.sort();
                while due.first().is_some_and(|(t, _)| *t <= now) {
                    let (_, id) = due.remove(0);
                    let bytes = encode(&Envelope {
                        id: RequestId(id),
                        index: 0,
                        key: 0,
                        body: Response::Verified,
                    })
                    .unwrap();
                    tls.writer().write_all(&bytes).unwrap();
                    served += 1;
                }
                while tls.wants_write() {
                    tls.write_tls(&mut tcp).unwrap();
                }
            }
        });
        (address, client, handle)
    }

    fn connect(address: &str, config: Arc<rustls::ClientConfig>) -> Arc<Connection> {
        let mut tcp = TcpStream::connect(address).unwrap();
        let mut tls =
            ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).unwrap();
        }
        Arc::new(Connection::new(address.into(), tcp, tls, Duration::from_secs(5)).unwrap())
    }

    #[test]
    fn many_threads_get_their_own_answers_out_of_order() {
        // Odd ids take longer, so answers come back out of order and leadership moves.
        const THREADS: u64 = 16;
        const CALLS: u64 = 200;
        let (address, config, server) = server((THREADS * CALLS) as usize, |id| {
            Duration::from_micros(if id % 2 == 1 { 300 } else { 0 })
        });
        let conn = connect(&address, config);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let conn = conn.clone();
                std::thread::spawn(move || {
                    for i in 0..CALLS {
                        let id = 1 + t * 1000 + i;
                        let started = Instant::now();
                        let answer = conn.call(id, 0, &Request::Status, Duration::from_secs(10));
                        assert!(matches!(answer, Ok(Response::Verified)), "{answer:?}");
                        // Answers take under a millisecond: a call that waits much longer
                        // was woken late (a lost hand-over of the reading).
                        let took = started.elapsed();
                        assert!(took < Duration::from_secs(1), "call {id} took {took:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(conn.outstanding(), 0);
        assert!(lock(&conn.pending).is_empty());
        server.join().unwrap();
    }

    #[test]
    fn threads_with_idle_gaps_are_never_left_without_a_reader() {
        // Gaps longer than IDLE_CHECK make callers check the connection before sending
        // while others wait for answers of up to 2 ms.
        const THREADS: u64 = 4;
        const CALLS: u64 = 60;
        let (address, config, server) = server((THREADS * CALLS) as usize, |id| {
            Duration::from_micros(id % 7 * 300)
        });
        let conn = connect(&address, config);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let conn = conn.clone();
                std::thread::spawn(move || {
                    for i in 0..CALLS {
                        let id = 1 + t * 1000 + i;
                        std::thread::sleep(IDLE_CHECK * u32::try_from((id * 7) % 3).unwrap());
                        let started = Instant::now();
                        let answer = conn.call(id, 0, &Request::Status, Duration::from_secs(10));
                        assert!(matches!(answer, Ok(Response::Verified)), "{answer:?}");
                        let took = started.elapsed();
                        assert!(took < Duration::from_secs(1), "call {id} took {took:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        server.join().unwrap();
    }

    #[test]
    fn a_thread_waiting_while_a_check_reads_is_handed_the_reading() {
        let (address, config, server) = server(1, |_| Duration::ZERO);
        let conn = connect(&address, config);
        // Hold the write side, so that a check takes the read side and then waits.
        let writing = lock(&conn.out);
        let checker = {
            let conn = conn.clone();
            std::thread::spawn(move || conn.check(true))
        };
        std::thread::sleep(Duration::from_millis(50));
        let caller = {
            let conn = conn.clone();
            std::thread::spawn(move || conn.call(1, 0, &Request::Status, Duration::from_secs(3)))
        };
        // The caller has queued its request and waits, as the read side is taken.
        std::thread::sleep(Duration::from_millis(50));
        drop(writing);
        conn.flush().unwrap();
        assert!(checker.join().unwrap().is_ok());
        let answer = caller.join().unwrap();
        assert!(matches!(answer, Ok(Response::Verified)), "{answer:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_close_by_the_node_fails_the_waiters_and_the_next_request_is_not_sent() {
        // Answers one request, then closes with one more outstanding.
        let (address, config, server) = server(1, |id| {
            Duration::from_millis(if id == 2 { 10_000 } else { 1 })
        });
        let conn = connect(&address, config);
        assert!(matches!(
            conn.call(1, 0, &Request::Status, Duration::from_secs(10)),
            Ok(Response::Verified)
        ));
        let started = Instant::now();
        let answer = conn.call(2, 0, &Request::Status, Duration::from_secs(10));
        assert!(matches!(answer, Err(Failure::Unknown(_))), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!conn.is_alive());
        assert!(matches!(
            conn.call(3, 0, &Request::Status, Duration::from_secs(1)),
            Err(Failure::NotSent(_))
        ));
        server.join().unwrap();
    }

    #[test]
    fn an_idle_connection_the_node_closed_is_noticed_before_sending() {
        let (address, config, server) = server(1, |_| Duration::ZERO);
        let conn = connect(&address, config);
        assert!(matches!(
            conn.call(1, 0, &Request::Status, Duration::from_secs(10)),
            Ok(Response::Verified)
        ));
        server.join().unwrap();
        std::thread::sleep(IDLE_CHECK * 4);
        let answer = conn.call(2, 0, &Request::Status, Duration::from_secs(10));
        assert!(matches!(answer, Err(Failure::NotSent(_))), "{answer:?}");
    }

    #[test]
    fn a_late_answer_times_out_and_a_killed_connection_wakes_its_waiters() {
        let (address, config, _server) = server(10, |_| Duration::from_secs(30));
        let conn = connect(&address, config);
        let answer = conn.call(1, 0, &Request::Status, Duration::from_millis(100));
        assert!(matches!(answer, Err(Failure::Unknown(ref w)) if w.contains("no answer")));
        let c = conn.clone();
        let waiter =
            std::thread::spawn(move || c.call(2, 0, &Request::Status, Duration::from_secs(30)));
        while conn.outstanding() == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        conn.kill("test");
        assert!(matches!(waiter.join().unwrap(), Err(Failure::Unknown(_))));
        assert_eq!(conn.outstanding(), 0);
    }
}
