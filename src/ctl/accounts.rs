//! The commands about the broker's accounts and definitions as a whole: users, permissions,
//! vhosts, and the export and import of definitions (RabbitMQ's `/api/definitions`).
//!
//! It never prints; `mod.rs` does.

use std::path::Path;

use serde_json::{json, Value};

use super::client::{segment, Client, CtlError};
use super::commands::Output;

fn definitions_path(vhost: Option<&str>) -> String {
    match vhost {
        Some(vhost) => format!("/api/definitions/{}", segment(vhost)),
        None => "/api/definitions".to_owned(),
    }
}

/// `export [FILE]`: `GET /api/definitions`, pretty-printed to FILE or stdout.
pub fn export(
    client: &Client,
    vhost: Option<&str>,
    file: Option<&Path>,
) -> Result<Output, CtlError> {
    let definitions = client.get(&definitions_path(vhost))?;
    let Some(file) = file else {
        return Ok(Output::Json(definitions));
    };
    let text = serde_json::to_string_pretty(&definitions)
        .map_err(|e| CtlError::Local(format!("cannot write the definitions: {e}")))?;
    std::fs::write(file, text + "\n")
        .map_err(|e| CtlError::Local(format!("{}: {e}", file.display())))?;
    Ok(Output::Done(format!(
        "exported the definitions to {}",
        file.display()
    )))
}

/// `import FILE`: the file's JSON, as it is, to `POST /api/definitions`.
pub fn import(client: &Client, vhost: Option<&str>, file: &Path) -> Result<Output, CtlError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CtlError::Local(format!("{}: {e}", file.display())))?;
    let definitions: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Local(format!("{}: not JSON: {e}", file.display())))?;
    if !definitions.is_object() {
        return Err(CtlError::Local(format!(
            "{}: expected a JSON object of definitions",
            file.display()
        )));
    }
    client.post(&definitions_path(vhost), &definitions)?;
    Ok(Output::Done(format!(
        "imported the definitions from {}",
        file.display()
    )))
}

pub fn add_user(
    client: &Client,
    name: &str,
    password: &str,
    tags: &[String],
) -> Result<Output, CtlError> {
    let body = json!({"password": password, "tags": tags.join(",")});
    client.put(&format!("/api/users/{}", segment(name)), &body)?;
    Ok(Output::Done(format!("added user '{name}'")))
}

pub fn delete_user(client: &Client, name: &str) -> Result<Output, CtlError> {
    client.delete(&format!("/api/users/{}", segment(name)), &[])?;
    Ok(Output::Done(format!("deleted user '{name}'")))
}

/// `[configure, write, read]` for `user` in `vhost`.
pub fn set_permissions(
    client: &Client,
    vhost: &str,
    user: &str,
    [configure, write, read]: [&String; 3],
) -> Result<Output, CtlError> {
    let path = format!("/api/permissions/{}/{}", segment(vhost), segment(user));
    let body = json!({"configure": configure, "write": write, "read": read});
    client.put(&path, &body)?;
    Ok(Output::Done(format!(
        "set permissions of user '{user}' in vhost '{vhost}'"
    )))
}

pub fn clear_permissions(client: &Client, vhost: &str, user: &str) -> Result<Output, CtlError> {
    let path = format!("/api/permissions/{}/{}", segment(vhost), segment(user));
    client.delete(&path, &[])?;
    Ok(Output::Done(format!(
        "cleared permissions of user '{user}' in vhost '{vhost}'"
    )))
}

pub fn add_vhost(client: &Client, name: &str) -> Result<Output, CtlError> {
    client.put(&format!("/api/vhosts/{}", segment(name)), &json!({}))?;
    Ok(Output::Done(format!("added vhost '{name}'")))
}

pub fn delete_vhost(client: &Client, name: &str) -> Result<Output, CtlError> {
    client.delete(&format!("/api/vhosts/{}", segment(name)), &[])?;
    Ok(Output::Done(format!("deleted vhost '{name}'")))
}
