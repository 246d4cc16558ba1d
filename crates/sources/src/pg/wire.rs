//! A lean client of PostgreSQL's wire protocol (version 3), for the one job where libpq's
//! per-row cost shows in a backup: reading `COPY … TO STDOUT` (docs/PERFORMANCE.md, the
//! in-process reader's plan, item 6: on 2 cores a table read as page ranges through `psql`
//! reached 1.07× `pg_dump -Fc`, through the probe's std-only loop 1.25×, because the
//! client's CPU comes out of the server's share; this loop spends what the probe's does).
//!
//! Startup, authentication (trust, cleartext, MD5, SCRAM-SHA-256 without channel binding;
//! the message framing and both hashes are `postgres-protocol`'s), simple queries, and a
//! `COPY` reader that appends rows straight into the caller's buffer, one copy from the
//! socket's buffer. No TLS, no GSSAPI, no `.pgpass`, no service files: a caller that needs
//! any of those keeps `pg_dump`. Over TCP that means `sslmode=disable` and
//! `gssencmode=disable` only, since libpq's defaults (`prefer`) would encrypt what this
//! client sends in clear.
//!
//! Used by `backup postgres` for the tables it reads itself (`pg::direct`).

use std::borrow::BorrowMut;
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
    /// Settings are read as the tools get them (`PgConnection::command`): `conn.env`
    /// (variables from a URL), then `conn`'s fields, then `env`; an empty value means
    /// libpq's default. Refused: several hosts, `PGHOSTADDR`, abstract sockets, TCP unless
    /// both `sslmode` and `gssencmode` are `disable` (libpq's defaults, `prefer`, encrypt
    /// where the server offers it), `PGREQUIRESSL`, `require_auth`, `channel_binding=require`,
    /// protocol version bounds, service files, `target_session_attrs` other than `any`,
    /// `client_encoding=auto`. A password only in a `.pgpass` file is not read: the
    /// server's request for it fails the connection, and the caller falls back the same
    /// way. Without a host, libpq's compiled-in socket directory is guessed:
    /// `/var/run/postgresql` (Debian's, Fedora's) where it exists, else `/tmp`
    /// (PostgreSQL's own). A wrong guess usually fails to connect, but may reach another
    /// cluster on the same port: a caller must check that this connection reaches the
    /// server `pg_dump` reads (its snapshot, exported here, is only importable there).
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
        // As the tools see a variable: a URL's value, else the field, else the process's.
        let layered = |name: &str, field: Option<String>| -> Option<String> {
            conn.env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or(field)
                .or_else(|| env(name))
        };
        let var = |name: &str| layered(name, None).filter(|v| !v.is_empty());
        for (name, why) in [
            ("PGHOSTADDR", "a host address (hostaddr)"),
            ("PGSERVICE", "a service (PGSERVICE)"),
            ("PGSERVICEFILE", "a service file (PGSERVICEFILE)"),
            (
                "PGREQUIREAUTH",
                "require_auth, which this client does not enforce,",
            ),
            ("PGMINPROTOCOLVERSION", "a minimum protocol version"),
            ("PGMAXPROTOCOLVERSION", "a maximum protocol version"),
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
        if var("PGCLIENTENCODING").as_deref() == Some("auto") {
            return Err("client_encoding=auto (chosen from the locale by libpq)".into());
        }
        let port =
            match layered("PGPORT", conn.port.map(|p| p.to_string())).filter(|p| !p.is_empty()) {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("PGPORT {p:?} is not a port"))?,
                None => 5432,
            };
        let address = match layered("PGHOST", conn.host.clone()).filter(|h| !h.is_empty()) {
            Some(h) if h.contains(',') => return Err(format!("several hosts ({h})")),
            Some(h) if h.starts_with('@') => return Err(format!("an abstract socket ({h})")),
            Some(h) if h.starts_with('/') => WireAddress::socket(h, port),
            Some(h) => {
                for (name, setting) in [("PGSSLMODE", "sslmode"), ("PGGSSENCMODE", "gssencmode")] {
                    let mode = var(name).unwrap_or_else(|| "prefer".into());
                    if mode != "disable" {
                        return Err(format!(
                            "TCP to {h} with {setting}={mode}: libpq may encrypt, which this client does not"
                        ));
                    }
                }
                WireAddress::Tcp(h, port)
            }
            None => {
                let debian = std::path::Path::new("/var/run/postgresql");
                let dir = if debian.is_dir() {
                    debian
                } else {
                    std::path::Path::new("/tmp")
                };
                WireAddress::socket(dir, port)
            }
        };
        let user = match layered("PGUSER", conn.user.clone()).filter(|u| !u.is_empty()) {
            Some(u) => u,
            None => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .ok_or("no user name: PGUSER is unset and the effective user has no name")?,
        };
        let password = layered(
            "PGPASSWORD",
            conn.password.as_ref().map(|p| p.expose().to_string()),
        )
        .filter(|p| !p.is_empty())
        .map(Secret::new);
        let mut parameters = Vec::new();
        for (variable, parameter) in [
            ("PGOPTIONS", "options"),
            ("PGAPPNAME", "application_name"),
            ("PGCLIENTENCODING", "client_encoding"),
            ("PGDATESTYLE", "DateStyle"),
            ("PGTZ", "TimeZone"),
            ("PGGEQO", "geqo"),
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
    /// `database "x" as "u" at /run/postgresql/.s.PGSQL.5432`, for errors.
    what: String,
    /// Set from each request until its `ReadyForQuery` has been read: a connection left in
    /// between (an abandoned `COPY`, a broken message, a closed socket) refuses queries.
    broken: bool,
}

/// The largest message other than rows that this client accepts (libpq's limit for most
/// types is 30,000 bytes); a row (`CopyData`, `DataRow`) may be up to PostgreSQL's 1 GiB.
const MAX_MESSAGE: usize = 1 << 20;
const MAX_ROW: usize = (1 << 30) + (1 << 20);

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
    /// server refused (its message: a wrong password, a database that does not exist),
    /// or it asked for a password none was given for, or for a method this client does
    /// not speak.
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
            broken: true,
        };
        conn.startup(target).map_err(io_err)?;
        Ok(conn)
    }

    fn send(&mut self, build: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> io::Result<()> {
        let mut buf = BytesMut::new();
        build(&mut buf)?;
        self.w.write_all(&buf)
    }

    /// The next message, its header read first; `CopyData` bodies land in `rows` (appended;
    /// nothing is left there when reading one fails) and come back as `None`, every other
    /// message parsed.
    fn next(&mut self, rows: &mut Vec<u8>) -> io::Result<Option<Message>> {
        let mut header = [0u8; 5];
        self.r.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let limit = if matches!(header[0], b'd' | b'D') {
            MAX_ROW
        } else {
            MAX_MESSAGE
        };
        let body = len.checked_sub(4).filter(|&b| b <= limit).ok_or_else(|| {
            io::Error::other(format!(
                "a message of type {:?} with length {len} from the server",
                header[0] as char
            ))
        })?;
        if header[0] == b'd' {
            let at = rows.len();
            rows.resize(at + body, 0);
            if let Err(e) = self.r.read_exact(&mut rows[at..]) {
                rows.truncate(at);
                return Err(e);
            }
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

    /// The next message that is not a notice, a parameter report or a notification.
    fn next_message(&mut self) -> io::Result<Message> {
        loop {
            match self.next(&mut Vec::new())? {
                Some(
                    Message::NoticeResponse(_)
                    | Message::ParameterStatus(_)
                    | Message::NotificationResponse(_),
                ) => {}
                Some(Message::ErrorResponse(e)) => {
                    // The server ends the request; a FATAL one the session too.
                    return Err(self.finish_request(server_error(&e)));
                }
                Some(m) => return Ok(m),
                None => return Err(io::Error::other("unexpected COPY data from the server")),
            }
        }
    }

    /// After an error from the server: read on to `ReadyForQuery` (the connection is
    /// usable again) and return the error; when the server closed the session instead
    /// (FATAL), the same error.
    fn finish_request(&mut self, err: io::Error) -> io::Error {
        let _ = self.until_ready(None);
        err
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
                    let mut offered = Vec::new();
                    while let Some(m) = mechanisms.next()? {
                        offered.push(m.to_string());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(io::Error::other(format!(
                            "the server offers SASL mechanisms {offered:?}, of which this client speaks none (it has SCRAM-SHA-256 without channel binding)"
                        )));
                    }
                    self.scram(password()?)?;
                }
                _ => {
                    return Err(io::Error::other(
                        "the server asks for an authentication method this client does not speak (GSSAPI, SSPI, Kerberos, SCM credentials)",
                    ))
                }
            }
        }
        self.until_ready(None)
    }

    fn scram(&mut self, password: &[u8]) -> io::Result<()> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        self.send(|b| frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), b))?;
        match self.next_message()? {
            Message::AuthenticationSaslContinue(body) => scram.update(body.data())?,
            _ => return Err(io::Error::other("unexpected message during SCRAM")),
        }
        self.send(|b| frontend::sasl_response(scram.message(), b))?;
        match self.next_message()? {
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()),
            _ => Err(io::Error::other("unexpected message during SCRAM")),
        }
    }

    /// Reads up to `ReadyForQuery`, which makes the connection usable again: the rows of
    /// every `DataRow` into `rows` (text, `None` for NULL). The first error is returned
    /// after that, or when the server closed the session instead (FATAL). A `COPY` it
    /// meets is an error (its rows are read and dropped; one asking for rows is failed).
    fn until_ready(&mut self, mut rows: Option<&mut Vec<Vec<Option<String>>>>) -> io::Result<()> {
        let mut failed: Option<io::Error> = None;
        let mut scratch = Vec::new();
        loop {
            let message = match self.next(&mut scratch) {
                Ok(m) => m,
                // A FATAL error comes with the end of the session: report the error.
                Err(e) => return Err(failed.unwrap_or(e)),
            };
            scratch.clear();
            match message {
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
                    self.refuse_copy_in()?;
                    failed.get_or_insert(io::Error::other(
                        "a COPY … FROM STDIN, which this client does not send",
                    ));
                }
                Some(Message::CopyOutResponse(_)) => {
                    failed.get_or_insert(io::Error::other(
                        "a COPY … TO STDOUT where no rows were expected (one COPY per request, in copy_out)",
                    ));
                }
                _ => {}
            }
        }
        self.broken = false;
        failed.map_or(Ok(()), Err)
    }

    /// Ends a `COPY … FROM STDIN` the server started, which this client never feeds.
    fn refuse_copy_in(&mut self) -> io::Result<()> {
        self.send(|b| frontend::copy_fail("COPY FROM is not supported here", b))
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Io {
                context: self.what.clone(),
                source: io::Error::other(
                    "the connection was left in the middle of a request (an abandoned COPY, or a failed read)",
                ),
            });
        }
        Ok(())
    }

    /// Run `sql` (one or more statements, no `COPY`) and return the rows of its results,
    /// as text, all in memory.
    ///
    /// # Errors
    /// [`Error::Io`] naming the statement and the database: the server's error (severity,
    /// SQLSTATE, message), after which the connection stays usable; a `COPY`.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.usable()?;
        let mut rows = Vec::new();
        self.broken = true;
        self.send(|b| frontend::query(sql, b))
            .and_then(|()| self.until_ready(Some(&mut rows)))
            .map_err(|source| Error::Io {
                context: format!("{} in {}", short(sql), self.what),
                source,
            })?;
        Ok(rows)
    }

    /// Start `sql`, one `COPY … TO STDOUT`, and return its rows as a reader.
    ///
    /// # Errors
    /// As [`query`](Self::query); also when `sql` is not a `COPY … TO STDOUT`.
    pub fn copy_out(&mut self, sql: &str) -> Result<CopyOut<&mut WireConn>> {
        let context = self.start_copy(sql)?;
        Ok(CopyOut::new(self, context))
    }

    /// [`copy_out`](Self::copy_out) for a reader that owns the connection (a reader that
    /// lives on its own, such as one part of a stream read on another thread); the
    /// connection closes with the reader.
    ///
    /// # Errors
    /// As [`copy_out`](Self::copy_out).
    pub fn into_copy_out(mut self, sql: &str) -> Result<CopyOut<WireConn>> {
        let context = self.start_copy(sql)?;
        Ok(CopyOut::new(self, context))
    }

    /// Send `sql` and wait for its `CopyOutResponse`; the context for errors.
    fn start_copy(&mut self, sql: &str) -> Result<String> {
        self.usable()?;
        let context = format!("{} in {}", short(sql), self.what);
        self.broken = true;
        let started = self.send(|b| frontend::query(sql, b)).and_then(|()| loop {
            match self.next_message()? {
                Message::CopyOutResponse(_) => return Ok(()),
                Message::CopyInResponse(_) => {
                    self.refuse_copy_in()?;
                    let err = io::Error::other("a COPY … FROM STDIN, not TO STDOUT");
                    return Err(self.finish_request(err));
                }
                Message::ReadyForQuery(_) => {
                    self.broken = false;
                    return Err(io::Error::other("the statement is not a COPY … TO STDOUT"));
                }
                _ => {}
            }
        });
        started.map_err(|source| Error::Io {
            context: context.clone(),
            source,
        })?;
        Ok(context)
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
pub struct CopyOut<C: BorrowMut<WireConn>> {
    conn: C,
    /// The statement and the database, for errors.
    context: String,
    pending: Vec<u8>,
    pos: usize,
    done: bool,
    /// Once reading failed, every later read fails the same way.
    failed: Option<String>,
}

impl<C: BorrowMut<WireConn>> CopyOut<C> {
    fn new(conn: C, context: String) -> Self {
        CopyOut {
            conn,
            context,
            pending: Vec::new(),
            pos: 0,
            done: false,
            failed: None,
        }
    }

    /// Append whole rows to `buf` until it holds at least `want` bytes (one row may take it
    /// past that, by up to a row's size) or the `COPY` ends; returns false once it has
    /// ended and the connection is ready again.
    ///
    /// # Errors
    /// The server's error (the connection stays usable), or the connection's; each names
    /// the statement and the database, and the reader fails the same way from then on.
    /// Rows that came before the error are in `buf`.
    pub fn read_rows(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::other(msg.clone()));
        }
        if self.pos < self.pending.len() {
            buf.extend_from_slice(&self.pending[self.pos..]);
            self.pending.clear();
            self.pos = 0;
        }
        match self.rows_until(buf, want.max(1)) {
            Ok(()) => Ok(!self.done),
            Err(e) => {
                let msg = format!("{}: {e}", self.context);
                self.failed = Some(msg.clone());
                self.done = true;
                Err(io::Error::other(msg))
            }
        }
    }

    fn rows_until(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<()> {
        while !self.done && buf.len() < want {
            match self.conn.borrow_mut().next(buf)? {
                None | Some(Message::CopyDone) => {}
                Some(Message::CommandComplete(_)) => {
                    self.done = true;
                    self.conn.borrow_mut().until_ready(None)?;
                }
                Some(Message::ErrorResponse(e)) => {
                    self.done = true;
                    return Err(self.conn.borrow_mut().finish_request(server_error(&e)));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl<C: BorrowMut<WireConn>> Read for CopyOut<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            let mut pending = std::mem::take(&mut self.pending);
            let result = self.read_rows(&mut pending, 64 << 10);
            self.pending = pending;
            // Rows that came before an error are given first; the error (kept) next.
            if self.pending.is_empty() {
                result?;
            }
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

        // A URL's variables (conn.env) win over fields, fields over the process's variables.
        let conn = PgConnection {
            host: Some("/field".into()),
            port: Some(7000),
            env: vec![
                ("PGHOST".into(), "db.internal".into()),
                ("PGSSLMODE".into(), "disable".into()),
                ("PGGSSENCMODE".into(), "disable".into()),
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
        assert!(
            !format!("{t:?}").contains("env-pw"),
            "no password in Debug output"
        );
        assert_eq!(t.user, "bob");
        assert_eq!(t.password.unwrap().expose(), "env-pw");

        // An empty host (`?host=` in a URL) is libpq's default, not the process's PGHOST.
        let empty = PgConnection {
            host: Some(String::new()),
            ..Default::default()
        };
        let t = target(&empty, &[("PGHOST", "/elsewhere"), ("PGUSER", "carl")]).unwrap();
        assert!(!format!("{:?}", t.address).contains("elsewhere"));
        assert_eq!(t.user, "carl");
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
            (&tcp, vec![("PGSSLMODE", "disable")], "gssencmode=prefer"),
            (
                &tcp,
                vec![("PGREQUIREAUTH", "scram-sha-256")],
                "require_auth",
            ),
            (
                &tcp,
                vec![("PGCLIENTENCODING", "auto")],
                "client_encoding=auto",
            ),
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
