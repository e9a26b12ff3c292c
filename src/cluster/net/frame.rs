//! Frames on the cluster port. A frame is `[u32 length][payload]` (big-endian length, at most
//! [`MAX_FRAME`]). A request's payload is `[u8 group length][group id][u8 rpc][body]`; a reply's
//! is `[u8 status][body]`: [`OK`] with the JSON of the group's `Result<response, RaftError>`, or
//! [`REFUSED`] with a UTF-8 reason (no such group, a body that does not decode).
//!
//! Owns the byte layout; never interprets a body.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cluster::machine::GroupId;

/// The largest frame read or written. Snapshots travel in chunks well under it.
pub const MAX_FRAME: usize = 64 << 20;

/// The reply carries the group's answer.
pub const OK: u8 = 0;
/// The reply carries why the node could not hand the request to a group.
pub const REFUSED: u8 = 1;

/// The Raft RPCs, as numbered on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    AppendEntries = 1,
    Vote = 2,
    InstallSnapshot = 3,
    /// A client write forwarded to the node that leads the group (see `raft.rs`).
    Write = 4,
    /// Is the node there? Answered by any group, with an empty body.
    Ping = 5,
    /// A change of the group's voters, forwarded to the leader (see `raft.rs`).
    Membership = 6,
}

impl Rpc {
    fn from_byte(byte: u8) -> Option<Rpc> {
        match byte {
            1 => Some(Rpc::AppendEntries),
            2 => Some(Rpc::Vote),
            3 => Some(Rpc::InstallSnapshot),
            4 => Some(Rpc::Write),
            5 => Some(Rpc::Ping),
            6 => Some(Rpc::Membership),
            _ => None,
        }
    }
}

/// A request's payload.
pub fn request(group: &GroupId, rpc: Rpc, body: &[u8]) -> Vec<u8> {
    let name = group.as_str().as_bytes();
    let mut payload = Vec::with_capacity(2 + name.len() + body.len());
    payload.push(name.len() as u8); // GroupId::new bounds it to 255 bytes
    payload.extend_from_slice(name);
    payload.push(rpc as u8);
    payload.extend_from_slice(body);
    payload
}

/// Splits a request's payload into group, RPC and body.
pub fn parse_request(payload: &[u8]) -> Result<(GroupId, Rpc, &[u8]), String> {
    let (&len, rest) = payload.split_first().ok_or("empty request")?;
    let (name, rest) = rest
        .split_at_checked(len as usize)
        .ok_or("request shorter than its group id")?;
    let name = std::str::from_utf8(name).map_err(|_| "group id not UTF-8")?;
    let group = GroupId::new(name).ok_or("empty group id")?;
    let (&rpc, body) = rest.split_first().ok_or("request without an rpc")?;
    let rpc = Rpc::from_byte(rpc).ok_or_else(|| format!("unknown rpc {rpc}"))?;
    Ok((group, rpc, body))
}

/// A reply's payload.
pub fn reply(status: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(status);
    payload.extend_from_slice(body);
    payload
}

/// Writes one frame.
pub async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes", payload.len()),
        ));
    }
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(payload).await?;
    stream.flush().await
}

/// Reads one frame; a length over [`MAX_FRAME`] is an error, read no further.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes announced"),
        ));
    }
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_back() {
        let group = GroupId::new("meta").unwrap();
        let payload = request(&group, Rpc::Vote, b"{}");
        assert_eq!(
            parse_request(&payload).unwrap(),
            (group, Rpc::Vote, &b"{}"[..])
        );
        assert!(parse_request(&[9, b'x']).is_err());
        assert!(parse_request(&[1, b'x', 7]).is_err());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading() {
        let mut bytes: &[u8] = &((MAX_FRAME as u32) + 1).to_be_bytes();
        let err = read_frame(&mut bytes).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
