//! The wire format between `ctmgr sync` and `ctmgr __sync-receive` on the
//! peer, spoken over the stdin/stdout of one ssh session.
//!
//! Every message is one frame:
//!
//! ```text
//! "CTS1"  u32 BE header length  u64 BE payload length  header (JSON)  payload (raw bytes)
//! ```
//!
//! The header is a small JSON object ([`Request`] or [`Reply`]); the payload
//! carries file contents as they are on disk, never decoded or re-encoded, so
//! a config in Latin-1 arrives byte for byte. The magic at the start of every
//! frame makes a desynchronised or polluted stream (a remote shell that
//! prints a banner on stdout, an old ctmgr printing usage) fail loudly at the
//! first frame instead of being misread.
//!
//! Encoding and decoding are pure functions over byte slices; `read_frame`
//! and `write_frame` are thin wrappers for any `Read`/`Write`, so the sender
//! and the receiver are tested over in-memory pipes.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// First four bytes of every frame; the digit is the protocol version.
pub const MAGIC: [u8; 4] = *b"CTS1";
/// Protocol version, checked in the hello exchange.
pub const VERSION: u32 = 1;
/// Bytes before the header: magic, header length, payload length.
pub const PREFIX_LEN: usize = 16;
/// Largest header accepted (headers are a few hundred bytes).
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest payload accepted: an LXC config or fstab is a few KiB; anything
/// near this is not one.
pub const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// Errors of the framing layer.
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("not a ctmgr sync frame (it starts with {0:?}): is the same ctmgr installed on the peer, and does its remote shell print nothing on stdout?")]
    BadMagic(String),
    #[error("frame header of {0} bytes exceeds the limit of {MAX_HEADER}")]
    HeaderTooLarge(usize),
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    PayloadTooLarge(u64),
    #[error("unreadable frame header")]
    Header(#[source] serde_json::Error),
    #[error("cannot encode frame header")]
    Encode(#[source] serde_json::Error),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    /// The other side went away (EOF or broken pipe). Kept apart from `Io`
    /// so that no `std::io::Error` of kind `BrokenPipe` reaches the binary,
    /// which would take it for a closed stdout and exit silently.
    #[error("the other side closed the connection")]
    Closed,
    #[error("i/o error on the sync connection")]
    Io(#[source] std::io::Error),
}

fn io_error(e: std::io::Error) -> ProtocolError {
    match e.kind() {
        ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => {
            ProtocolError::Closed
        }
        _ => ProtocolError::Io(e),
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T> {
    pub header: T,
    pub payload: Vec<u8>,
}

/// The two files of a container that are replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncFile {
    Config,
    Fstab,
}

impl SyncFile {
    /// Both, in the order they are pushed.
    pub const ALL: [SyncFile; 2] = [SyncFile::Config, SyncFile::Fstab];

    /// The file name inside the container directory.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncFile::Config => "config",
            SyncFile::Fstab => "fstab",
        }
    }
}

impl std::fmt::Display for SyncFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sender to receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First frame: who is talking to whom.
    Hello {
        version: u32,
        cluster: String,
        /// The sending node.
        from: String,
        /// The node the sender means to reach (the receiver checks it is that node).
        to: String,
    },
    /// Write `<replica_dir>/<name>/<file>` with the payload, unless the file
    /// there changed since the sender last pushed `expected` (sha256 hex).
    Push {
        store: String,
        name: String,
        file: SyncFile,
        expected: Option<String>,
        /// Permission bits of the source file.
        mode: u32,
        force: bool,
    },
    /// The replica's current content (reply payload) and hash.
    Query {
        store: String,
        name: String,
        file: SyncFile,
    },
    /// Names of the replicas of `store`'s containers kept on the receiver.
    List { store: String },
    /// Remove the replica of a container destroyed on the sender, unless its
    /// files changed since they were pushed (`expected`) or it is running.
    Remove {
        store: String,
        name: String,
        expected: BTreeMap<SyncFile, String>,
        force: bool,
    },
    /// End of session.
    Bye,
}

/// What the receiver did or found for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Written (atomically); `over_drift` when `force` overwrote a changed file.
    Written { over_drift: bool },
    /// The replica already had this content; not rewritten.
    Unchanged,
    /// The replica changed since the last push; not touched. Reply payload: its content.
    Drift,
    /// The replica was removed.
    Removed,
    /// Query: the replica exists. Reply payload: its content.
    Present,
    /// Query or remove: there is no such replica.
    Missing,
    /// Not done, for the reason given.
    Refused { reason: String },
}

/// Receiver to sender: one reply per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Hello {
        version: u32,
        /// The receiving node's name, when it could tell.
        node: Option<String>,
    },
    Outcome {
        outcome: Outcome,
        /// sha256 hex of the replica file as it is now on the receiver.
        current: Option<String>,
        /// Anything else worth telling the operator.
        detail: Option<String>,
    },
    Names {
        names: Vec<String>,
    },
    /// The session cannot go on (version or cluster mismatch, bad request).
    Error {
        message: String,
    },
}

/// Encodes one frame.
pub fn encode<T: Serialize>(header: &T, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let json = serde_json::to_vec(header).map_err(ProtocolError::Encode)?;
    if json.len() > MAX_HEADER {
        return Err(ProtocolError::HeaderTooLarge(json.len()));
    }
    let plen = payload.len() as u64;
    if plen > MAX_PAYLOAD {
        return Err(ProtocolError::PayloadTooLarge(plen));
    }
    let mut out = Vec::with_capacity(PREFIX_LEN + json.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&plen.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks a frame prefix; returns (header length, payload length).
fn parse_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<(usize, usize), ProtocolError> {
    if prefix[..4] != MAGIC {
        return Err(ProtocolError::BadMagic(
            String::from_utf8_lossy(prefix).into_owned(),
        ));
    }
    let mut h = [0u8; 4];
    h.copy_from_slice(&prefix[4..8]);
    let hlen = u32::from_be_bytes(h) as usize;
    if hlen > MAX_HEADER {
        return Err(ProtocolError::HeaderTooLarge(hlen));
    }
    let mut p = [0u8; 8];
    p.copy_from_slice(&prefix[8..16]);
    let plen = u64::from_be_bytes(p);
    if plen > MAX_PAYLOAD {
        return Err(ProtocolError::PayloadTooLarge(plen));
    }
    // MAX_PAYLOAD fits in usize on every target ctmgr runs on.
    Ok((hlen, plen as usize))
}

/// Decodes the first frame of `buf`. `Ok(None)`: more bytes are needed.
/// On success also returns how many bytes the frame took.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(Frame<T>, usize)>, ProtocolError> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        // Check what we have of the magic already, to fail early on garbage.
        let n = buf.len().min(4);
        if buf[..n] != MAGIC[..n] {
            return Err(ProtocolError::BadMagic(
                String::from_utf8_lossy(buf).into_owned(),
            ));
        }
        return Ok(None);
    };
    let mut fixed = [0u8; PREFIX_LEN];
    fixed.copy_from_slice(prefix);
    let (hlen, plen) = parse_prefix(&fixed)?;
    let total = PREFIX_LEN + hlen + plen;
    if buf.len() < total {
        return Ok(None);
    }
    let header = serde_json::from_slice(&buf[PREFIX_LEN..PREFIX_LEN + hlen])
        .map_err(ProtocolError::Header)?;
    let payload = buf[PREFIX_LEN + hlen..total].to_vec();
    Ok(Some((Frame { header, payload }, total)))
}

/// Writes one frame and flushes it.
pub fn write_frame<W: Write, T: Serialize>(
    w: &mut W,
    header: &T,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    let bytes = encode(header, payload)?;
    w.write_all(&bytes).map_err(io_error)?;
    w.flush().map_err(io_error)
}

/// Reads one frame. `Ok(None)`: the stream ended cleanly between frames.
pub fn read_frame<R: Read, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<Frame<T>>, ProtocolError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut got = 0;
    while got < PREFIX_LEN {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                // Whatever arrived may be a message that is not ours.
                if prefix[..got.min(4)] != MAGIC[..got.min(4)] {
                    return Err(ProtocolError::BadMagic(
                        String::from_utf8_lossy(&prefix[..got]).into_owned(),
                    ));
                }
                return Err(ProtocolError::Truncated);
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    let (hlen, plen) = parse_prefix(&prefix)?;
    let mut header = vec![0u8; hlen];
    read_exact(r, &mut header)?;
    let mut payload = vec![0u8; plen];
    read_exact(r, &mut payload)?;
    let header = serde_json::from_slice(&header).map_err(ProtocolError::Header)?;
    Ok(Some(Frame { header, payload }))
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtocolError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => io_error(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> Request {
        Request::Push {
            store: "store1".into(),
            name: "web".into(),
            file: SyncFile::Config,
            expected: Some("ab".repeat(32)),
            mode: 0o640,
            force: false,
        }
    }

    #[test]
    fn round_trip_keeps_non_utf8_payload_byte_exact() {
        let payload = b"lxc.uts.name = caf\xe9\n\x00\xff".to_vec();
        let bytes = encode(&push(), &payload).unwrap();
        assert_eq!(&bytes[..4], b"CTS1");
        let (frame, used) = decode::<Request>(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.header, push());
        assert_eq!(frame.payload, payload);
    }

    #[test]
    fn decode_asks_for_more_until_the_frame_is_complete() {
        let bytes = encode(&push(), b"abc").unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode::<Request>(&bytes[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        // Two frames back to back: the first is decoded, the rest left over.
        let mut two = bytes.clone();
        two.extend(encode(&Request::Bye, b"").unwrap());
        let (_, used) = decode::<Request>(&two).unwrap().unwrap();
        let (second, _) = decode::<Request>(&two[used..]).unwrap().unwrap();
        assert_eq!(second.header, Request::Bye);
    }

    #[test]
    fn garbage_is_refused_with_what_was_seen() {
        let err = decode::<Request>(b"Welcome to node2!\n").unwrap_err();
        assert!(err.to_string().contains("Welcome"), "{err}");
        let err = decode::<Request>(b"We").unwrap_err();
        assert!(matches!(err, ProtocolError::BadMagic(_)), "{err}");
        let mut r: &[u8] = b"usage: ctmgr [OPTIONS]\n";
        let err = read_frame::<_, Reply>(&mut r).unwrap_err();
        assert!(matches!(err, ProtocolError::BadMagic(_)), "{err}");
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(&(MAX_HEADER as u32 + 1).to_be_bytes());
        bytes.extend(&0u64.to_be_bytes());
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ProtocolError::HeaderTooLarge(_))
        ));
        let mut bytes = MAGIC.to_vec();
        bytes.extend(&2u32.to_be_bytes());
        bytes.extend(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ProtocolError::PayloadTooLarge(_))
        ));
        let big = vec![0u8; MAX_PAYLOAD as usize + 1];
        assert!(matches!(
            encode(&Request::Bye, &big),
            Err(ProtocolError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn unknown_message_types_and_fields_are_errors() {
        let mut bytes = MAGIC.to_vec();
        let json = br#"{"type":"format_disk"}"#;
        bytes.extend(&(json.len() as u32).to_be_bytes());
        bytes.extend(&0u64.to_be_bytes());
        bytes.extend(json);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ProtocolError::Header(_))
        ));
        let json = br#"{"type":"query","store":"s","name":"n","file":"rootfs"}"#;
        let mut bytes = MAGIC.to_vec();
        bytes.extend(&(json.len() as u32).to_be_bytes());
        bytes.extend(&0u64.to_be_bytes());
        bytes.extend(json);
        assert!(
            decode::<Request>(&bytes).is_err(),
            "only config and fstab are files"
        );
    }

    #[test]
    fn read_and_write_over_a_stream() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &push(), b"one").unwrap();
        let mut expected = BTreeMap::new();
        expected.insert(SyncFile::Fstab, "00".repeat(32));
        let remove = Request::Remove {
            store: "store1".into(),
            name: "old".into(),
            expected,
            force: true,
        };
        write_frame(&mut wire, &remove, b"").unwrap();
        let mut r: &[u8] = &wire;
        let a: Frame<Request> = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(a.payload, b"one");
        let b: Frame<Request> = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(b.header, remove);
        assert!(
            read_frame::<_, Request>(&mut r).unwrap().is_none(),
            "clean end"
        );
        // A stream cut inside a frame is not a clean end.
        let mut cut: &[u8] = &wire[..wire.len() - 3];
        read_frame::<_, Request>(&mut cut).unwrap();
        assert!(matches!(
            read_frame::<_, Request>(&mut cut),
            Err(ProtocolError::Truncated)
        ));
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Hello {
                version: VERSION,
                node: Some("node2".into()),
            },
            Reply::Outcome {
                outcome: Outcome::Refused {
                    reason: "collision".into(),
                },
                current: None,
                detail: Some("x".into()),
            },
            Reply::Outcome {
                outcome: Outcome::Written { over_drift: true },
                current: None,
                detail: None,
            },
            Reply::Names {
                names: vec!["a".into(), "b".into()],
            },
            Reply::Error {
                message: "cluster mismatch".into(),
            },
        ];
        for reply in replies {
            let bytes = encode(&reply, b"").unwrap();
            let (frame, _) = decode::<Reply>(&bytes).unwrap().unwrap();
            assert_eq!(frame.header, reply);
        }
    }
}
