//! A small parser for connection URLs (`postgresql://`, `mysql://`, `redis://`):
//! `scheme://[user[:password]@]host[:port][/path][?k=v&...]` with percent-decoding.

use crate::{Error, Result, Secret};

/// A parsed connection URL. The password is a [`Secret`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnUrl {
    /// Scheme (`postgresql`, `postgres`, `mysql`, `mariadb`, `redis`, `rediss`).
    pub scheme: String,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Host name, IP, or (percent-encoded in the URL) a socket directory / path.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Path without the leading `/` (database name / number).
    pub path: Option<String>,
    /// Query parameters.
    pub params: Vec<(String, String)>,
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Config("bad percent-encoding in URL".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Config("URL is not UTF-8 after decoding".into()))
}

impl ConnUrl {
    /// Parse `url`. Errors never include the URL (it may hold a password).
    ///
    /// # Errors
    /// [`Error::Config`] for anything that is not `scheme://...`.
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::Config("URL without scheme://".into()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut out = ConnUrl {
            scheme: scheme.to_ascii_lowercase(),
            ..Default::default()
        };
        if let Some(ui) = userinfo {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if !u.is_empty() {
                out.user = Some(decode(u)?);
            }
            if let Some(p) = p {
                out.password = Some(Secret::new(decode(p)?));
            }
        }
        let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| Error::Config("unclosed [ in URL host".into()))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (decode(h)?, Some(p)),
                None => (decode(hostport)?, None),
            }
        };
        if !host.is_empty() {
            out.host = Some(host);
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            out.port = Some(
                p.parse()
                    .map_err(|_| Error::Config("bad port in URL".into()))?,
            );
        }
        if let Some(p) = path.filter(|p| !p.is_empty()) {
            out.path = Some(decode(p)?);
        }
        for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            out.params.push((decode(k)?, decode(v)?));
        }
        Ok(out)
    }

    /// Value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = ConnUrl::parse("postgresql://al%40ice:p%3Ass@db.example:6543/shop?sslmode=require")
            .unwrap();
        assert_eq!(u.scheme, "postgresql");
        assert_eq!(u.user.as_deref(), Some("al@ice"));
        assert_eq!(u.password.as_ref().map(|p| p.expose()), Some("p:ss"));
        assert_eq!(u.host.as_deref(), Some("db.example"));
        assert_eq!(u.port, Some(6543));
        assert_eq!(u.path.as_deref(), Some("shop"));
        assert_eq!(u.param("sslmode"), Some("require"));
        assert!(!format!("{u:?}").contains("p:ss"));
    }

    #[test]
    fn parses_socket_host_and_ipv6() {
        let u = ConnUrl::parse("postgres://%2Ftmp%2Fsock:5432/db").unwrap();
        assert_eq!(u.host.as_deref(), Some("/tmp/sock"));
        let u = ConnUrl::parse("redis://[::1]:6380/2").unwrap();
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(6380));
        assert_eq!(u.path.as_deref(), Some("2"));
        let u = ConnUrl::parse("redis://:secret@h").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.password.unwrap().expose(), "secret");
    }

    #[test]
    fn errors_do_not_echo_the_url() {
        let e = ConnUrl::parse("mysql://u:hunter2@h:notaport/x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(ConnUrl::parse("no-scheme").is_err());
    }
}
