//! Child processes: streaming a tool's stdout, piping a stream into a tool's stdin, running a
//! tool for its output. Stderr is collected (tail only) and secrets are redacted from it.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::{Error, Result};

const STDERR_TAIL: usize = 8 * 1024;

/// Replace every secret in `text` by `***`.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.spawn().map_err(|e| {
        let program = program_name(cmd);
        if e.kind() == io::ErrorKind::NotFound {
            Error::Config(format!("`{program}` not found on PATH; install it"))
        } else {
            Error::io(format!("starting {program}"), e)
        }
    })
}

/// Collects the tail of a child's stderr in a thread.
struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    handle: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn start(child: &mut Child) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let handle = child.stderr.take().map(|mut err| {
            let buf = Arc::clone(&buf);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > 2 * STDERR_TAIL {
                        let cut = b.len() - STDERR_TAIL;
                        b.drain(..cut);
                    }
                }
            })
        });
        StderrTail { buf, handle }
    }

    fn finish(&mut self, secrets: &[String]) -> String {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let start = b.len().saturating_sub(STDERR_TAIL);
        redact(String::from_utf8_lossy(&b[start..]).trim(), secrets)
    }
}

fn status_error(program: &str, status: ExitStatus, stderr: String) -> Error {
    Error::Command {
        program: program.to_string(),
        status: status.to_string(),
        stderr,
    }
}

/// Reads a pipe on its own thread, ahead of the consumer, into a bounded queue of blocks.
///
/// A dump is a chain: server → dump tool → pipe → Lifeboat's reader, which chunks and hashes
/// on the same thread. Read directly, the pipe fills while the reader computes, and the tool
/// blocks on it and the server on the tool. Here the pipe is drained while the tool writes
/// (within a nap of [`READ_AHEAD_NAP`], so that 4 KiB writes do not wake the reader each), up
/// to [`READ_AHEAD_BLOCKS`] blocks of at most [`READ_AHEAD_BLOCK`] bytes (a
/// `pg_dump` of 488 MB on 2 cores: 4–5% faster; docs/PERFORMANCE.md).
struct ReadAhead {
    /// Blocks and how many of their bytes were read (a block is zeroed once, when
    /// allocated, and then reused at full length).
    blocks: Option<mpsc::Receiver<io::Result<(Vec<u8>, usize)>>>,
    /// Emptied blocks go back to the reading thread.
    spent: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    len: usize,
    pos: usize,
    thread: Option<JoinHandle<()>>,
}

const READ_AHEAD_BLOCK: usize = 1 << 20;
const READ_AHEAD_BLOCKS: usize = 16;
/// A partly filled block goes to the consumer once it holds this much and the pipe is empty.
const READ_AHEAD_SEND: usize = 256 << 10;
/// How long the reader waits on an empty pipe before handing over a partial block: a tool
/// that keeps writing refills the pipe within it (pg_dump writing 4 KiB pieces: ~60 KB in
/// 200 µs), a tool that paused gets what it wrote delivered this much later.
const READ_AHEAD_NAP: std::time::Duration = std::time::Duration::from_micros(200);

/// Whether a read of `pipe` would return at once (data, or the writer's end closed).
fn readable_now(pipe: &ChildStdout) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl ReadAhead {
    fn start(mut pipe: ChildStdout) -> Self {
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD_BLOCKS);
        let (spent_tx, spent_rx) = mpsc::channel::<Vec<u8>>();
        let thread = thread::spawn(move || loop {
            let mut block = spent_rx
                .try_recv()
                .unwrap_or_else(|_| vec![0; READ_AHEAD_BLOCK]);
            let mut n = 0;
            // Fill the block while the tool keeps writing; hand it over when it is full,
            // holds READ_AHEAD_SEND bytes, or the tool paused for a nap.
            let end = loop {
                match pipe.read(&mut block[n..]) {
                    Ok(0) => break Some(Ok(())),
                    Ok(m) => n += m,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(Err(e)),
                }
                if n == block.len() {
                    break None;
                }
                if readable_now(&pipe) {
                    continue;
                }
                if n >= READ_AHEAD_SEND {
                    break None;
                }
                // The pipe is empty. Blocking in read() here would wake this thread for
                // every write (a tool writing 4 KiB at a time, as `pg_dump` 16 and later or
                // without `buffer_stdout`: 120k wake-ups for 488 MB, each one a context
                // switch on both sides); a nap lets writes pile up.
                thread::sleep(READ_AHEAD_NAP);
                if !readable_now(&pipe) {
                    break None;
                }
            };
            if n > 0 && tx.send(Ok((block, n))).is_err() {
                return;
            }
            match end {
                None => {}
                Some(Ok(())) => return,
                Some(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        ReadAhead {
            blocks: Some(rx),
            spent: spent_tx,
            current: Vec::new(),
            len: 0,
            pos: 0,
            thread: Some(thread),
        }
    }

    /// After EOF: the thread has ended, or is about to; wait for it.
    fn join(&mut self) {
        self.blocks = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            let Some(rx) = &self.blocks else {
                return Ok(0);
            };
            match rx.recv() {
                Ok(block) => {
                    let (block, len) = block?;
                    let old = std::mem::replace(&mut self.current, block);
                    if !old.is_empty() {
                        let _ = self.spent.send(old);
                    }
                    (self.len, self.pos) = (len, 0);
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A running tool whose stdout is read as a stream. Reaching EOF waits for the tool and turns
/// a non-zero exit into a read error, so a failed dump can never look like a complete one.
/// Dropping it early kills the tool.
pub(crate) struct ChildStream {
    child: Child,
    stdout: Option<ReadAhead>,
    stderr: StderrTail,
    program: String,
    secrets: Vec<String>,
    done: bool,
}

/// Where coreutils installs the library behind `stdbuf` (Debian and Ubuntu, Fedora, Arch).
const STDBUF_LIBRARIES: &[&str] = &[
    "/usr/libexec/coreutils/libstdbuf.so",
    "/usr/lib/coreutils/libstdbuf.so",
];

/// The installed `libstdbuf.so`, unless `LIFEBOAT_NO_STDBUF` is set.
fn stdbuf_library() -> Option<&'static Path> {
    if std::env::var_os("LIFEBOAT_NO_STDBUF").is_some() {
        return None;
    }
    STDBUF_LIBRARIES.iter().map(Path::new).find(|p| p.is_file())
}

/// `LD_PRELOAD` with `lib` in front of what was there, as `stdbuf` composes it.
fn preload_with(lib: &OsStr, existing: Option<&OsStr>) -> OsString {
    let mut v = OsString::from(lib);
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(":");
        v.push(e);
    }
    v
}

/// Make a tool that writes through C stdio's `stdout` write it in 1 MiB pieces instead of
/// the 4 KiB that stdio picks for a pipe: exactly what `stdbuf -o1M` does, and through the
/// same two variables (coreutils' `libstdbuf.so` in `LD_PRELOAD`, `_STDBUF_O`), so that the
/// tool keeps its own name in `ps` and in errors. `pg_dump` up to 15 writes plain output
/// there: for 488 MB, 465 writes instead of ~120k, each of which woke the reader (0.36 CPU-s
/// and 3.7% of the wall time less on 2 cores; docs/PERFORMANCE.md, sixteenth measurement).
/// `pg_dump` 16 and later write through their own `fdopen(dup(1))` stream, which the
/// library does not reach: no effect there, and no harm.
///
/// Costs: output arrives in 1 MiB pieces (a dump smaller than that arrives when the tool
/// exits). Best effort: without the library, or with `LIFEBOAT_NO_STDBUF` set (for a tool
/// the library cannot be loaded into, such as a musl build), nothing is set; a tool that does
/// not write through stdio is not affected. The output is the same bytes.
pub(crate) fn buffer_stdout(cmd: &mut Command) {
    let Some(lib) = stdbuf_library() else {
        return;
    };
    // Set or removed on the command itself wins over the parent's environment.
    let existing = match cmd.get_envs().find(|(k, _)| *k == "LD_PRELOAD") {
        Some((_, v)) => v.map(OsStr::to_os_string),
        None => std::env::var_os("LD_PRELOAD"),
    };
    cmd.env(
        "LD_PRELOAD",
        preload_with(lib.as_os_str(), existing.as_deref()),
    )
    .env("_STDBUF_O", "1048576");
}

/// Give a dump tool's stdout pipe 1 MiB instead of Linux's 64 KiB, so that the tool and
/// the reader take turns 16 times less often (a `pg_dump` writing 500 MB spent a tenth of
/// its samples switching). Best effort: the kernel caps it at `/proc/sys/fs/pipe-max-size`
/// and per-user limits, and a smaller pipe only costs speed.
fn widen_pipe(pipe: &ChildStdout) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
    );
}

impl ChildStream {
    pub(crate) fn spawn(mut cmd: Command, secrets: Vec<String>) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = program_name(&cmd);
        let mut child = spawn(&mut cmd)?;
        let stdout = child.stdout.take().map(|out| {
            widen_pipe(&out);
            ReadAhead::start(out)
        });
        let stderr = StderrTail::start(&mut child);
        Ok(ChildStream {
            child,
            stdout,
            stderr,
            program,
            secrets,
            done: false,
        })
    }

    fn wait_checked(&mut self) -> Result<()> {
        if let Some(mut out) = self.stdout.take() {
            out.join();
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("waiting for {}", self.program), e))?;
        self.done = true;
        let stderr = self.stderr.finish(&self.secrets);
        if status.success() {
            Ok(())
        } else {
            Err(status_error(&self.program, status, stderr))
        }
    }
}

impl Read for ChildStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = match self.stdout.as_mut() {
            Some(out) => out.read(buf)?,
            None => 0,
        };
        if n == 0 && !buf.is_empty() {
            self.wait_checked().map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

impl Drop for ChildStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            // Not joined: the tool's own children (`sh -c 'dump | gzip'`) may hold the
            // pipe open after the kill. The thread, with the queue dropped here, ends at
            // the pipe's EOF or at its next send, and closes the pipe then.
            drop(self.stdout.take());
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` with `input` piped into its stdin; stdout is discarded. Fails with the tool's
/// stderr when it exits non-zero, or with the reader's error.
pub(crate) fn pipe_into(mut cmd: Command, input: &mut dyn Read, secrets: &[String]) -> Result<()> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let program = program_name(&cmd);
    let mut child = spawn(&mut cmd)?;
    let mut stderr = StderrTail::start(&mut child);
    let mut stdin = child.stdin.take();
    let copy_result = match stdin.as_mut() {
        Some(w) => io::copy(input, w).and_then(|_| w.flush()),
        None => Ok(()),
    };
    drop(stdin);
    if let Err(e) = &copy_result {
        if e.kind() != io::ErrorKind::BrokenPipe {
            // The input failed: stop the tool so it does not commit a partial load.
            let _ = child.kill();
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("waiting for {program}"), e))?;
    let err_text = stderr.finish(secrets);
    if let Err(e) = copy_result {
        if e.kind() != io::ErrorKind::BrokenPipe || status.success() {
            // The input side failed (e.g. the producing tool exited non-zero): that is the
            // cause; the consumer was stopped because of it.
            return Err(Error::io(format!("feeding {program}"), e));
        }
    }
    if !status.success() {
        return Err(status_error(&program, status, err_text));
    }
    Ok(())
}

/// Run `cmd` to completion and return its stdout (trimmed).
pub(crate) fn output(mut cmd: Command, secrets: &[String]) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = program_name(&cmd);
    let out = spawn(&mut cmd)?
        .wait_with_output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        let err = redact(String::from_utf8_lossy(&out.stderr).trim(), secrets);
        Err(status_error(&program, out.status, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdbuf_preload_goes_in_front_of_an_existing_one() {
        let lib = OsStr::new("/x/libstdbuf.so");
        assert_eq!(preload_with(lib, None), "/x/libstdbuf.so");
        assert_eq!(preload_with(lib, Some(OsStr::new(""))), "/x/libstdbuf.so");
        assert_eq!(
            preload_with(lib, Some(OsStr::new("/y/a.so"))),
            "/x/libstdbuf.so:/y/a.so"
        );
    }

    /// A stdio tool (`sed`) given 49 KB while its stdin stays open: unbuffered by us it
    /// writes 4 KiB pieces at once; buffered, nothing until its input ends (when the library
    /// is installed, as on Debian). Either way the bytes are the same and stderr is empty
    /// (an invalid `_STDBUF_O` makes the library complain there and do nothing).
    #[test]
    fn buffered_stdout_holds_a_stdio_tools_output_until_its_input_ends() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let installed = stdbuf_library().is_some();
        // Under 64 KiB (one pipe), over 4 KiB (a stdio buffer): neither side blocks.
        let input: String = (0..5_000).map(|i| format!("line {i}\n")).collect();
        for buffered in [false, true] {
            let mut cmd = Command::new("sed");
            cmd.args(["-n", "p"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if buffered {
                buffer_stdout(&mut cmd);
            }
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).unwrap();
            stdin.flush().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let wait = if buffered && installed {
                1000u16
            } else {
                10_000
            };
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
            let early = poll(&mut fds, PollTimeout::from(wait)).unwrap() > 0;
            assert_eq!(early, !(buffered && installed), "buffered {buffered}");
            drop(stdin);
            let mut rest = Vec::new();
            stdout.read_to_end(&mut rest).unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stderr), "");
            assert_eq!(rest, input.as_bytes());
        }
    }

    #[test]
    fn failing_tool_turns_into_read_error_at_eof() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf partial; echo 'boom pw=hunter2' >&2; exit 3"]);
        let mut s = ChildStream::spawn(cmd, vec!["hunter2".into()]).unwrap();
        let mut out = Vec::new();
        let err = s.read_to_end(&mut out).unwrap_err().to_string();
        assert_eq!(out, b"partial");
        assert!(err.contains("boom pw=***"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn read_ahead_gives_every_byte_in_order_however_it_is_read() {
        // Many small writes (the pipe is drained in pieces) and one large one (a block fills).
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "i=0; while [ $i -lt 2000 ]; do printf 'line %05d\n' $i; i=$((i+1)); done; \
             head -c 3000000 /dev/zero | tr '\\0' x",
        ]);
        let mut s = ChildStream::spawn(cmd, vec![]).unwrap();
        let mut out = Vec::new();
        // Odd-sized reads, so block and read boundaries never line up.
        let mut buf = [0u8; 7777];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let mut expected: Vec<u8> = (0..2000)
            .flat_map(|i| format!("line {i:05}\n").into_bytes())
            .collect();
        expected.extend(std::iter::repeat_n(b'x', 3_000_000));
        assert_eq!(out.len(), expected.len());
        assert!(out == expected, "bytes differ");
        // EOF stays EOF.
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn what_a_paused_tool_wrote_is_delivered_before_it_goes_on() {
        // Far less than a hand-over block, then a pause: the reader must not wait for more.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first; sleep 30; echo second"]);
        let mut s = ChildStream::spawn(cmd, vec![]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = [0u8; 6];
            let r = s.read_exact(&mut line).map(|()| line);
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        // A hang detector, not a timing: the first line comes long before the sleep ends.
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(15))
            .expect("the first line waited for the tool to go on");
        assert_eq!(&line.unwrap(), b"first\n");
    }

    #[test]
    fn dropping_a_stream_early_stops_an_endless_tool() {
        let mut cmd = Command::new("yes");
        cmd.arg("endless");
        let mut s = ChildStream::spawn(cmd, vec![]).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
        assert!(buf.starts_with(b"endless\nendless\n"));
        // Kills the tool and joins the reading thread, blocked on a full queue: must return.
        drop(s);
    }

    #[test]
    fn dropping_a_stream_does_not_wait_for_the_tools_children() {
        // The killed shell's child keeps the pipe's write end open for 30 s.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30 & wait"]);
        let mut s = ChildStream::spawn(cmd, vec![]).unwrap();
        let mut line = [0u8; 8];
        s.read_exact(&mut line).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            drop(s);
            let _ = tx.send(());
        });
        // A hang detector, not a timing: the drop must not wait for `sleep 30`.
        rx.recv_timeout(std::time::Duration::from_secs(15))
            .expect("dropping the stream waited for the tool's child");
    }

    #[test]
    fn pipe_into_reports_exit_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat >/dev/null; exit 1"]);
        assert!(pipe_into(cmd, &mut &b"data"[..], &[]).is_err());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "test \"$(cat)\" = data"]);
        pipe_into(cmd, &mut &b"data"[..], &[]).unwrap();
    }
}
