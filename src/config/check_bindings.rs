//! The checks of `[[bindings]]`: both ends declared in the file or built in (never the default
//! exchange), topic binding keys free of empty words, headers-exchange arguments the broker
//! takes, no binding twice.

use toml::Spanned;

use super::check::Names;
use super::check_topology::{Checker, Declared, BUILT_IN};
use super::model::{BindingEntry, DestinationType};
use super::BindingDef;
use crate::broker::exchange::{encode_arguments, ExchangeKind};
use crate::broker::headers::HeadersMatch;

impl Checker<'_, '_> {
    pub(super) fn binding(
        &mut self,
        entry: BindingEntry,
        names: &mut Names,
        declared: &Declared,
    ) -> Option<BindingDef> {
        let mut ok = true;
        let vhost = self.vhost(entry.vhost.as_ref(), &mut ok);
        let source = entry.source.get_ref().clone();
        let destination = entry.destination.get_ref().clone();
        let kind = self.exchange_kind(&vhost, &entry.source, "from", declared, &mut ok);
        self.binding_destination(&entry, &vhost, declared, &mut ok);
        let routing_key = self.binding_key(&entry, kind, &mut ok);
        let arguments = self.arguments(&entry.arguments, &mut ok);
        if kind == Some(ExchangeKind::Headers) {
            if let Err(why) = HeadersMatch::parse(&arguments) {
                let at = entry
                    .arguments
                    .get("x-match")
                    .map_or_else(|| entry.source.span(), |value| value.span());
                self.problem(&at, format!("headers binding: {why}"));
                ok = false;
            }
        }
        let identity = format!(
            "{vhost}\0{source}\0{:?}\0{destination}\0{routing_key}\0{:?}",
            entry.destination_type,
            encode_arguments(&arguments)
        );
        let shown = format!(
            "from '{source}' to {} '{destination}' with key '{routing_key}' in vhost '{vhost}'",
            match entry.destination_type {
                DestinationType::Queue => "queue",
                DestinationType::Exchange => "exchange",
            }
        );
        if let Some(problem) = names.add(self.source, identity, &entry.source, &shown) {
            self.problems.push(problem);
            ok = false;
        }
        Some(BindingDef {
            vhost,
            source,
            destination,
            destination_type: entry.destination_type,
            routing_key,
            arguments,
            origin: self.source.locate(entry.source.span().start),
        })
        .filter(|_| ok)
    }

    /// A binding's destination must be a queue declared in the file, or an exchange declared in
    /// it or built in.
    fn binding_destination(
        &mut self,
        entry: &BindingEntry,
        vhost: &str,
        declared: &Declared,
        ok: &mut bool,
    ) {
        let destination = entry.destination.get_ref();
        match entry.destination_type {
            DestinationType::Queue => {
                if !declared
                    .queues
                    .contains(&(vhost.to_owned(), destination.clone()))
                {
                    self.problem(
                        &entry.destination.span(),
                        format!("binding to queue '{destination}' in vhost '{vhost}', which is not declared in this file"),
                    );
                    *ok = false;
                }
            }
            DestinationType::Exchange => {
                self.exchange_kind(vhost, &entry.destination, "to", declared, ok);
            }
        }
    }

    /// A binding's routing key ("" when not given): at most 255 bytes, and for a topic exchange
    /// (`kind`, its source's type) free of empty words.
    fn binding_key(
        &mut self,
        entry: &BindingEntry,
        kind: Option<ExchangeKind>,
        ok: &mut bool,
    ) -> String {
        let routing_key = entry
            .routing_key
            .as_ref()
            .map(|key| key.get_ref().clone())
            .unwrap_or_default();
        let key_at = entry
            .routing_key
            .as_ref()
            .map_or_else(|| entry.source.span(), |key| key.span());
        if routing_key.len() > 255 {
            self.problem(&key_at, "routing_key is longer than 255 bytes".into());
            *ok = false;
        }
        if kind == Some(ExchangeKind::Topic) && has_empty_word(&routing_key) {
            self.problem(
                &key_at,
                format!("topic binding key '{routing_key}' has an empty word (words are separated by single dots: 'a.b', 'a.*', 'a.#')"),
            );
            *ok = false;
        }
        routing_key
    }

    /// The type of an exchange a binding names (`side`: "from" its source, "to" its
    /// destination); a problem if it is neither declared in the file nor built in.
    fn exchange_kind(
        &mut self,
        vhost: &str,
        name: &Spanned<String>,
        side: &str,
        declared: &Declared,
        ok: &mut bool,
    ) -> Option<ExchangeKind> {
        let text = name.get_ref();
        if text.is_empty() {
            let why = match side {
                "from" => "binding from the default exchange (\"\"): every queue is bound to it by its name already",
                _ => "binding to the default exchange (\"\") is not allowed",
            };
            self.problem(&name.span(), why.into());
            *ok = false;
            return None;
        }
        if let Some((_, kind)) = BUILT_IN.iter().find(|(built_in, _)| built_in == text) {
            return Some(*kind);
        }
        match declared.exchanges.get(&(vhost.to_owned(), text.clone())) {
            Some(kind) => *kind,
            None => {
                self.problem(
                    &name.span(),
                    format!("binding {side} exchange '{text}' in vhost '{vhost}', which is neither declared in this file nor built in"),
                );
                *ok = false;
                None
            }
        }
    }
}

/// A topic binding key with an empty word: `a..b`, `.a`, `a.` (an empty key is one word that
/// matches the empty routing key, as in RabbitMQ, and is allowed).
fn has_empty_word(key: &str) -> bool {
    !key.is_empty() && key.split('.').any(str::is_empty)
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_words() {
        for key in ["a..b", ".a", "a.", ".", "a.#..b"] {
            assert!(super::has_empty_word(key), "{key}");
        }
        for key in ["", "a", "a.b", "*.#", "#"] {
            assert!(!super::has_empty_word(key), "{key}");
        }
    }
}
