//! The HTTP side of `warren ctl`: one blocking request at a time to the management API, with
//! Basic auth, percent-encoded path segments and the API's errors turned into [`CtlError`].
//!
//! It owns the transport and nothing else: it never prints, and it never interprets a
//! successful answer beyond parsing its JSON.

use std::fmt;
use std::io;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use ureq::http::Response;
use ureq::{Agent, Body};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (an export of a large broker's definitions fits).
const BODY_LIMIT: u64 = 512 * 1024 * 1024;

/// Why a command failed; each is reported on stderr with exit code 1.
#[derive(Debug)]
pub enum CtlError {
    /// The API answered with an error status; `reason` is its body's `reason` (or the body).
    Api { status: u16, reason: String },
    /// Nothing answered at the URL.
    Connect { url: String, detail: String },
    /// The request failed after connecting (a timeout, a broken answer).
    Transport(String),
    /// A local problem: a file to read or write, JSON that does not parse.
    Local(String),
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Api { status, reason } => write!(f, "{status}: {reason}"),
            CtlError::Connect { url, detail } => write!(
                f,
                "cannot connect to {url}: {detail}\n\
                 is the broker's management API listening there? Give its address with --url \
                 (or WARREN_URL)"
            ),
            CtlError::Transport(detail) | CtlError::Local(detail) => f.write_str(detail),
        }
    }
}

/// A client of one management API, as one user.
pub struct Client {
    agent: Agent,
    base: String,
    authorization: String,
}

impl Client {
    pub fn new(url: &str, user: &str, password: &str) -> Client {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Client {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            authorization: format!("Basic {credentials}"),
        }
    }

    /// `GET path` (from `/api/...`): the answer's JSON.
    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        let response = self
            .agent
            .get(self.url(path))
            .header("Authorization", &self.authorization)
            .call();
        self.answer(response)
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        let response = self
            .agent
            .put(self.url(path))
            .header("Authorization", &self.authorization)
            .send_json(body);
        self.answer(response)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        let response = self
            .agent
            .post(self.url(path))
            .header("Authorization", &self.authorization)
            .send_json(body);
        self.answer(response)
    }

    /// `DELETE path`, with extra headers (`X-Reason`).
    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Result<Value, CtlError> {
        let mut request = self
            .agent
            .delete(self.url(path))
            .header("Authorization", &self.authorization);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.answer(request.call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A success's JSON (null when it has no body), or the error it stands for.
    fn answer(&self, response: Result<Response<Body>, ureq::Error>) -> Result<Value, CtlError> {
        let mut response = response.map_err(|e| self.failure(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.failure(e))?;
        if !(200..300).contains(&status) {
            return Err(CtlError::Api {
                status,
                reason: reason(&text),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| CtlError::Transport(format!("the API's answer is not JSON: {e}")))
    }

    fn failure(&self, error: ureq::Error) -> CtlError {
        let connect = |detail: String| CtlError::Connect {
            url: self.base.clone(),
            detail,
        };
        match error {
            ureq::Error::Io(e) if refused(&e) => connect(e.to_string()),
            ureq::Error::ConnectionFailed => connect("connection failed".into()),
            ureq::Error::HostNotFound => connect("host not found".into()),
            ureq::Error::BadUri(uri) => connect(format!("not a URL ({uri})")),
            ureq::Error::Http(e) => connect(format!("not a URL ({e})")),
            other => CtlError::Transport(format!("{}: {other}", self.base)),
        }
    }
}

fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NotFound
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// An error body's `reason` (RabbitMQ's `{"error": ..., "reason": ...}`), else its text.
fn reason(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    field("reason")
        .or_else(|| field("error"))
        .unwrap_or_else(|| match body.trim() {
            "" => "(no reason given)".to_owned(),
            text => text.to_owned(),
        })
}

/// A path segment, percent-encoded (RFC 3986: all but the unreserved characters), so that the
/// vhost `/` is `%2F`.
pub fn segment(text: &str) -> String {
    warren::management::percent_encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(segment("orders.v1-x_~"), "orders.v1-x_~");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn the_reason_comes_from_the_body() {
        assert_eq!(
            reason(r#"{"error":"not_authorised","reason":"Not_Authorized"}"#),
            "Not_Authorized"
        );
        assert_eq!(reason(r#"{"error":"not_found"}"#), "not_found");
        assert_eq!(reason("plain text"), "plain text");
        assert_eq!(reason(""), "(no reason given)");
    }
}
