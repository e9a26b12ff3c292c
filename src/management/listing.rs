//! Lists as RabbitMQ's management returns them: sorted (`sort`, `sort_reverse`; by name by
//! default), filtered by name (`name`, a substring, or a regex with `use_regex=true`), cut to
//! `columns`, and paged (`page`, `page_size`, at most 500) into RabbitMQ's paged object. When
//! the sort is by name, only the page's items are rendered (their figures read): a page of a
//! list of 100,000 queues reads 100 of them.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::reply::{ApiError, ApiResult};

/// RabbitMQ's largest `page_size`.
const MAX_PAGE_SIZE: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    columns: Option<String>,
}

/// A name filter.
type Matcher = Box<dyn Fn(&str) -> bool>;

/// One item's identity: its vhost ("" where there is none) and name.
pub trait Named {
    fn vhost(&self) -> &str;
    fn name(&self) -> &str;

    /// The name's bytes, for sorting (no UTF-8 check per comparison).
    fn name_bytes(&self) -> &[u8] {
        self.name().as_bytes()
    }

    /// The value of a sort field without rendering the item (`None`: render to find it).
    fn sort_value(&self, _path: &str) -> Option<f64> {
        None
    }
}

impl ListQuery {
    fn page(&self) -> ApiResult<Option<(usize, usize)>> {
        let Some(page) = &self.page else {
            return Ok(None);
        };
        let page: usize = page
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::bad_request("page: must be a positive integer"))?;
        let size = match &self.page_size {
            None => 100,
            Some(size) => size
                .parse()
                .ok()
                .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "page_size: must be an integer from 1 to {MAX_PAGE_SIZE}"
                    ))
                })?,
        };
        Ok(Some((page, size)))
    }

    fn reverse(&self) -> bool {
        self.sort_reverse.as_deref() == Some("true")
    }

    /// The name filter, as a predicate.
    fn matcher(&self) -> ApiResult<Matcher> {
        let Some(pattern) = self.name.clone().filter(|n| !n.is_empty()) else {
            return Ok(Box::new(|_| true));
        };
        if self.use_regex.as_deref() == Some("true") {
            let regex = regex::Regex::new(&pattern)
                .map_err(|e| ApiError::bad_request(format!("name: invalid regex: {e}")))?;
            return Ok(Box::new(move |name| regex.is_match(name)));
        }
        let lower = pattern.to_lowercase();
        Ok(Box::new(move |name| name.to_lowercase().contains(&lower)))
    }
}

/// Sorts, filters, pages and renders `items`.
pub fn list<T: Named>(
    mut items: Vec<T>,
    query: &ListQuery,
    render: impl Fn(&T) -> Value,
) -> ApiResult<Value> {
    let total = items.len();
    let matches = query.matcher()?;
    items.retain(|item| matches(item.name()));
    let filtered = items.len();
    let page = query.page()?;
    let sort = query.sort.as_deref().filter(|s| !s.is_empty());
    let fast = sort.filter(|path| items.first().is_some_and(|i| i.sort_value(path).is_some()));
    let mut rendered: Vec<Value> = match sort {
        Some(path) if fast.is_some() => {
            // Sorted by a figure the items give without being rendered: only the page is.
            let mut keyed: Vec<(f64, T)> = items
                .into_iter()
                .map(|item| (item.sort_value(path).unwrap_or(0.0), item))
                .collect();
            keyed.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
            if query.reverse() {
                keyed.reverse();
            }
            let (skip, take) = window(page, filtered);
            let page = keyed.iter().skip(skip).take(take);
            page.map(|(_, item)| render(item)).collect()
        }
        None | Some("name") | Some("vhost") => {
            match sort {
                Some("vhost") => items.sort_by(|a, b| by_vhost(a).cmp(&by_vhost(b))),
                _ => items.sort_by(|a, b| by_name(a).cmp(&by_name(b))),
            }
            if query.reverse() {
                items.reverse();
            }
            let (skip, take) = window(page, filtered);
            items.iter().skip(skip).take(take).map(&render).collect()
        }
        Some(path) => {
            let mut all: Vec<Value> = items.iter().map(&render).collect();
            all.sort_by(|a, b| compare(field(a, path), field(b, path)));
            if query.reverse() {
                all.reverse();
            }
            let (skip, take) = window(page, filtered);
            all.into_iter().skip(skip).take(take).collect()
        }
    };
    if let Some(columns) = &query.columns {
        let columns: Vec<&str> = columns.split(',').map(str::trim).collect();
        rendered = rendered.iter().map(|item| only(item, &columns)).collect();
    }
    Ok(match page {
        None => Value::Array(rendered),
        Some((page, size)) => json!({
            "filtered_count": filtered,
            "item_count": rendered.len(),
            "items": rendered,
            "page": page,
            "page_count": filtered.div_ceil(size).max(1),
            "page_size": size,
            "total_count": total,
        }),
    })
}

fn by_name<T: Named>(item: &T) -> (&[u8], &[u8]) {
    (item.name_bytes(), item.vhost().as_bytes())
}

fn by_vhost<T: Named>(item: &T) -> (&[u8], &[u8]) {
    (item.vhost().as_bytes(), item.name_bytes())
}

/// (skip, take) for a page of `count` items (everything without paging).
fn window(page: Option<(usize, usize)>, count: usize) -> (usize, usize) {
    match page {
        None => (0, count),
        Some((page, size)) => ((page - 1).saturating_mul(size), size),
    }
}

/// The value at a dotted path (`message_stats.publish_details.rate`).
fn field<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(item, |value, key| value.get(key))
}

/// Missing and null first, then numbers by value, then strings.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// `item` with only `columns` (dotted paths keep their nesting).
fn only(item: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for column in columns {
        let Some(value) = field(item, column) else {
            continue;
        };
        let mut keys = column.split('.').peekable();
        let mut at = &mut out;
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                at.insert(key.to_owned(), value.clone());
                break;
            }
            let next = at
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(map) = next else { break };
            at = map;
        }
    }
    Value::Object(out)
}
