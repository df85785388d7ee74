//! A request's headers as the message path reads them: a list in the order they came,
//! looked up by a scan. A request carries a handful of headers and the proxy asks
//! after a dozen names; scanning the list costs less than hashing each name into a
//! `HeaderMap`, which also allocates its index for every request.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A request's headers, repeats kept, in the order they came.
#[derive(Debug)]
pub struct Headers(Vec<(HeaderName, HeaderValue)>);

impl Headers {
    pub fn with_capacity(n: usize) -> Headers {
        Headers(Vec::with_capacity(n))
    }

    pub fn push(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

/// Header lookups, on a request's [`Headers`] or on a `HeaderMap`.
pub trait Lookup {
    /// Every value of `name`, in order.
    fn all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a HeaderValue>;

    /// The first value of `name`.
    fn first<'a>(&'a self, name: &HeaderName) -> Option<&'a HeaderValue> {
        self.all(name).next()
    }
}

impl Lookup for Headers {
    fn all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

impl Lookup for HeaderMap {
    fn all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.get_all(name).iter()
    }

    fn first<'a>(&'a self, name: &HeaderName) -> Option<&'a HeaderValue> {
        self.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_and_a_map_answer_alike() {
        let pairs = [("x-a", "1"), ("prefer", "p1"), ("X-A", "2"), ("host", "h")];
        let mut list = Headers::with_capacity(pairs.len());
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            let (n, v) = (
                HeaderName::try_from(n).unwrap(),
                HeaderValue::from_static(v),
            );
            list.push(n.clone(), v.clone());
            map.append(n, v);
        }
        for name in ["x-a", "prefer", "host", "absent"] {
            let name = HeaderName::from_static(name);
            let from_list: Vec<_> = list.all(&name).collect();
            let from_map: Vec<_> = map.all(&name).collect();
            assert_eq!(from_list, from_map, "{name}");
            assert_eq!(list.first(&name), map.first(&name), "{name}");
        }
        assert_eq!(list.iter().count(), 4);
    }
}
