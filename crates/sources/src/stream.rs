//! Where dump streams go and where restore streams come from.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::{DumpMetadata, Error, Result};

/// Receives one dump: named streams one after another, then the metadata exactly once.
///
/// The repository engine implements this over its snapshot writer
/// (`add_stream` → `writer.add_stream(name, reader)`, `finish` →
/// `writer.finish(metadata.to_json())`).
pub trait StreamSink {
    /// Store `reader` (read to EOF) under `name`; return the number of bytes stored.
    ///
    /// A read error from `reader` (for instance the dump tool exiting with an error) must
    /// abort this stream and be returned: the sink must not keep a truncated stream as if it
    /// were complete.
    ///
    /// # Errors
    /// Any I/O error of the reader or of the storage.
    fn add_stream(&mut self, name: &str, reader: &mut dyn Read) -> io::Result<u64>;

    /// Store the concatenation of `parts` under `name`, as [`add_stream`](Self::add_stream)
    /// would store it; a sink may read the parts at the same time (the repository does,
    /// one thread each). This default reads them one after another.
    ///
    /// # Errors
    /// As [`add_stream`](Self::add_stream): the first part's error, nothing stored.
    fn add_stream_parts<'p>(
        &mut self,
        name: &str,
        parts: Vec<Box<dyn Read + Send + 'p>>,
    ) -> io::Result<u64> {
        let mut all = Concat {
            parts: parts.into_iter(),
            current: None,
        };
        self.add_stream(name, &mut all)
    }

    /// Complete the dump with its metadata. Called once, after the last stream.
    ///
    /// # Errors
    /// Storage errors.
    fn finish(&mut self, metadata: &DumpMetadata) -> io::Result<()>;
}

/// Readers one after another.
struct Concat<'p> {
    parts: std::vec::IntoIter<Box<dyn Read + Send + 'p>>,
    current: Option<Box<dyn Read + Send + 'p>>,
}

impl Read for Concat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.parts.next() {
                    Some(p) => self.current = Some(p),
                    None => return Ok(0),
                }
            }
            let n = self.current.as_mut().expect("set above").read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.current = None;
        }
    }
}

/// Gives the streams of a stored dump back, by name.
pub trait StreamSource {
    /// Open stream `name` for reading from its start.
    ///
    /// # Errors
    /// `io::ErrorKind::NotFound` when there is no such stream; storage errors.
    fn open_stream(&mut self, name: &str) -> io::Result<Box<dyn Read + Send + '_>>;
}

/// Something that can be dumped into a [`StreamSink`].
pub trait DumpSource {
    /// Ask the server what the dump needs to know before it starts (versions, databases,
    /// positions), so that a caller can do it while it opens the repository. Optional:
    /// [`dump`](Self::dump) does what is left undone.
    ///
    /// # Errors
    /// Connection problems, as [`dump`](Self::dump).
    fn prepare(&mut self) -> Result<()> {
        Ok(())
    }

    /// Write every stream into `sink`, call [`StreamSink::finish`], and return the metadata
    /// that was handed to it.
    ///
    /// # Errors
    /// Tool failures, connection problems, sink errors. After an error the sink has not been
    /// finished and its partial content must be discarded.
    fn dump(&mut self, sink: &mut dyn StreamSink) -> Result<DumpMetadata>;
}

/// A dump stored as plain files: `ROOT/streams/<name>` and `ROOT/metadata.json`.
#[derive(Debug, Clone)]
pub struct DirStreams {
    root: PathBuf,
}

fn check_name(name: &str) -> io::Result<&Path> {
    let path = Path::new(name);
    let ok = !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid stream name {name:?}"),
        ))
    }
}

impl DirStreams {
    /// Use (and create) directory `root`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("streams"))
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        Ok(DirStreams { root })
    }

    /// Open an existing dump directory.
    pub fn open(root: impl Into<PathBuf>) -> Self {
        DirStreams { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of stream `name`.
    ///
    /// # Errors
    /// Invalid stream names (absolute, `..`).
    pub fn stream_path(&self, name: &str) -> io::Result<PathBuf> {
        Ok(self.root.join("streams").join(check_name(name)?))
    }

    /// Whether a metadata file was written (the dump finished).
    pub fn is_finished(&self) -> bool {
        self.root.join("metadata.json").exists()
    }

    /// Read the metadata written by [`StreamSink::finish`].
    ///
    /// # Errors
    /// Missing or malformed `metadata.json`.
    pub fn metadata(&self) -> Result<DumpMetadata> {
        let path = self.root.join("metadata.json");
        let data =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&data).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
    }
}

impl StreamSink for DirStreams {
    fn add_stream(&mut self, name: &str, reader: &mut dyn Read) -> io::Result<u64> {
        let path = self.stream_path(name)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("partial");
        let mut file = fs::File::create(&tmp)?;
        let copied = io::copy(reader, &mut file);
        match copied {
            Ok(n) => {
                file.flush()?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                Ok(n)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn finish(&mut self, metadata: &DumpMetadata) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(metadata).map_err(io::Error::other)?;
        let tmp = self.root.join("metadata.json.partial");
        fs::write(&tmp, json)?;
        fs::rename(tmp, self.root.join("metadata.json"))
    }
}

impl StreamSource for DirStreams {
    fn open_stream(&mut self, name: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        let path = self.stream_path(name)?;
        Ok(Box::new(io::BufReader::with_capacity(
            256 * 1024,
            fs::File::open(path)?,
        )))
    }
}

/// Open `name` from `source`, mapping "not found" to [`Error::StreamNotFound`].
pub(crate) fn open<'a>(
    source: &'a mut dyn StreamSource,
    name: &str,
) -> Result<Box<dyn Read + Send + 'a>> {
    source.open_stream(name).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::StreamNotFound(name.to_string())
        } else {
            Error::io(format!("opening stream {name}"), e)
        }
    })
}

/// Sink a stream and map errors with the stream's name.
pub(crate) fn add(sink: &mut dyn StreamSink, name: &str, reader: &mut dyn Read) -> Result<u64> {
    sink.add_stream(name, reader)
        .map_err(|e| Error::io(format!("storing stream {name}"), e))
}

/// Sink a stream read in parts and map errors with the stream's name.
pub(crate) fn add_parts<'p>(
    sink: &mut dyn StreamSink,
    name: &str,
    parts: Vec<Box<dyn Read + Send + 'p>>,
) -> Result<u64> {
    sink.add_stream_parts(name, parts)
        .map_err(|e| Error::io(format!("storing stream {name}"), e))
}

/// Finish a sink and map errors.
pub(crate) fn finish(sink: &mut dyn StreamSink, meta: &DumpMetadata) -> Result<()> {
    sink.finish(meta)
        .map_err(|e| Error::io("storing dump metadata", e))
}

/// A stream name component for a database name: keeps `[A-Za-z0-9_.-]`, percent-encodes the
/// rest, so any database name maps to one safe path component.
pub(crate) fn name_component(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Observes bytes flowing through a [`Tap`].
pub(crate) trait Observer {
    fn observe(&mut self, chunk: &[u8]);
}

/// A reader that shows every chunk it passes on to an observer (for parsing a dump while it
/// streams: row counts, versions, binlog position).
pub(crate) struct Tap<'a, R> {
    inner: R,
    observer: &'a mut (dyn Observer + Send),
}

impl<'a, R: Read> Tap<'a, R> {
    pub(crate) fn new(inner: R, observer: &'a mut (dyn Observer + Send)) -> Self {
        Tap { inner, observer }
    }
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observer.observe(&buf[..n]);
        Ok(n)
    }
}

/// A reader that calls `on_first` once, when the first bytes come through (to start
/// something that must wait until a dump tool has begun writing).
pub(crate) struct OnFirstBytes<R, F> {
    inner: R,
    on_first: Option<F>,
}

impl<R: Read, F: FnOnce()> OnFirstBytes<R, F> {
    pub(crate) fn new(inner: R, on_first: F) -> Self {
        OnFirstBytes {
            inner,
            on_first: Some(on_first),
        }
    }
}

impl<R: Read, F: FnOnce()> Read for OnFirstBytes<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(f) = self.on_first.take() {
                f();
            }
        }
        Ok(n)
    }
}

/// Splits a byte stream into lines for an observer, keeping at most `cap` bytes of each line
/// (dump data lines can be huge; parsers only need their starts) plus the full length.
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    cap: usize,
    len: usize,
}

impl LineSplitter {
    pub(crate) fn new(cap: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            cap,
            len: 0,
        }
    }

    /// Feed a chunk; `on_line(prefix, full_len)` is called for each complete line (without
    /// the newline).
    pub(crate) fn feed(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(&[u8], usize)) {
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.push(&chunk[..i]);
                    on_line(&self.buf, self.len);
                    self.buf.clear();
                    self.len = 0;
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.push(chunk);
                    chunk = &[];
                }
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        let room = self.cap.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_must_stay_inside_the_directory() {
        assert!(check_name("pg/db.sql").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("/etc/passwd").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn database_names_become_safe_components() {
        assert_eq!(name_component("shop"), "shop");
        assert_eq!(name_component("a/b c"), "a%2Fb%20c");
        assert_eq!(name_component(".."), "%2E.");
    }

    #[test]
    fn line_splitter_caps_prefix_but_counts_length() {
        let mut s = LineSplitter::new(3);
        let mut lines = Vec::new();
        s.feed(b"abcdef\nxy", |l, n| lines.push((l.to_vec(), n)));
        s.feed(b"z\n", |l, n| lines.push((l.to_vec(), n)));
        assert_eq!(lines, vec![(b"abc".to_vec(), 6), (b"xyz".to_vec(), 3)]);
    }
}
