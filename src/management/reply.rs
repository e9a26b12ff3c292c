//! Answers: RabbitMQ's error bodies (`{"error": ..., "reason": ...}`) with their status codes,
//! and AMQP field tables as JSON values (and back, for the arguments a client sends).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use warren_protocol::types::FieldTable;

use crate::definitions::values;

use crate::error::Error;

/// An error answer, as RabbitMQ's management API words it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    pub fn not_found() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }

    pub fn too_large(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "payload_too_large",
            reason: reason.into(),
        }
    }

    pub fn unauthorized(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    pub fn forbidden(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal_server_error",
            reason: reason.into(),
        }
    }
}

/// A broker refusal (the AMQP error a client's method would get) as an HTTP answer: 404 for
/// what does not exist, 400 for the rest (RabbitMQ's management answers so).
impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let reason = error.reply_text();
        match error {
            Error::NotFound(_) => ApiError {
                status: StatusCode::NOT_FOUND,
                error: "not_found",
                reason,
            },
            Error::AccessRefused(_) => ApiError::forbidden(reason),
            _ => ApiError::bad_request(reason),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"Warren Management\""),
            );
        }
        response
    }
}

/// Any path under `/api` that is not a route.
pub async fn not_found_route() -> ApiError {
    ApiError::not_found()
}

/// 201 Created (a PUT that made something) or 204 No Content (one that changed or found it).
pub fn created_or_not(created: bool) -> Response {
    match created {
        true => StatusCode::CREATED.into_response(),
        false => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `{"rate": r}`, RabbitMQ's `*_details`.
pub fn rate(r: f64) -> Value {
    json!({ "rate": r })
}

/// A time as RabbitMQ 3.10's management writes it: `2026-12-05T06:54:58.883+00:00` (UTC).
pub fn timestamp(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// A field table as RabbitMQ's management shows it.
pub fn table_json(table: &FieldTable) -> Value {
    Value::Object(values::table_to_json(table))
}

/// The arguments a client sent as JSON (an object, or null), converted as the definitions
/// import converts them.
pub fn json_table(value: Option<&Value>) -> Result<FieldTable, String> {
    match value {
        None | Some(Value::Null) => Ok(FieldTable::default()),
        Some(Value::Object(map)) => values::json_to_table(map),
        Some(_) => Err("arguments must be a JSON object".into()),
    }
}

/// A JSON body, or 400 with why it is not one.
pub fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// A boolean field of a body (absent: `default`).
pub fn flag(body: &Value, name: &str, default: bool) -> ApiResult<bool> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: expected a boolean, got {other}"
        ))),
    }
}

/// A string field of a body (absent: `default`).
pub fn text<'a>(body: &'a Value, name: &str, default: &'a str) -> ApiResult<&'a str> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: expected a string, got {other}"
        ))),
    }
}
