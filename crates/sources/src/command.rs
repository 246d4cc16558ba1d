//! Generic command source and sink: back up whatever a command writes to stdout, restore by
//! piping the stream into a command's stdin. Presets cover MongoDB
//! (`mongodump --archive` / `mongorestore --archive`).
//!
//! The command line (program and arguments) is recorded in the dump metadata so a restore can
//! show what produced the stream; put secrets in [`CommandSpec::env`] (never recorded, never
//! in argv, redacted from error messages), or in a 0600 config file the tool reads.
//!
//! A command that exits non-zero fails the dump even when it already wrote data: the sink
//! sees a read error at the end of the stream and must discard it.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{self, ChildStream};
use crate::stream;
use crate::{
    DumpMetadata, DumpSource, Engine, Error, RestorePlan, RestoreReport, Result, Secret,
    StreamInfo, StreamSink, StreamSource,
};

/// A command to run.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// Program (looked up on `PATH`).
    pub program: String,
    /// Arguments (recorded in metadata: no secrets here).
    pub args: Vec<String>,
    /// Extra environment (values are secrets: not recorded, redacted from errors).
    pub env: Vec<(String, Secret)>,
    /// Working directory.
    pub dir: Option<PathBuf>,
}

impl CommandSpec {
    /// `program args...`.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        CommandSpec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Add an environment variable (treated as a secret).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), Secret::new(value)));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v.expose());
        }
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        cmd
    }

    fn secrets(&self) -> Vec<String> {
        self.env
            .iter()
            .map(|(_, v)| v.expose().to_string())
            .filter(|v| v.len() >= 4)
            .collect()
    }

    fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Back up a command's stdout as one stream.
#[derive(Debug, Clone)]
pub struct CommandSource {
    /// Stream name (e.g. `mongo.archive`).
    pub name: String,
    /// The command.
    pub spec: CommandSpec,
}

impl CommandSource {
    /// Stream `spec`'s stdout under `name`.
    pub fn new(name: impl Into<String>, spec: CommandSpec) -> Self {
        CommandSource {
            name: name.into(),
            spec,
        }
    }

    /// MongoDB preset: `mongodump --archive [--config=FILE] [extra...]`. Put the connection
    /// URI (with its password) in a 0600 YAML file as `uri: "mongodb://..."` and pass it as
    /// `config` so no secret reaches argv.
    pub fn mongodump(config: Option<PathBuf>, extra: Vec<String>) -> Self {
        let mut args = vec!["--archive".to_string()];
        if let Some(c) = config {
            args.push(format!("--config={}", c.display()));
        }
        args.extend(extra);
        CommandSource::new("mongo.archive", CommandSpec::new("mongodump", args))
    }
}

impl DumpSource for CommandSource {
    fn dump(&mut self, sink: &mut dyn StreamSink) -> Result<DumpMetadata> {
        let mut meta = DumpMetadata::new(Engine::Command);
        let child = ChildStream::spawn(self.spec.command(), self.spec.secrets())?;
        let mut child = child;
        let bytes = stream::add(sink, &self.name, &mut child)?;
        meta.streams.push(StreamInfo {
            name: self.name.clone(),
            kind: "command".into(),
            database: None,
            bytes,
        });
        meta.extra
            .insert("program".into(), self.spec.program.clone().into());
        meta.extra
            .insert("args".into(), self.spec.args.clone().into());
        meta.finished_at = crate::meta::now();
        stream::finish(sink, &meta)?;
        Ok(meta)
    }
}

/// Restore by piping a stream into a command's stdin.
#[derive(Debug, Clone)]
pub struct CommandSink {
    /// The command.
    pub spec: CommandSpec,
}

impl CommandSink {
    /// Pipe into `spec`.
    pub fn new(spec: CommandSpec) -> Self {
        CommandSink { spec }
    }

    /// MongoDB preset: `mongorestore --archive [--config=FILE] [--drop] [extra...]`.
    pub fn mongorestore(config: Option<PathBuf>, drop: bool, extra: Vec<String>) -> Self {
        let mut args = vec!["--archive".to_string()];
        if let Some(c) = config {
            args.push(format!("--config={}", c.display()));
        }
        if drop {
            args.push("--drop".into());
        }
        args.extend(extra);
        CommandSink::new(CommandSpec::new("mongorestore", args))
    }

    /// What [`restore`](Self::restore) would do.
    ///
    /// # Errors
    /// [`Error::Config`] when the dump has no stream named `stream` (or, with `None`, not
    /// exactly one stream).
    pub fn plan(&self, meta: &DumpMetadata, stream: Option<&str>) -> Result<RestorePlan> {
        let name = pick_stream(meta, stream)?;
        let mut plan = RestorePlan {
            engine: "command".into(),
            ..Default::default()
        };
        plan.steps
            .push(format!("pipe stream {name} into `{}`", self.spec.display()));
        if let (Some(p), Some(a)) = (meta.extra.get("program"), meta.extra.get("args")) {
            plan.notes
                .push(format!("the stream was produced by {p} {a}"));
        }
        Ok(plan)
    }

    /// Pipe stream `stream` (or the dump's only stream) into the command; fails when the
    /// command exits non-zero.
    ///
    /// # Errors
    /// As [`plan`](Self::plan); [`Error::Command`] with the command's stderr (secrets
    /// redacted).
    pub fn restore(
        &self,
        meta: &DumpMetadata,
        source: &mut dyn StreamSource,
        stream: Option<&str>,
    ) -> Result<RestoreReport> {
        let plan = self.plan(meta, stream)?;
        let name = pick_stream(meta, stream)?;
        let mut input = stream::open(source, &name)?;
        process::pipe_into(self.spec.command(), &mut input, &self.spec.secrets())?;
        Ok(RestoreReport {
            plan,
            restored_to: self.spec.program.clone(),
            verified: Vec::new(),
            check_passed: None,
            safety_dump: None,
            previous_kept_as: None,
            warnings: Vec::new(),
        })
    }
}

fn pick_stream(meta: &DumpMetadata, stream: Option<&str>) -> Result<String> {
    match stream {
        Some(s) if meta.streams.iter().any(|x| x.name == s) => Ok(s.to_string()),
        Some(s) => Err(Error::Config(format!("the dump has no stream {s}"))),
        None => match meta.streams.as_slice() {
            [one] => Ok(one.name.clone()),
            _ => Err(Error::Config(
                "the dump has several streams; name one".into(),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mongo_presets() {
        let s = CommandSource::mongodump(Some("/etc/lb/mongo.yaml".into()), vec!["--gzip".into()]);
        assert_eq!(
            s.spec.display(),
            "mongodump --archive --config=/etc/lb/mongo.yaml --gzip"
        );
        let r = CommandSink::mongorestore(None, true, vec![]);
        assert_eq!(r.spec.display(), "mongorestore --archive --drop");
    }
}
