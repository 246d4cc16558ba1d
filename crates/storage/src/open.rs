//! Repository URLs and [`open_storage`].
//!
//! | URL | backend |
//! |-----|---------|
//! | `/srv/repo`, `./repo`, `local:/srv/repo` | [`LocalStorage`] |
//! | `s3://bucket/prefix` | Amazon S3 (virtual-host addressing by default) |
//! | `s3:https://host:9000/bucket/prefix` | S3-compatible store at a custom endpoint (path-style by default) |
//! | `gcs://bucket/prefix` (or `gs://`) | Google Cloud Storage |
//! | `azure://container/prefix` | Azure Blob Storage |
//! | `sftp://user@host:22/abs/path` | [`SftpStorage`](crate::SftpStorage) (OpenSSH `ssh` client, keys and agent) |
//! | `webdav://host[:port]/path`, `webdavs://…` | WebDAV over HTTP / HTTPS |
//!
//! Credentials are never part of a URL or of [`BackendOptions`]: each backend
//! takes them from its provider's usual environment variables and config files
//! (see `docs/BACKENDS.md`). A URL with a password in it is refused.

use std::path::PathBuf;
use std::sync::Arc;

use opendal::services::{Azblob, Gcs, Webdav, S3};
use opendal::Operator;
use serde::{Deserialize, Serialize};

use crate::error::redact;
use crate::remote::{map_opendal_error, OpendalStorage};
use crate::runtime::block_on;
use crate::sftp::{SftpConfig, SftpStorage};
use crate::{DynStorage, LocalStorage, StorageError, StorageResult};

/// S3 request addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum S3Addressing {
    /// `https://host/bucket/key` (default for custom endpoints: MinIO, Ceph, moto).
    PathStyle,
    /// `https://bucket.host/key` (default for AWS).
    VirtualHost,
}

/// How the GCS backend authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GcsAuth {
    /// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's config, or the VM metadata server.
    Default,
    /// No credentials at all: public buckets and local emulators (fake-gcs-server).
    Anonymous,
}

/// What SSH does with the server's host key (`StrictHostKeyChecking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// The host key must already be in `known_hosts` (default).
    #[default]
    Strict,
    /// Unknown hosts are added; changed keys are refused (`accept-new`).
    AcceptNew,
    /// Any host key is accepted (`no`). Only for throwaway test servers.
    AcceptAny,
}

/// Backend settings that are not credentials. Maps onto a config file section
/// and onto CLI flags; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendOptions {
    /// S3 region. Falls back to `AWS_REGION` / `AWS_DEFAULT_REGION` / the
    /// profile, then (AWS only) to asking S3; `us-east-1` for custom endpoints.
    pub region: Option<String>,
    /// Override the endpoint (S3: also `AWS_ENDPOINT_URL`; Azure: also
    /// `AZURE_STORAGE_ENDPOINT`; GCS: the JSON API endpoint).
    pub endpoint: Option<String>,
    /// Storage class for new objects (S3: `STANDARD_IA`, `GLACIER_IR`, …;
    /// GCS: `NEARLINE`, `COLDLINE`, …).
    pub storage_class: Option<String>,
    /// S3 server-side encryption: `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
    /// KMS key id for `aws:kms` (AWS-managed key when absent).
    pub sse_kms_key_id: Option<String>,
    /// S3 addressing style (default: virtual-host on AWS, path-style elsewhere).
    pub addressing: Option<S3Addressing>,
    /// SSH identity file (a path; the key itself is never read by Lifeboat).
    /// Without it `ssh` uses its usual keys, `~/.ssh/config` and the agent.
    pub sftp_identity: Option<PathBuf>,
    /// SSH host key policy.
    pub sftp_known_hosts: KnownHosts,
    /// A `known_hosts` file to use instead of `~/.ssh/known_hosts`.
    pub sftp_known_hosts_file: Option<PathBuf>,
    /// GCS authentication (`-o gcs-auth=anonymous` for emulators and public buckets).
    pub gcs_auth: Option<GcsAuth>,
}

/// A parsed repository URL (holds no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    Local(PathBuf),
    S3 {
        /// `None` for AWS; `Some("https://host:9000")` for a custom endpoint.
        endpoint: Option<String>,
        bucket: String,
        prefix: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    Azure {
        container: String,
        prefix: String,
    },
    Sftp {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
    Webdav {
        /// `http://host[:port]` or `https://host[:port]`.
        endpoint: String,
        path: String,
    },
}

fn config_err(location: &str, message: impl Into<String>) -> StorageError {
    StorageError::Config {
        location: redact(location),
        message: message.into(),
    }
}

/// Split `bucket/some/prefix` into (`bucket`, `some/prefix`).
fn bucket_and_prefix(url: &str, rest: &str, what: &str) -> StorageResult<(String, String)> {
    let rest = rest.trim_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(config_err(url, format!("the URL names no {what}")));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl RepoUrl {
    /// Parse a repository URL (see the [module documentation](self)).
    ///
    /// # Errors
    /// [`StorageError::Config`] for an unknown scheme, a missing bucket or host,
    /// or a URL that carries a password.
    pub fn parse(url: &str) -> StorageResult<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(config_err(url, "empty repository location"));
        }
        if let Some(path) = url.strip_prefix("local:") {
            return Ok(RepoUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = bucket_and_prefix(url, rest, "bucket")?;
            return Ok(RepoUrl::S3 {
                endpoint: None,
                bucket,
                prefix,
            });
        }
        if let Some(rest) = url.strip_prefix("s3:") {
            let parsed = url::Url::parse(rest)
                .map_err(|e| config_err(url, format!("bad S3 endpoint URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(config_err(
                    url,
                    "an S3 endpoint must be http:// or https://",
                ));
            }
            reject_userinfo(url, &parsed)?;
            let host = parsed
                .host_str()
                .ok_or_else(|| config_err(url, "the S3 endpoint names no host"))?;
            let endpoint = match parsed.port() {
                Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
                None => format!("{}://{host}", parsed.scheme()),
            };
            let (bucket, prefix) = bucket_and_prefix(url, parsed.path(), "bucket")?;
            return Ok(RepoUrl::S3 {
                endpoint: Some(endpoint),
                bucket,
                prefix,
            });
        }
        for scheme in ["gcs://", "gs://"] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let (bucket, prefix) = bucket_and_prefix(url, rest, "bucket")?;
                return Ok(RepoUrl::Gcs { bucket, prefix });
            }
        }
        if let Some(rest) = url.strip_prefix("azure://") {
            let (container, prefix) = bucket_and_prefix(url, rest, "container")?;
            return Ok(RepoUrl::Azure { container, prefix });
        }
        if url.starts_with("sftp://") {
            let parsed =
                url::Url::parse(url).map_err(|e| config_err(url, format!("bad SFTP URL: {e}")))?;
            reject_userinfo(url, &parsed)?;
            let host = parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| config_err(url, "the SFTP URL names no host"))?;
            let user = Some(parsed.username().to_string()).filter(|u| !u.is_empty());
            let path = percent_decode(parsed.path());
            if path.trim_matches('/').is_empty() {
                return Err(config_err(url, "the SFTP URL names no directory"));
            }
            return Ok(RepoUrl::Sftp {
                user,
                host: host.to_string(),
                port: parsed.port(),
                path: path.trim_end_matches('/').to_string(),
            });
        }
        for (scheme, http) in [("webdav://", "http"), ("webdavs://", "https")] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let as_http = format!("{http}://{rest}");
                let parsed = url::Url::parse(&as_http)
                    .map_err(|e| config_err(url, format!("bad WebDAV URL: {e}")))?;
                reject_userinfo(url, &parsed)?;
                let host = parsed
                    .host_str()
                    .ok_or_else(|| config_err(url, "the WebDAV URL names no host"))?;
                let endpoint = match parsed.port() {
                    Some(port) => format!("{http}://{host}:{port}"),
                    None => format!("{http}://{host}"),
                };
                return Ok(RepoUrl::Webdav {
                    endpoint,
                    path: percent_decode(parsed.path()).trim_matches('/').to_string(),
                });
            }
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(config_err(
                url,
                format!("unknown storage scheme {scheme:?} (known: local:, s3:, gcs:, azure:, sftp:, webdav:)"),
            ));
        }
        Ok(RepoUrl::Local(PathBuf::from(url)))
    }

    /// The location shown to users and in errors (no secrets, normalised).
    pub fn display(&self) -> String {
        match self {
            RepoUrl::Local(p) => p.display().to_string(),
            RepoUrl::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                let tail = join(bucket, prefix);
                match endpoint {
                    Some(e) => format!("s3:{e}/{tail}"),
                    None => format!("s3://{tail}"),
                }
            }
            RepoUrl::Gcs { bucket, prefix } => format!("gcs://{}", join(bucket, prefix)),
            RepoUrl::Azure { container, prefix } => format!("azure://{}", join(container, prefix)),
            RepoUrl::Sftp {
                user,
                host,
                port,
                path,
            } => {
                let user = user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("sftp://{user}{host}{port}{path}")
            }
            RepoUrl::Webdav { endpoint, path } => {
                let scheme = if endpoint.starts_with("https") {
                    "webdavs"
                } else {
                    "webdav"
                };
                let host = endpoint.split_once("://").map(|x| x.1).unwrap_or(endpoint);
                format!("{scheme}://{host}/{path}")
            }
        }
    }
}

fn join(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        bucket.to_string()
    } else {
        format!("{bucket}/{prefix}")
    }
}

fn reject_userinfo(url: &str, parsed: &url::Url) -> StorageResult<()> {
    if parsed.password().is_some() {
        return Err(config_err(
            url,
            "passwords are not accepted in repository URLs; use the backend's environment variables",
        ));
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Open the storage a repository URL names.
///
/// No request is sent (except the one-time S3 region lookup on AWS when no
/// region is configured anywhere); connection and credential problems show up
/// on the first operation.
///
/// # Errors
/// [`StorageError::Config`] for an unparsable URL, an unusable option or a
/// backend that cannot be configured (e.g. Azure without an account name).
///
/// # Example
/// ```
/// use lifeboat_storage::{open_storage, BackendOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let storage = open_storage(dir.path().to_str().unwrap(), &BackendOptions::default()).unwrap();
/// assert!(storage.list("snapshots").unwrap().is_empty());
/// ```
pub fn open_storage(url: &str, opts: &BackendOptions) -> StorageResult<DynStorage> {
    let parsed = RepoUrl::parse(url)?;
    let location = parsed.display();
    let build_err = |e: opendal::Error| match map_opendal_error("", &location, e) {
        e @ StorageError::Config { .. } => e,
        other => config_err(&location, other.to_string()),
    };
    let op = match &parsed {
        RepoUrl::Local(path) => return Ok(Arc::new(LocalStorage::new(path.clone()))),
        RepoUrl::S3 {
            endpoint,
            bucket,
            prefix,
        } => {
            let mut b = S3::default().bucket(bucket).root(&format!("/{prefix}"));
            let endpoint = opts.endpoint.clone().or_else(|| endpoint.clone());
            let custom_endpoint = endpoint.is_some() || env("AWS_ENDPOINT_URL").is_some();
            if let Some(e) = &endpoint {
                b = b.endpoint(e);
            }
            let region = opts
                .region
                .clone()
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"));
            let region = match region {
                Some(r) => Some(r),
                None if custom_endpoint => Some("us-east-1".to_string()),
                // AWS with no region anywhere: the profile may name one (OpenDAL
                // reads it), otherwise ask S3 where the bucket lives.
                None if aws_profile_has_region() => None,
                None => {
                    let bucket = bucket.clone();
                    block_on(
                        async move { S3::detect_region("https://s3.amazonaws.com", &bucket).await },
                    )
                }
            };
            if let Some(r) = &region {
                b = b.region(r);
            }
            let addressing = opts.addressing.unwrap_or(if custom_endpoint {
                S3Addressing::PathStyle
            } else {
                S3Addressing::VirtualHost
            });
            if addressing == S3Addressing::VirtualHost {
                b = b.enable_virtual_host_style();
            }
            if let Some(class) = &opts.storage_class {
                b = b.default_storage_class(class);
            }
            match opts.server_side_encryption.as_deref() {
                None => {}
                Some("AES256") => b = b.server_side_encryption_with_s3_key(),
                Some("aws:kms") => {
                    b = match &opts.sse_kms_key_id {
                        Some(id) => b.server_side_encryption_with_customer_managed_kms_key(id),
                        None => b.server_side_encryption_with_aws_managed_kms_key(),
                    }
                }
                Some(other) => {
                    return Err(config_err(
                        &location,
                        format!("unknown server-side encryption {other:?} (use AES256 or aws:kms)"),
                    ))
                }
            }
            Operator::new(b).map_err(build_err)?.finish()
        }
        RepoUrl::Gcs { bucket, prefix } => {
            let mut b = Gcs::default().bucket(bucket).root(&format!("/{prefix}"));
            if let Some(e) = &opts.endpoint {
                b = b.endpoint(e);
            }
            if opts.gcs_auth == Some(GcsAuth::Anonymous) {
                b = b
                    .allow_anonymous()
                    .disable_vm_metadata()
                    .disable_config_load();
            } else if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
                b = b.credential_path(&path);
            }
            if let Some(class) = &opts.storage_class {
                b = b.default_storage_class(class);
            }
            Operator::new(b).map_err(build_err)?.finish()
        }
        RepoUrl::Azure { container, prefix } => {
            let mut b = match env("AZURE_STORAGE_CONNECTION_STRING") {
                Some(conn) => Azblob::from_connection_string(&conn).map_err(build_err)?,
                None => Azblob::default(),
            };
            b = b.container(container).root(&format!("/{prefix}"));
            let account =
                env("AZURE_STORAGE_ACCOUNT").or_else(|| env("AZURE_STORAGE_ACCOUNT_NAME"));
            if let Some(a) = &account {
                b = b.account_name(a);
            }
            if let Some(key) = env("AZURE_STORAGE_KEY").or_else(|| env("AZURE_STORAGE_ACCOUNT_KEY"))
            {
                b = b.account_key(&key);
            }
            if let Some(sas) = env("AZURE_STORAGE_SAS_TOKEN") {
                b = b.sas_token(&sas);
            }
            let endpoint = opts
                .endpoint
                .clone()
                .or_else(|| env("AZURE_STORAGE_ENDPOINT"));
            match (endpoint, &account) {
                (Some(e), _) => b = b.endpoint(&e),
                (None, Some(a)) => b = b.endpoint(&format!("https://{a}.blob.core.windows.net")),
                (None, None) if env("AZURE_STORAGE_CONNECTION_STRING").is_some() => {}
                (None, None) => return Err(config_err(
                    &location,
                    "set AZURE_STORAGE_ACCOUNT (and AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN)",
                )),
            }
            Operator::new(b).map_err(build_err)?.finish()
        }
        RepoUrl::Sftp {
            user,
            host,
            port,
            path,
        } => {
            let config = SftpConfig {
                host: host.clone(),
                port: *port,
                user: user.clone(),
                identity: opts.sftp_identity.clone(),
                known_hosts: opts.sftp_known_hosts,
                known_hosts_file: opts.sftp_known_hosts_file.clone(),
                root: path.clone(),
            };
            return Ok(Arc::new(SftpStorage::new(config, location)));
        }
        RepoUrl::Webdav { endpoint, path } => {
            let mut b = Webdav::default()
                .endpoint(endpoint)
                .root(&format!("/{path}"));
            if let Some(user) = env("LIFEBOAT_WEBDAV_USERNAME") {
                b = b.username(&user);
            }
            if let Some(pass) = env("LIFEBOAT_WEBDAV_PASSWORD") {
                b = b.password(&pass);
            }
            if let Some(token) = env("LIFEBOAT_WEBDAV_TOKEN") {
                b = b.token(&token);
            }
            Operator::new(b).map_err(build_err)?.finish()
        }
    };
    Ok(Arc::new(OpendalStorage::new(op, location)))
}

/// Whether `~/.aws/config` gives the selected profile a region.
fn aws_profile_has_region() -> bool {
    let path = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join("config")));
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return false;
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let wanted = if profile == "default" {
        "[default]".to_string()
    } else {
        format!("[profile {profile}]")
    };
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == wanted;
        } else if in_section && line.split('=').next().map(str::trim) == Some("region") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let cases: Vec<(&str, RepoUrl)> = vec![
            ("/srv/repo", RepoUrl::Local("/srv/repo".into())),
            ("relative/repo", RepoUrl::Local("relative/repo".into())),
            ("local:/srv/repo", RepoUrl::Local("/srv/repo".into())),
            (
                "s3://bkt/some/prefix/",
                RepoUrl::S3 {
                    endpoint: None,
                    bucket: "bkt".into(),
                    prefix: "some/prefix".into(),
                },
            ),
            (
                "s3://bkt",
                RepoUrl::S3 {
                    endpoint: None,
                    bucket: "bkt".into(),
                    prefix: "".into(),
                },
            ),
            (
                "s3:https://minio.local:9000/bkt/repo",
                RepoUrl::S3 {
                    endpoint: Some("https://minio.local:9000".into()),
                    bucket: "bkt".into(),
                    prefix: "repo".into(),
                },
            ),
            (
                "gcs://b/p",
                RepoUrl::Gcs {
                    bucket: "b".into(),
                    prefix: "p".into(),
                },
            ),
            (
                "gs://b",
                RepoUrl::Gcs {
                    bucket: "b".into(),
                    prefix: "".into(),
                },
            ),
            (
                "azure://c/x/y",
                RepoUrl::Azure {
                    container: "c".into(),
                    prefix: "x/y".into(),
                },
            ),
            (
                "sftp://bob@host.example:2222/srv/backups",
                RepoUrl::Sftp {
                    user: Some("bob".into()),
                    host: "host.example".into(),
                    port: Some(2222),
                    path: "/srv/backups".into(),
                },
            ),
            (
                "sftp://host/srv/a%20b/",
                RepoUrl::Sftp {
                    user: None,
                    host: "host".into(),
                    port: None,
                    path: "/srv/a b".into(),
                },
            ),
            (
                "webdav://dav.example:8080/remote.php/repo",
                RepoUrl::Webdav {
                    endpoint: "http://dav.example:8080".into(),
                    path: "remote.php/repo".into(),
                },
            ),
            (
                "webdavs://dav.example/repo",
                RepoUrl::Webdav {
                    endpoint: "https://dav.example".into(),
                    path: "repo".into(),
                },
            ),
        ];
        for (url, want) in cases {
            assert_eq!(RepoUrl::parse(url).unwrap(), want, "{url}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in [
            "s3://bkt/p",
            "s3:http://127.0.0.1:9000/bkt/p",
            "gcs://b/p",
            "azure://c/p",
            "sftp://bob@h:22/srv/r",
            "webdav://h:8080/x",
            "webdavs://h/x",
        ] {
            let parsed = RepoUrl::parse(url).unwrap();
            assert_eq!(parsed.display(), url);
            assert_eq!(RepoUrl::parse(&parsed.display()).unwrap(), parsed);
        }
    }

    #[test]
    fn refuses_bad_urls_without_echoing_passwords() {
        for url in [
            "s3://",
            "s3:ftp://h/b",
            "sftp://h",
            "sftp://bob:hunter22@h/srv",
            "webdavs://bob:hunter22@h/x",
            "s3:https://AK:hunter22@h/b",
            "ftp://h/x",
        ] {
            let err = RepoUrl::parse(url).unwrap_err();
            assert!(matches!(err, StorageError::Config { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("hunter22"), "{err}");
        }
    }

    #[test]
    fn s3_options_are_validated() {
        let opts = BackendOptions {
            server_side_encryption: Some("rot13".into()),
            ..Default::default()
        };
        let err = open_storage("s3:http://127.0.0.1:1/b", &opts).unwrap_err();
        assert!(err.to_string().contains("rot13"), "{err}");
        let opts = BackendOptions {
            region: Some("eu-west-1".into()),
            storage_class: Some("STANDARD_IA".into()),
            server_side_encryption: Some("aws:kms".into()),
            sse_kms_key_id: Some("key-1".into()),
            addressing: Some(S3Addressing::VirtualHost),
            ..Default::default()
        };
        let s = open_storage("s3:http://127.0.0.1:1/b/p", &opts).unwrap();
        assert_eq!(s.location(), "s3:http://127.0.0.1:1/b/p");
    }

    #[test]
    fn options_deserialize_from_config() {
        let opts: BackendOptions = serde_json::from_str(
            r#"{"region":"eu-central-1","storage_class":"STANDARD_IA","addressing":"path-style","sftp_known_hosts":"accept-new"}"#,
        )
        .unwrap();
        assert_eq!(opts.addressing, Some(S3Addressing::PathStyle));
        assert_eq!(opts.sftp_known_hosts, KnownHosts::AcceptNew);
    }
}
