//! SASL authentication for `connection.start-ok`: the PLAIN and AMQPLAIN mechanisms, checked against
//! the broker's users. Owns no state beyond the user list; never touches the socket.
//!
//! As in RabbitMQ, the default user `guest` may only connect from a loopback address.

use std::net::IpAddr;

use bytes::Bytes;
use warren_protocol::table::check_table;
use warren_protocol::types::{AMQPValue, FieldTable};

/// The mechanisms offered in `connection.start`, in preference order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// A user who may log in.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Only from loopback addresses (RabbitMQ's `loopback_users`).
    pub loopback_only: bool,
}

/// The users known to the broker.
#[derive(Clone, Debug)]
pub struct Users {
    users: Vec<User>,
}

impl Default for Users {
    /// The embedded default: `guest`/`guest`, from loopback only.
    fn default() -> Self {
        Users {
            users: vec![User {
                name: "guest".into(),
                password: "guest".into(),
                loopback_only: true,
            }],
        }
    }
}

impl Users {
    pub fn new(users: Vec<User>) -> Users {
        Users { users }
    }

    /// Checks a `start-ok` response; returns the user name, or why the login is refused (the
    /// text goes to the client in a 403 `connection.close`, as RabbitMQ does).
    pub fn authenticate(
        &self,
        mechanism: &str,
        response: &[u8],
        peer: IpAddr,
    ) -> Result<String, String> {
        let (name, password) = match mechanism {
            "PLAIN" => parse_plain(response),
            "AMQPLAIN" => parse_amqplain(response),
            other => return Err(format!("unsupported authentication mechanism '{other}'")),
        }
        .ok_or_else(|| format!("malformed {mechanism} response"))?;
        let refused = || {
            format!("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.")
        };
        let user = self
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(refused)?;
        if user.password != password {
            return Err(refused());
        }
        if user.loopback_only && !peer.is_loopback() {
            return Err(format!("user '{name}' can only connect via localhost"));
        }
        Ok(name)
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

/// AMQPLAIN: a field table body (without its length prefix) holding `LOGIN` and `PASSWORD`.
fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    check_table(&framed, 0).ok()?;
    let (_, table): (_, FieldTable) =
        warren_protocol::types::parsing::parse_field_table(Bytes::from(framed).as_ref()).ok()?;
    let text = |key: &str| match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn plain_guest_from_loopback_only() {
        let users = Users::default();
        assert_eq!(
            users.authenticate("PLAIN", b"\0guest\0guest", LOCAL),
            Ok("guest".into())
        );
        assert!(users
            .authenticate("PLAIN", b"\0guest\0wrong", LOCAL)
            .is_err());
        assert!(users
            .authenticate("PLAIN", b"\0nobody\0guest", LOCAL)
            .is_err());
        let remote = users
            .authenticate("PLAIN", b"\0guest\0guest", REMOTE)
            .unwrap_err();
        assert!(remote.contains("localhost"), "{remote}");
        assert!(users.authenticate("PLAIN", b"garbage", LOCAL).is_err());
        assert!(users.authenticate("EXTERNAL", b"", LOCAL).is_err());
    }

    #[test]
    fn amqplain() {
        let mut body = Vec::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
            body.push(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.push(b'S');
            body.extend_from_slice(&(v.len() as u32).to_be_bytes());
            body.extend_from_slice(v.as_bytes());
        }
        let users = Users::default();
        assert_eq!(
            users.authenticate("AMQPLAIN", &body, LOCAL),
            Ok("guest".into())
        );
        assert!(users
            .authenticate("AMQPLAIN", &body[..body.len() - 1], LOCAL)
            .is_err());
    }
}
