//! Length-prefixed frames: a 4-byte big-endian length, then a postcard message.
//!
//! A frame longer than [`MAX_FRAME_LEN`] is refused before any of it is buffered, so a peer
//! cannot make us allocate what it claims.

use crate::msg::{Hello, HelloReply, PROTOCOL_MAJOR, PROTOCOL_MINOR};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts (4 MiB): room for a 1 MiB payload plus its
/// encoding, small enough that a node never buffers much for one peer.
pub const MAX_FRAME_LEN: usize = 4 << 20;

/// The most random bytes one `GenerateRandom` asks for.
pub const MAX_RANDOM_LEN: u32 = 1 << 20;

/// Why a frame could not be read or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// The transport failed.
    Io(io::Error),
    /// The peer announced a frame larger than the limit.
    TooLarge(usize),
    /// The bytes are not a message of the expected type.
    Malformed(postcard::Error),
    /// The peer closed the connection.
    Closed,
    /// The peer speaks an incompatible protocol, or refused ours.
    Version(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "transport error: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the limit of {MAX_FRAME_LEN}")
            }
            FrameError::Malformed(e) => write!(f, "malformed message: {e}"),
            FrameError::Closed => f.write_str("connection closed by peer"),
            FrameError::Version(m) => write!(f, "protocol version mismatch: {m}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    }
}

/// Appends one frame holding `msg` to `out`.
///
/// # Errors
/// `TooLarge` if the encoded message exceeds the limit; `Malformed` if it cannot be encoded.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let out_len_before = out.len();
    let mut buf = std::mem::take(out);
    buf = postcard::to_extend(msg, buf).map_err(FrameError::Malformed)?;
    let len = buf.len() - out_len_before;
    if len > MAX_FRAME_LEN {
        buf.truncate(start);
        *out = buf;
        return Err(FrameError::TooLarge(len));
    }
    // `len <= MAX_FRAME_LEN < u32::MAX`, so the cast is lossless.
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    *out = buf;
    Ok(())
}

/// Encodes one frame.
///
/// # Errors
/// As [`encode_into`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Decodes a frame body (without its length prefix).
///
/// # Errors
/// `Malformed` if the bytes are not one `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(FrameError::Malformed)
}

/// Reads one frame body into `buf` (replacing its content).
///
/// # Errors
/// `Closed` on end of stream, `TooLarge` if the announced length exceeds the limit (nothing of
/// the body is read), `Io` on transport failure.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    Ok(())
}

/// Reads and decodes one message.
///
/// # Errors
/// As [`read_frame`] and [`decode`].
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<T, FrameError> {
    let mut buf = Vec::new();
    read_frame(reader, &mut buf).await?;
    decode(&buf)
}

/// Encodes and writes one message, then flushes.
///
/// # Errors
/// As [`encode`], or `Io`.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = encode(msg)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// The client side of the version handshake: sends [`Hello`], reads the node's reply.
///
/// # Errors
/// `Version` if the node refuses us or answers with another major version.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    software: &str,
) -> Result<String, FrameError> {
    write_message(stream, &Hello::current(software)).await?;
    match read_message::<HelloReply, _>(stream).await? {
        HelloReply::Accepted { major, node, .. } if major == PROTOCOL_MAJOR => Ok(node),
        HelloReply::Accepted { major, minor, .. } => Err(FrameError::Version(format!(
            "node speaks protocol {major}.{minor}, this client {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
        ))),
        HelloReply::Refused { message } => Err(FrameError::Version(message)),
    }
}

/// The node side of the handshake: reads [`Hello`], accepts a client of our major version and
/// refuses (with a message saying why) any other.
///
/// # Errors
/// `Version` after refusing; transport and decoding errors as they come.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    node: &str,
) -> Result<Hello, FrameError> {
    let hello: Hello = read_message(stream).await?;
    if hello.major != PROTOCOL_MAJOR {
        let message = format!(
            "protocol version {}.{} is not supported; node {node} speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
            hello.major, hello.minor
        );
        write_message(
            stream,
            &HelloReply::Refused {
                message: message.clone(),
            },
        )
        .await?;
        return Err(FrameError::Version(message));
    }
    let reply = HelloReply::Accepted {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
        node: node.to_owned(),
    };
    write_message(stream, &reply).await?;
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Envelope, Request, RequestId};

    #[tokio::test]
    async fn frames_round_trip() {
        let msg = Envelope::new(RequestId(7), Request::GenerateRandom { length: 32 });
        let bytes = encode(&msg).unwrap();
        let mut reader = &bytes[..];
        let back: Envelope<Request> = read_message(&mut reader).await.unwrap();
        assert_eq!(back.id, RequestId(7));
        assert!(matches!(back.body, Request::GenerateRandom { length: 32 }));
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading() {
        let mut bytes = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut reader = &bytes[..];
        let err = read_message::<Envelope<Request>, _>(&mut reader)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        let mut reader = &bytes[..];
        let err = read_message::<Envelope<Request>, _>(&mut reader)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn unknown_major_version_is_refused_with_a_message() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let srv = tokio::spawn(async move { server_handshake(&mut server, "n1").await });
        let hello = Hello {
            major: 99,
            minor: 0,
            software: "future".into(),
        };
        write_message(&mut client, &hello).await.unwrap();
        let reply: HelloReply = read_message(&mut client).await.unwrap();
        match reply {
            HelloReply::Refused { message } => assert!(message.contains("99.0"), "{message}"),
            other => panic!("expected refusal, got {other:?}"),
        }
        assert!(matches!(srv.await.unwrap(), Err(FrameError::Version(_))));
    }
}
