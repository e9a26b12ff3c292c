//! The import's warnings and lenient reading, and the per-vhost export's shape, on a broker with
//! nothing durable (no server).

use super::*;

fn broker() -> Broker {
    Broker::new(&["/".to_owned()])
}

#[test]
fn accepted_but_ignored_things_are_warnings() {
    let document = serde_json::json!({
        "rabbit_version": "3.8.0",
        "something_new": 1,
        "users": [
            {"name": "old", "password_hash": "x", "hashing_algorithm": "rabbit_password_hashing_md5"},
            {"name": "tagged", "password_hash": "", "password": "pw", "tags": "administrator, monitoring",
             "limits": {"max-connections": -1}}
        ],
        "vhosts": [{"name": "v", "limits": {"max-queues": 3}}],
        "policies": [{"name": "p", "vhost": "/"}],
        "global_parameters": [{"name": "cluster_name", "value": "x"}],
        "parameters": [{"component": "federation-upstream", "name": "up", "vhost": "/", "value": {}}]
    });
    let (broker, users) = (broker(), Users::default());
    let defs = from_json(document.to_string().as_bytes()).unwrap();
    let warnings = import(&broker, &users, &defs).unwrap();
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 5, "{text:?}");
    for part in [
        "unknown key 'something_new'",
        "policy 'p'",
        "global parameter 'cluster_name'",
        "component 'federation-upstream'",
        "user 'old' skipped: hashing algorithm 'rabbit_password_hashing_md5'",
    ] {
        assert!(text.iter().any(|w| w.contains(part)), "{part} in {text:?}");
    }
    let tagged = users
        .list()
        .into_iter()
        .find(|u| u.name == "tagged")
        .unwrap();
    assert_eq!(tagged.tags, ["administrator", "monitoring"]);
    assert_eq!(tagged.max_connections, None);
    assert!(tagged.password.matches("pw") && !users.exists("old") && users.exists("guest"));
    assert_eq!(broker.vhost("v").unwrap().limits().max_queues, Some(3));
}

#[test]
fn the_vhost_export_has_no_users_vhosts_or_permissions() {
    let (broker, users) = (broker(), Users::default());
    let defs = export_vhost(&broker, &users, "/").unwrap();
    assert!(defs.users.is_none() && defs.vhosts.is_none() && defs.permissions.is_none());
    assert_eq!(defs.queues, Some(Vec::new()));
    assert!(export_vhost(&broker, &users, "nope").is_none());
    let json: serde_json::Value = serde_json::from_slice(&to_json(&defs)).unwrap();
    assert!(json.get("users").is_none() && json.get("exchanges").is_some());
    let whole: serde_json::Value =
        serde_json::from_slice(&to_json(&export(&broker, &users))).unwrap();
    assert_eq!(whole["users"][0]["name"], "guest");
    assert_eq!(whole["rabbit_version"], RABBITMQ_VERSION);
}
