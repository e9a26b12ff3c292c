//! SASL authentication for `connection.start-ok`: the PLAIN and AMQPLAIN mechanisms, checked against
//! the broker's users. Owns the user list and their permissions (checked by `access.rs`); never
//! touches the socket.
//!
//! As in RabbitMQ, the default user `guest` may only connect from a loopback address. Passwords
//! are kept in RabbitMQ's form (`rabbit_password_hashing_sha256`: a 4-byte salt and the SHA-256
//! of salt and password) or, with a warning at load, in plain text.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

pub use super::permissions::{Grant, Permission, TopicPermission};
use sha2::{Digest, Sha256};
use warren_protocol::table::check_table;
use warren_protocol::types::{AMQPValue, FieldTable};

/// The mechanisms offered in `connection.start`, in preference order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// The mechanisms offered on a TLS listener that verifies client certificates: EXTERNAL too
/// (RabbitMQ's `rabbitmq_auth_mechanism_ssl`), the user named by the certificate.
pub const MECHANISMS_WITH_EXTERNAL: &str = "PLAIN AMQPLAIN EXTERNAL";

/// How a user's password is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// As written (a configuration file's `password`).
    Plain(String),
    /// RabbitMQ's salted SHA-256 (`password_hash`).
    Sha256 { salt: [u8; 4], hash: [u8; 32] },
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Password::Plain(..)"),
            Password::Sha256 { .. } => f.write_str("Password::Sha256(..)"),
        }
    }
}

impl Password {
    /// Reads a RabbitMQ `password_hash`: base64 of the salt (4 bytes) then SHA-256(salt ++
    /// password) (32 bytes).
    pub fn from_rabbitmq_hash(encoded: &str) -> Result<Password, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("not base64 ({e})"))?;
        let (Ok(salt), Ok(hash)) = (
            <[u8; 4]>::try_from(bytes.get(..4).unwrap_or_default()),
            <[u8; 32]>::try_from(bytes.get(4..).unwrap_or_default()),
        ) else {
            return Err(format!(
                "{} bytes once decoded, where RabbitMQ's SHA-256 hash is 36 (a 4-byte salt and a 32-byte digest)",
                bytes.len()
            ));
        };
        Ok(Password::Sha256 { salt, hash })
    }

    /// A RabbitMQ `password_hash` for `password` with `salt`.
    pub fn rabbitmq_hash(salt: [u8; 4], password: &str) -> String {
        let mut bytes = salt.to_vec();
        bytes.extend_from_slice(&salted_sha256(salt, password));
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn matches(&self, given: &str) -> bool {
        match self {
            Password::Plain(password) => password == given,
            Password::Sha256 { salt, hash } => salted_sha256(*salt, given) == *hash,
        }
    }
}

fn salted_sha256(salt: [u8; 4], password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

/// A user who may log in.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: Password,
    /// Only from loopback addresses (RabbitMQ's `loopback_users`).
    pub loopback_only: bool,
    /// RabbitMQ's user tags (`administrator`, `monitoring`, …): kept, not yet acted on.
    pub tags: Vec<String>,
    /// At most this many connections at once (RabbitMQ's user limit `max-connections`).
    pub max_connections: Option<u32>,
}

impl User {
    /// Whether the user, authenticated, may come in from `peer` (RabbitMQ's `loopback_users`).
    fn admits(&self, peer: IpAddr, mechanism: &str) -> Result<String, LoginRefused> {
        match self.loopback_only && !peer.is_loopback() {
            true => Err(LoginRefused::new(
                mechanism,
                format!("user '{}' can only connect via localhost", self.name),
            )),
            false => Ok(self.name.clone()),
        }
    }
}

/// Why a login was refused. The log gets the reason (`PLAIN login refused: user 'u' - invalid
/// credentials`); the client only RabbitMQ's "Login was refused ..." (nothing that helps a
/// guesser), except when the mechanism itself was unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefused {
    pub mechanism: String,
    pub reason: String,
    /// The reason is the client's business (an unsupported mechanism, a malformed response).
    told: bool,
}

impl LoginRefused {
    pub fn new(mechanism: &str, reason: String) -> LoginRefused {
        LoginRefused {
            mechanism: mechanism.to_owned(),
            reason,
            told: false,
        }
    }

    fn told(mechanism: &str, reason: String) -> LoginRefused {
        LoginRefused {
            told: true,
            ..LoginRefused::new(mechanism, reason)
        }
    }

    /// What the log says.
    pub fn log_text(&self) -> String {
        format!("{} login refused: {}", self.mechanism, self.reason)
    }

    /// What the client is told (a 403 `connection.close`).
    pub fn client_text(&self) -> String {
        match self.told {
            true => self.reason.clone(),
            false => format!(
                "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                self.mechanism
            ),
        }
    }
}

/// The users known to the broker: a shared handle (clones see the same list), so that a
/// reloaded configuration reaches every connection through [`Users::replace`].
#[derive(Clone, Debug)]
pub struct Users {
    pub(super) inner: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) accounts: RwLock<Accounts>,
    /// Counts replacements: a connection's `Access` (access.rs) resolves its grant
    /// again when it changes.
    pub(super) generation: AtomicU64,
    /// Tells open connections of each replacement (a removed user's connections close).
    pub(super) changed: watch::Sender<u64>,
    /// The grants handed out at one generation, shared by every connection of their user in
    /// their vhost: a grant's compiled expressions (and each one's cache pool, a few KiB) are
    /// not copied per connection. Emptied when the generation moves on.
    grants: Mutex<Grants>,
}

/// The grants handed out at one generation of the users, by (user, vhost).
#[derive(Debug, Default)]
struct Grants {
    generation: u64,
    shared: HashMap<(String, String), Arc<Grant>>,
}

#[derive(Debug)]
pub(super) struct Accounts {
    pub(super) users: Vec<User>,
    pub(super) permissions: Vec<Permission>,
    pub(super) topic_permissions: Vec<TopicPermission>,
}

impl Default for Users {
    /// The embedded default: `guest`/`guest`, from loopback only, with every permission in the
    /// default vhost `/` (as RabbitMQ's default user).
    fn default() -> Self {
        let guest = User {
            name: "guest".into(),
            password: Password::Plain("guest".into()),
            loopback_only: true,
            tags: vec!["administrator".into()],
            max_connections: None,
        };
        Users::with_permissions(vec![guest], vec![Permission::full("guest", "/")])
    }
}

impl Users {
    pub fn new(users: Vec<User>) -> Users {
        Users::with_permissions(users, Vec::new())
    }

    pub fn with_permissions(users: Vec<User>, permissions: Vec<Permission>) -> Users {
        Users {
            inner: Arc::new(Shared {
                accounts: RwLock::new(Accounts {
                    users,
                    permissions,
                    topic_permissions: Vec::new(),
                }),
                generation: AtomicU64::new(0),
                changed: watch::Sender::new(0),
                grants: Mutex::default(),
            }),
        }
    }

    /// The same users, with these topic permissions.
    pub fn with_topic_permissions(self, topic_permissions: Vec<TopicPermission>) -> Users {
        self.inner.accounts.write().topic_permissions = topic_permissions;
        self.inner.grants.lock().shared.clear();
        self
    }

    /// The users, at this moment.
    pub fn list(&self) -> Vec<User> {
        self.inner.accounts.read().users.clone()
    }

    /// The permissions, at this moment.
    pub fn permissions(&self) -> Vec<Permission> {
        self.inner.accounts.read().permissions.clone()
    }

    /// The topic permissions, at this moment.
    pub fn topic_permissions(&self) -> Vec<TopicPermission> {
        self.inner.accounts.read().topic_permissions.clone()
    }

    /// Replaces users and permissions (and clears topic permissions) for every holder of this
    /// handle: connections already open keep their login, and their next operation is checked
    /// against the new permissions.
    pub fn replace(&self, users: Vec<User>, permissions: Vec<Permission>) {
        self.replace_all(users, permissions, Vec::new());
    }

    /// [`Users::replace`], with topic permissions.
    pub fn replace_all(
        &self,
        users: Vec<User>,
        permissions: Vec<Permission>,
        topic_permissions: Vec<TopicPermission>,
    ) {
        *self.inner.accounts.write() = Accounts {
            users,
            permissions,
            topic_permissions,
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::Release) + 1;
        self.inner.changed.send_replace(generation);
    }

    /// Wakes on each replacement of the users (see [`Users::replace`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Whether `user` is (still) a user.
    pub fn exists(&self, user: &str) -> bool {
        self.inner
            .accounts
            .read()
            .users
            .iter()
            .any(|u| u.name == user)
    }

    /// The connection limit of `user`.
    pub fn max_connections(&self, user: &str) -> Option<u32> {
        let accounts = self.inner.accounts.read();
        accounts
            .users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.max_connections)
    }

    /// How many times the users were replaced.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// What `user` may do in `vhost` (`None`: no permission entry, so no access), with the
    /// generation it was read at. One grant per user and vhost is shared by their connections.
    pub fn grant(&self, user: &str, vhost: &str) -> (u64, Option<Arc<Grant>>) {
        let accounts = self.inner.accounts.read();
        let generation = self.generation();
        let mut grants = self.inner.grants.lock();
        if grants.generation != generation {
            *grants = Grants {
                generation,
                shared: HashMap::new(),
            };
        }
        let key = (user.to_owned(), vhost.to_owned());
        if let Some(grant) = grants.shared.get(&key) {
            return (generation, Some(Arc::clone(grant)));
        }
        let exists = accounts.users.iter().any(|u| u.name == user);
        let permission = accounts
            .permissions
            .iter()
            .find(|p| p.user == user && p.vhost == vhost)
            .filter(|_| exists);
        let grant = permission.map(|permission| {
            Arc::new(Grant {
                permission: permission.clone(),
                topics: accounts
                    .topic_permissions
                    .iter()
                    .filter(|t| t.user == user && t.vhost == vhost)
                    .cloned()
                    .collect(),
            })
        });
        if let Some(grant) = &grant {
            grants.shared.insert(key, Arc::clone(grant));
        }
        (generation, grant)
    }

    /// Checks a `start-ok` response (PLAIN or AMQPLAIN); returns the user name, or why the
    /// login is refused.
    pub fn authenticate(
        &self,
        mechanism: &str,
        response: &[u8],
        peer: IpAddr,
    ) -> Result<String, LoginRefused> {
        let (name, password) = match mechanism {
            "PLAIN" => parse_plain(response),
            "AMQPLAIN" => parse_amqplain(response),
            other => {
                return Err(LoginRefused::told(
                    other,
                    format!("unsupported authentication mechanism '{other}'"),
                ))
            }
        }
        .ok_or_else(|| LoginRefused::told(mechanism, format!("malformed {mechanism} response")))?;
        let accounts = self.inner.accounts.read();
        let user = accounts.users.iter().find(|u| u.name == name);
        match user {
            Some(user) if user.password.matches(&password) => user.admits(peer, mechanism),
            _ => Err(LoginRefused::new(
                mechanism,
                format!("user '{name}' - invalid credentials"),
            )),
        }
    }
}

impl Users {
    /// Checks a `connection.update-secret` for the connection's `user`, as RabbitMQ's internal
    /// user database does: its credentials cannot expire, so the new secret is not compared with
    /// the password (RabbitMQ answers `update-secret-ok` to any secret for such a user, and the
    /// clients' own test suites rely on it); the user must still exist and still be allowed in
    /// from `peer`. Returns why not (a 403 `connection.close`).
    pub fn update_secret(&self, user: &str, peer: IpAddr) -> Result<(), String> {
        let accounts = self.inner.accounts.read();
        let Some(found) = accounts.users.iter().find(|u| u.name == user) else {
            return Err(format!(
                "New secret was refused: user '{user}' no longer exists"
            ));
        };
        if found.loopback_only && !peer.is_loopback() {
            return Err(format!("user '{user}' can only connect via localhost"));
        }
        Ok(())
    }
}

impl Users {
    /// SASL EXTERNAL: the user is the verified client certificate's subject common name
    /// (RabbitMQ's `ssl_cert_login_from = common_name`); it must be a known user, allowed from
    /// `peer`; no password. Without a certificate the login is refused (403, as a failed PLAIN).
    pub fn authenticate_external(
        &self,
        common_name: Option<&str>,
        peer: IpAddr,
    ) -> Result<String, LoginRefused> {
        let Some(name) = common_name else {
            return Err(LoginRefused::new(
                "EXTERNAL",
                "connection peer presented no TLS (x.509) certificate (or none with a common name)"
                    .into(),
            ));
        };
        let accounts = self.inner.accounts.read();
        let Some(user) = accounts.users.iter().find(|u| u.name == name) else {
            return Err(LoginRefused::new(
                "EXTERNAL",
                format!("user '{name}' - invalid credentials"),
            ));
        };
        user.admits(peer, "EXTERNAL")
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
        // The log gets RabbitMQ's reason; the client the same text whatever the reason.
        let generic = "Login was refused using authentication mechanism PLAIN. For details see \
                       the broker logfile.";
        let wrong = users
            .authenticate("PLAIN", b"\0guest\0wrong", LOCAL)
            .unwrap_err();
        assert_eq!(
            wrong.log_text(),
            "PLAIN login refused: user 'guest' - invalid credentials"
        );
        assert_eq!(wrong.client_text(), generic);
        let nobody = users
            .authenticate("PLAIN", b"\0nobody\0guest", LOCAL)
            .unwrap_err();
        assert_eq!(nobody.client_text(), generic);
        let remote = users
            .authenticate("PLAIN", b"\0guest\0guest", REMOTE)
            .unwrap_err();
        assert_eq!(
            remote.log_text(),
            "PLAIN login refused: user 'guest' can only connect via localhost"
        );
        assert_eq!(remote.client_text(), generic);
        assert!(users.authenticate("PLAIN", b"garbage", LOCAL).is_err());
        assert!(users.authenticate("EXTERNAL", b"", LOCAL).is_err());
    }

    #[test]
    fn external_by_common_name() {
        let users = Users::default();
        assert_eq!(
            users.authenticate_external(Some("guest"), LOCAL),
            Ok("guest".into())
        );
        assert!(users.authenticate_external(Some("guest"), REMOTE).is_err());
        assert!(users.authenticate_external(Some("nobody"), LOCAL).is_err());
        let none = users.authenticate_external(None, LOCAL).unwrap_err();
        assert!(
            none.log_text().contains("no TLS (x.509) certificate"),
            "{none:?}"
        );
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

    #[test]
    fn rabbitmq_password_hashes() {
        // From RabbitMQ's documentation (rabbitmqctl hash_password, SHA-256): "test12".
        let hash = Password::rabbitmq_hash([0x90, 0x8d, 0xc6, 0x0a], "test12");
        assert_eq!(hash, "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
        let password = Password::from_rabbitmq_hash(&hash).unwrap();
        assert!(password.matches("test12"));
        assert!(!password.matches("test13"));
        assert!(Password::from_rabbitmq_hash("not base64!").is_err());
        assert!(Password::from_rabbitmq_hash("AAAA").is_err());
        let users = Users::new(vec![User {
            name: "app".into(),
            password,
            loopback_only: false,
            tags: Vec::new(),
            max_connections: None,
        }]);
        assert_eq!(
            users.authenticate("PLAIN", b"\0app\0test12", REMOTE),
            Ok("app".into())
        );
        assert!(users
            .authenticate("PLAIN", b"\0app\0wrong", REMOTE)
            .is_err());
        users.replace(Users::default().list(), Vec::new());
        assert!(users
            .authenticate("PLAIN", b"\0app\0test12", REMOTE)
            .is_err());
    }

    #[test]
    fn update_secret_needs_the_user_still_there_and_allowed_from_the_peer() {
        let users = Users::default();
        assert!(users.update_secret("guest", LOCAL).is_ok());
        assert!(users
            .update_secret("guest", REMOTE)
            .unwrap_err()
            .contains("localhost"));
        users.replace(Vec::new(), Vec::new());
        assert_eq!(
            users.update_secret("guest", LOCAL),
            Err("New secret was refused: user 'guest' no longer exists".into())
        );
    }
}
