//! Child processes: streaming a tool's stdout, piping a stream into a tool's stdin, running a
//! tool for its output. Stderr is collected (tail only) and secrets are redacted from it.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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

/// A running tool whose stdout is read as a stream. Reaching EOF waits for the tool and turns
/// a non-zero exit into a read error, so a failed dump can never look like a complete one.
/// Dropping it early kills the tool.
pub(crate) struct ChildStream {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: StderrTail,
    program: String,
    secrets: Vec<String>,
    done: bool,
}

impl ChildStream {
    pub(crate) fn spawn(mut cmd: Command, secrets: Vec<String>) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = program_name(&cmd);
        let mut child = spawn(&mut cmd)?;
        let stdout = child.stdout.take();
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
        self.stdout = None;
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
    fn pipe_into_reports_exit_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat >/dev/null; exit 1"]);
        assert!(pipe_into(cmd, &mut &b"data"[..], &[]).is_err());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "test \"$(cat)\" = data"]);
        pipe_into(cmd, &mut &b"data"[..], &[]).unwrap();
    }
}
