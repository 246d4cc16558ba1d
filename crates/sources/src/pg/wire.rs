//! A lean client of PostgreSQL's wire protocol (version 3), for the one job where libpq's
//! per-row cost shows in a backup: reading `COPY … TO STDOUT` (docs/PERFORMANCE.md, the
//! in-process reader's plan, item 6: on 2 cores a table read through `psql` ranges reached
//! 1.07× `pg_dump -Fc`, through this loop 1.25×, because the client's CPU comes out of
//! the server's share).
//!
//! Startup, authentication (trust, cleartext, MD5, SCRAM-SHA-256 without channel binding;
//! the message framing and both hashes are `postgres-protocol`'s), simple queries, and a
//! `COPY` reader that appends rows straight into the caller's buffer, one copy from the
//! socket's buffer. No TLS, no GSSAPI, no `.pgpass`, no service files: a caller that needs
//! any of those keeps `pg_dump`. Over TCP that means `sslmode=disable` only, since libpq's
//! default (`prefer`) would encrypt what this client sends in clear.
//!
//! Not used by the backup path yet: the dump that assembles `pg_dump`'s schema and these
//! rows is the plan's remaining work.

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::PgConnection;
use crate::{Error, Result, Secret};

/// Where a [`WireConn`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireAddress {
    /// A Unix socket file (`/var/run/postgresql/.s.PGSQL.5432`).
    Socket(PathBuf),
    /// A host name or address and a port, in clear (`sslmode=disable`).
    Tcp(String, u16),
}

impl WireAddress {
    /// The socket file libpq would use for a socket directory and a port.
    pub fn socket(dir: impl Into<PathBuf>, port: u16) -> Self {
        WireAddress::Socket(dir.into().join(format!(".s.PGSQL.{port}")))
    }
}

impl std::fmt::Display for WireAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireAddress::Socket(p) => write!(f, "{}", p.display()),
            WireAddress::Tcp(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Where and as whom a [`WireConn`] connects.
#[derive(Debug, Clone)]
pub struct WireTarget {
    /// Socket file or TCP address.
    pub address: WireAddress,
    /// Role name.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Password, when the server asks for one (cleartext, MD5 or SCRAM-SHA-256).
    pub password: Option<Secret>,
    /// More startup parameters (`client_encoding`, `DateStyle`, `application_name`, …).
    pub parameters: Vec<(String, String)>,
}

impl WireTarget {
    /// The target libpq would connect to for `conn` and database `db`, reading libpq's
    /// variables with `env` (the process environment in [`from_connection`]), or why this
    /// client cannot connect as libpq would, so that the caller keeps `pg_dump` alone.
    ///
    /// Settings come as the tools get them: `conn`'s fields, then `conn.env` (variables
    /// from a URL), then `env`. Refused: several hosts, `PGHOSTADDR`, abstract sockets,
    /// TCP unless `sslmode=disable` (libpq's default `prefer` would use TLS where the
    /// server offers it), `PGREQUIRESSL`, `gssencmode=require`, `channel_binding=require`,
    /// service files, `target_session_attrs` other than `any`. A password only in a
    /// `.pgpass` file is not read: the server's request for it fails the connection, and
    /// the caller falls back the same way. Without a host, libpq's compiled-in socket
    /// directory is guessed: `/var/run/postgresql` (Debian's, Fedora's) where it exists,
    /// else `/tmp` (PostgreSQL's own); a wrong guess fails to connect, and falls back.
    ///
    /// [`from_connection`]: Self::from_connection
    ///
    /// # Errors
    /// The reason, naming the setting.
    pub fn from_settings(
        conn: &PgConnection,
        db: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<WireTarget, String> {
        let var = |name: &str| -> Option<String> {
            conn.env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(name))
                .filter(|v| !v.is_empty())
        };
        for (name, why) in [
            ("PGHOSTADDR", "a host address (hostaddr)"),
            ("PGSERVICE", "a service (PGSERVICE)"),
            ("PGSERVICEFILE", "a service file (PGSERVICEFILE)"),
        ] {
            if var(name).is_some() {
                return Err(format!("{why} is set"));
            }
        }
        if var("PGREQUIRESSL").as_deref() == Some("1") {
            return Err("PGREQUIRESSL asks for TLS".into());
        }
        if var("PGGSSENCMODE").as_deref() == Some("require") {
            return Err("gssencmode=require asks for GSSAPI encryption".into());
        }
        if var("PGCHANNELBINDING").as_deref() == Some("require") {
            return Err("channel_binding=require needs TLS".into());
        }
        if let Some(attrs) = var("PGTARGETSESSIONATTRS").filter(|a| a != "any") {
            return Err(format!("target_session_attrs={attrs}"));
        }
        let port = match conn.port {
            Some(p) => p,
            None => match var("PGPORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("PGPORT {p:?} is not a port"))?,
                None => 5432,
            },
        };
        let host = conn
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| var("PGHOST"));
        let address = match host {
            Some(h) if h.contains(',') => return Err(format!("several hosts ({h})")),
            Some(h) if h.starts_with('@') => return Err(format!("an abstract socket ({h})")),
            Some(h) if h.starts_with('/') => WireAddress::socket(h, port),
            Some(h) => {
                let mode = var("PGSSLMODE").unwrap_or_else(|| "prefer".into());
                if mode != "disable" {
                    return Err(format!(
                        "TCP to {h} with sslmode={mode}: libpq may use TLS, which this client does not speak"
                    ));
                }
                WireAddress::Tcp(h, port)
            }
            None => {
                let debian = std::path::Path::new("/var/run/postgresql");
                WireAddress::socket(
                    if debian.is_dir() {
                        debian
                    } else {
                        std::path::Path::new("/tmp")
                    },
                    port,
                )
            }
        };
        let user = match conn.user.clone().or_else(|| var("PGUSER")) {
            Some(u) => u,
            None => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .ok_or("no user name: PGUSER is unset and the effective user has no name")?,
        };
        let password = conn
            .password
            .clone()
            .or_else(|| var("PGPASSWORD").map(Secret::new));
        let mut parameters = Vec::new();
        for (variable, parameter) in [
            ("PGOPTIONS", "options"),
            ("PGAPPNAME", "application_name"),
            ("PGCLIENTENCODING", "client_encoding"),
        ] {
            if let Some(v) = var(variable) {
                parameters.push((parameter.to_string(), v));
            }
        }
        Ok(WireTarget {
            address,
            user,
            database: db.to_string(),
            password,
            parameters,
        })
    }

    /// [`from_settings`](Self::from_settings) with the process environment.
    ///
    /// # Errors
    /// As [`from_settings`](Self::from_settings).
    pub fn from_connection(
        conn: &PgConnection,
        db: &str,
    ) -> std::result::Result<WireTarget, String> {
        Self::from_settings(conn, db, |name| std::env::var(name).ok())
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection, between queries.
pub struct WireConn {
    w: Stream,
    r: BufReader<Stream>,
    /// `database "x" at /run/postgresql/.s.PGSQL.5432`, for errors.
    what: String,
    /// Set while a [`CopyOut`] was dropped before its end: the connection is unusable.
    broken: bool,
}

/// A server's `ErrorResponse` as an I/O error: severity, SQLSTATE, message and detail.
fn server_error(body: &postgres_protocol::message::backend::ErrorResponseBody) -> io::Error {
    let (mut severity, mut code, mut message, mut detail) = (
        String::from("ERROR"),
        String::new(),
        String::new(),
        String::new(),
    );
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            // 'V' is never localised; 'S' may be.
            b'V' => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = format!(" ({value})"),
            _ => {}
        }
    }
    io::Error::other(format!("{severity} {code}: {message}{detail}"))
}

impl WireConn {
    /// Connect, authenticate and wait until the server is ready for a query.
    ///
    /// # Errors
    /// [`Error::Io`] naming the database and the address: the connection failed, the
    /// server refused (its message), or it asked for a password none was given for, or
    /// for a method this client does not speak (GSSAPI, SSPI).
    pub fn connect(target: &WireTarget) -> Result<WireConn> {
        let what = format!(
            "database {:?} as {:?} at {}",
            target.database, target.user, target.address
        );
        let io_err = |source| Error::Io {
            context: format!("connecting to {what}"),
            source,
        };
        let stream = match &target.address {
            WireAddress::Socket(p) => UnixStream::connect(p).map(Stream::Unix),
            WireAddress::Tcp(h, port) => TcpStream::connect((h.as_str(), *port)).map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
        .map_err(io_err)?;
        let r = BufReader::with_capacity(1 << 20, stream.try_clone().map_err(io_err)?);
        let mut conn = WireConn {
            w: stream,
            r,
            what: what.clone(),
            broken: false,
        };
        conn.startup(target).map_err(io_err)?;
        Ok(conn)
    }

    fn send(&mut self, build: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> io::Result<()> {
        let mut buf = BytesMut::new();
        build(&mut buf)?;
        self.w.write_all(&buf)
    }

    /// The next message, its header read first; `CopyData` bodies land in `rows` (appended)
    /// and come back as `None`, every other message parsed.
    fn next(&mut self, rows: &mut Vec<u8>) -> io::Result<Option<Message>> {
        let mut header = [0u8; 5];
        self.r.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let body = len
            .checked_sub(4)
            .ok_or_else(|| io::Error::other("invalid message length from the server"))?;
        if header[0] == b'd' {
            let at = rows.len();
            rows.resize(at + body, 0);
            self.r.read_exact(&mut rows[at..])?;
            return Ok(None);
        }
        let mut buf = BytesMut::with_capacity(5 + body);
        buf.extend_from_slice(&header);
        buf.resize(5 + body, 0);
        self.r.read_exact(&mut buf[5..])?;
        match Message::parse(&mut buf)? {
            Some(m) => Ok(Some(m)),
            None => Err(io::Error::other("incomplete message from the server")),
        }
    }

    /// The next message that is not a notice or a parameter report.
    fn next_message(&mut self) -> io::Result<Message> {
        loop {
            match self.next(&mut Vec::new())? {
                Some(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                Some(m) => return Ok(m),
                None => return Err(io::Error::other("unexpected COPY data from the server")),
            }
        }
    }

    fn startup(&mut self, t: &WireTarget) -> io::Result<()> {
        let mut params: Vec<(&str, &str)> = vec![("user", &t.user), ("database", &t.database)];
        params.extend(t.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.send(|b| frontend::startup_message(params, b))?;
        let password = || {
            t.password
                .as_ref()
                .map(|p| p.expose().as_bytes())
                .ok_or_else(|| {
                    io::Error::other("the server asks for a password and none was given")
                })
        };
        loop {
            match self.next_message()? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    let pw = password()?;
                    self.send(|b| frontend::password_message(pw, b))?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(t.user.as_bytes(), password()?, body.salt());
                    self.send(|b| frontend::password_message(hash.as_bytes(), b))?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms.next()? {
                        scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(io::Error::other(
                            "the server offers no SASL mechanism but SCRAM-SHA-256 with channel binding, which needs TLS",
                        ));
                    }
                    self.scram(password()?)?;
                }
                Message::ErrorResponse(e) => return Err(server_error(&e)),
                _ => {
                    return Err(io::Error::other(
                        "the server asks for an authentication method this client does not speak (GSSAPI, SSPI)",
                    ))
                }
            }
        }
        self.until_ready(&mut Vec::new(), &mut None).map(drop)
    }

    fn scram(&mut self, password: &[u8]) -> io::Result<()> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        self.send(|b| frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), b))?;
        match self.next_message()? {
            Message::AuthenticationSaslContinue(body) => scram.update(body.data())?,
            Message::ErrorResponse(e) => return Err(server_error(&e)),
            _ => return Err(io::Error::other("unexpected message during SCRAM")),
        }
        self.send(|b| frontend::sasl_response(scram.message(), b))?;
        match self.next_message()? {
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()),
            Message::ErrorResponse(e) => Err(server_error(&e)),
            _ => Err(io::Error::other("unexpected message during SCRAM")),
        }
    }

    /// Reads up to `ReadyForQuery`: rows of every `DataRow` into `rows` (text, `None` for
    /// NULL), the first error kept and returned after the server is ready again.
    fn until_ready(
        &mut self,
        copy: &mut Vec<u8>,
        rows: &mut Option<&mut Vec<Vec<Option<String>>>>,
    ) -> io::Result<()> {
        let mut failed = None;
        loop {
            match self.next(copy)? {
                Some(Message::ReadyForQuery(_)) => break,
                Some(Message::ErrorResponse(e)) => {
                    failed.get_or_insert(server_error(&e));
                }
                Some(Message::DataRow(row)) => {
                    if let Some(rows) = rows.as_mut() {
                        let buf = row.buffer();
                        let mut ranges = row.ranges();
                        let mut values = Vec::new();
                        while let Some(r) = ranges.next()? {
                            values.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                        }
                        rows.push(values);
                    }
                }
                Some(Message::CopyInResponse(_)) => {
                    // Not for this client: end it so that the connection stays usable.
                    self.send(|b| frontend::copy_fail("COPY FROM is not supported here", b))?;
                }
                _ => {}
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Io {
                context: self.what.clone(),
                source: io::Error::other("a COPY was abandoned on this connection"),
            });
        }
        Ok(())
    }

    /// Run `sql` (one or more statements) and return the rows of its results, as text.
    ///
    /// # Errors
    /// [`Error::Io`] naming the statement and the database: the server's error (severity,
    /// SQLSTATE, message); the connection stays usable after it.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.usable()?;
        let mut rows = Vec::new();
        self.send(|b| frontend::query(sql, b))
            .and_then(|()| self.until_ready(&mut Vec::new(), &mut Some(&mut rows)))
            .map_err(|source| Error::Io {
                context: format!("{} in {}", short(sql), self.what),
                source,
            })?;
        Ok(rows)
    }

    /// Start `sql`, a `COPY … TO STDOUT`, and return its rows as a reader.
    ///
    /// # Errors
    /// As [`query`](Self::query); also when `sql` is not a `COPY … TO STDOUT`.
    pub fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        self.usable()?;
        let context = format!("{} in {}", short(sql), self.what);
        let started = self.send(|b| frontend::query(sql, b)).and_then(|()| loop {
            match self.next_message()? {
                Message::CopyOutResponse(_) => return Ok(()),
                Message::ErrorResponse(e) => {
                    let err = server_error(&e);
                    self.until_ready(&mut Vec::new(), &mut None)?;
                    return Err(err);
                }
                Message::ReadyForQuery(_) => {
                    return Err(io::Error::other("the statement is not a COPY … TO STDOUT"))
                }
                _ => {}
            }
        });
        started.map_err(|source| Error::Io { context, source })?;
        self.broken = true;
        Ok(CopyOut {
            conn: self,
            pending: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

/// The first line of a statement, shortened, for error messages.
fn short(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or_default();
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("`{}…`", &line[..i]),
        None => format!("`{line}`"),
    }
}

/// The rows of a `COPY … TO STDOUT`, as the server sends them (text format: one line per
/// row). Read it to the end to use the connection again.
pub struct CopyOut<'c> {
    conn: &'c mut WireConn,
    pending: Vec<u8>,
    pos: usize,
    done: bool,
}

impl CopyOut<'_> {
    /// Append whole rows to `buf` until it holds at least `want` bytes or the `COPY` ends;
    /// returns false once it has ended (and the connection is ready again).
    ///
    /// # Errors
    /// The server's error (the connection stays usable), or the connection's.
    pub fn read_rows(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
        if self.pos < self.pending.len() {
            buf.extend_from_slice(&self.pending[self.pos..]);
            self.pending.clear();
            self.pos = 0;
        }
        while !self.done && buf.len() < want {
            match self.conn.next(buf)? {
                None => {}
                Some(Message::CopyDone) => {}
                Some(Message::CommandComplete(_)) => {
                    self.done = true;
                    self.conn.until_ready(&mut Vec::new(), &mut None)?;
                    self.conn.broken = false;
                }
                Some(Message::ErrorResponse(e)) => {
                    self.done = true;
                    let err = server_error(&e);
                    self.conn.until_ready(&mut Vec::new(), &mut None)?;
                    self.conn.broken = false;
                    return Err(err);
                }
                Some(_) => {}
            }
        }
        Ok(!self.done)
    }
}

impl Read for CopyOut<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            let mut pending = std::mem::take(&mut self.pending);
            let result = self.read_rows(&mut pending, 64 << 10);
            self.pending = pending;
            result?;
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        conn: &PgConnection,
        env: &[(&str, &str)],
    ) -> std::result::Result<WireTarget, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WireTarget::from_settings(conn, "shop", move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn settings_map_as_libpq_reads_them() {
        let conn = PgConnection {
            host: Some("/run/pg".into()),
            user: Some("ann".into()),
            password: Some(Secret::new("pw")),
            ..Default::default()
        };
        let t = target(&conn, &[("PGPORT", "6543"), ("PGAPPNAME", "lifeboat")]).unwrap();
        assert_eq!(
            t.address,
            WireAddress::Socket("/run/pg/.s.PGSQL.6543".into())
        );
        assert_eq!((t.user.as_str(), t.database.as_str()), ("ann", "shop"));
        assert_eq!(t.password.unwrap().expose(), "pw");
        assert_eq!(
            t.parameters,
            vec![("application_name".into(), "lifeboat".into())]
        );

        // Fields win over the environment; a URL's variables (conn.env) over the process's.
        let conn = PgConnection {
            port: Some(7000),
            env: vec![
                ("PGHOST".into(), "db.internal".into()),
                ("PGSSLMODE".into(), "disable".into()),
            ],
            ..Default::default()
        };
        let t = target(
            &conn,
            &[
                ("PGHOST", "/elsewhere"),
                ("PGPORT", "1"),
                ("PGUSER", "bob"),
                ("PGPASSWORD", "env-pw"),
            ],
        )
        .unwrap();
        assert_eq!(t.address, WireAddress::Tcp("db.internal".into(), 7000));
        assert_eq!(t.user, "bob");
        assert_eq!(t.password.unwrap().expose(), "env-pw");

        let t = target(&PgConnection::default(), &[("PGUSER", "carl")]).unwrap();
        assert!(
            matches!(&t.address, WireAddress::Socket(p) if p.ends_with(".s.PGSQL.5432")),
            "{:?}",
            t.address
        );
    }

    #[test]
    fn what_this_client_cannot_do_as_libpq_falls_back_with_the_reason() {
        let tcp = PgConnection {
            host: Some("db.internal".into()),
            user: Some("ann".into()),
            ..Default::default()
        };
        for (conn, env, reason) in [
            (&tcp, vec![], "sslmode=prefer"),
            (&tcp, vec![("PGSSLMODE", "require")], "sslmode=require"),
            (
                &tcp,
                vec![("PGSSLMODE", "disable"), ("PGREQUIRESSL", "1")],
                "PGREQUIRESSL",
            ),
            (
                &tcp,
                vec![("PGSSLMODE", "disable"), ("PGHOSTADDR", "10.0.0.1")],
                "hostaddr",
            ),
            (&tcp, vec![("PGSERVICE", "prod")], "PGSERVICE"),
            (&tcp, vec![("PGGSSENCMODE", "require")], "gssencmode"),
            (
                &tcp,
                vec![("PGCHANNELBINDING", "require")],
                "channel_binding",
            ),
            (
                &tcp,
                vec![("PGTARGETSESSIONATTRS", "read-write")],
                "target_session_attrs",
            ),
            (&tcp, vec![("PGPORT", "x")], "PGPORT"),
        ] {
            let err = target(conn, &env).unwrap_err();
            assert!(err.contains(reason), "{env:?}: {err}");
        }
        let several = PgConnection {
            host: Some("/a,/b".into()),
            ..Default::default()
        };
        assert!(target(&several, &[]).unwrap_err().contains("several hosts"));
        let abstract_socket = PgConnection {
            host: Some("@pg".into()),
            ..Default::default()
        };
        assert!(target(&abstract_socket, &[])
            .unwrap_err()
            .contains("abstract"));
        // A Unix socket needs no TLS whatever sslmode says (libpq does not use it there).
        let socket = PgConnection {
            host: Some("/run/pg".into()),
            user: Some("ann".into()),
            ..Default::default()
        };
        assert!(target(&socket, &[("PGSSLMODE", "prefer")]).is_ok());
    }
}
