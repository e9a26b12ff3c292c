//! Open connections counted per user and per vhost, against RabbitMQ's limits on them (a user's
//! `max_connections`, a vhost's `max_connections`). One short mutex; taken once when a
//! connection opens a vhost and once when it ends, never on the message path.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Error;

/// The counts of open connections.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    users: HashMap<String, u32>,
    vhosts: HashMap<String, u32>,
}

/// A connection counted by [`Tally::admit`]; counted out when dropped.
#[derive(Debug)]
pub struct Admitted {
    tally: Arc<Tally>,
    user: String,
    vhost: String,
}

impl Tally {
    /// Counts a connection of `user` into `vhost` if both are under their limits, checked in
    /// RabbitMQ's order (the vhost's, then the user's), each refusal a 530 with RabbitMQ's text.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        vhost: &str,
        user_limit: Option<u32>,
        vhost_limit: Option<u32>,
    ) -> Result<Admitted, Error> {
        let mut counts = self.counts.lock();
        let in_vhost = counts.vhosts.get(vhost).copied().unwrap_or(0);
        if let Some(limit) = vhost_limit.filter(|limit| in_vhost >= *limit) {
            return Err(Error::NotAllowed(format!(
                "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
            )));
        }
        let of_user = counts.users.get(user).copied().unwrap_or(0);
        if let Some(limit) = user_limit.filter(|limit| of_user >= *limit) {
            return Err(Error::NotAllowed(format!(
                "connection refused for user '{user}': user connection limit ({limit}) is reached"
            )));
        }
        *counts.vhosts.entry(vhost.to_owned()).or_default() += 1;
        *counts.users.entry(user.to_owned()).or_default() += 1;
        Ok(Admitted {
            tally: Arc::clone(self),
            user: user.to_owned(),
            vhost: vhost.to_owned(),
        })
    }

    /// Open connections of `user` (all vhosts).
    #[cfg(test)]
    fn of_user(&self, user: &str) -> u32 {
        self.counts.lock().users.get(user).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.tally.counts.lock();
        let Counts { users, vhosts } = &mut *counts;
        for (map, key) in [(users, &self.user), (vhosts, &self.vhost)] {
            if let Some(count) = map.get_mut(key.as_str()) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(key.as_str());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_vhost_then_per_user_and_counted_out_on_drop() {
        let tally = Arc::new(Tally::default());
        let a = tally.admit("u", "v", Some(2), Some(3)).unwrap();
        let b = tally.admit("u", "v", Some(2), Some(3)).unwrap();
        let refused = tally.admit("u", "w", Some(2), None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "connection refused for user 'u': user connection limit (2) is reached"
        );
        let c = tally.admit("other", "v", None, Some(3)).unwrap();
        let refused = tally.admit("other", "v", None, Some(3)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "access to vhost 'v' refused for user 'other': connection limit (3) is reached"
        );
        assert!(tally.admit("x", "y", Some(0), None).is_err());
        drop((a, b, c));
        assert_eq!(tally.of_user("u"), 0);
        assert!(tally.counts.lock().vhosts.is_empty());
        let _again = tally.admit("u", "v", Some(2), Some(3)).unwrap();
    }
}
