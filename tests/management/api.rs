#![allow(dead_code)] // each test binary that includes this uses a part of it

//! A small blocking client of the management API for tests (ureq): every call answers
//! (status, JSON body, Location header) and never fails on a 4xx/5xx, so tests can assert on
//! RabbitMQ's status codes.

use std::net::SocketAddr;

use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    auth: Option<(String, String)>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
    pub text: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            base: format!("http://{addr}"),
            agent,
            auth: Some(("guest".into(), "guest".into())),
        }
    }

    pub fn as_user(&self, user: &str, password: &str) -> Api {
        Api {
            base: self.base.clone(),
            agent: self.agent.clone(),
            auth: Some((user.into(), password.into())),
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            base: self.base.clone(),
            agent: self.agent.clone(),
            auth: None,
        }
    }

    fn header(&self) -> Option<String> {
        use base64::Engine;
        self.auth.as_ref().map(|(u, p)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            format!("Basic {token}")
        })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call_with(method, path, body, &[])
    }

    /// A GET with an `Accept` header (the Prometheus exporter asks for `application/bert`).
    pub fn get_accepting(&self, path: &str, accept: &str) -> Answer {
        self.call_with("GET", path, None, &[("Accept", accept)])
    }

    fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match self.header() {
            Some(h) => request.header("Authorization", h),
            None => request,
        };
        let request = request.header("Content-Type", "application/json");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request.body(body).expect("a request");
        let mut response = self.agent.run(request).expect("the API answers");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            location,
            text,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    pub fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(body))
    }

    pub fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None)
    }
}

/// Runs blocking API calls off the test's runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking call")
}
