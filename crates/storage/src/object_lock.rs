//! S3 Object Lock: per-object retention on upload, and reading it back.
//!
//! OpenDAL 0.55's S3 service can neither send the object-lock headers on a
//! `PutObject` nor report an object's retention, and a bucket *default*
//! retention makes S3 (and moto) refuse every upload without `Content-MD5` or
//! `x-amz-sdk-checksum-algorithm`, which OpenDAL does not send. So the two
//! calls needed are made here directly, signed with `reqsign` (the AWS SigV4
//! signer OpenDAL itself uses; no new crate in the build):
//!
//! * `PUT /<key>?retention` (`PutObjectRetention`, with `Content-MD5`) right
//!   after each upload, by [`ObjectLockLayer`];
//! * `HEAD /<key>` by [`Storage::retention`], reading the
//!   `x-amz-object-lock-mode` and `x-amz-object-lock-retain-until-date`
//!   headers (S3 sends them to callers allowed `s3:GetObjectRetention`; moto
//!   has no `GetObjectRetention`), so `prune` and `forget` can refuse before
//!   deleting anything.
//!
//! The bucket must have been created with Object Lock enabled (which also
//! turns on versioning); `GET /?object-lock` ([`S3ObjectLock::bucket_enabled`])
//! checks that. Credentials and region come from the same environment and
//! profile OpenDAL reads.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::Digest as _;

use crate::open::RepoUrl;
use crate::runtime::block_on;
use crate::{
    BackendOptions, DynStorage, ObjectMeta, PutOptions, Retention, S3Addressing, Storage,
    StorageError, StorageResult,
};

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete early.
    Governance,
    /// Nobody, not even the root account, can delete before the date.
    Compliance,
}

impl LockMode {
    /// `GOVERNANCE` / `COMPLIANCE`, as S3 spells it.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// A repository's Object Lock setting: every object a restore needs gets
/// `mode` retention until `days` after its upload. Written as `MODE:DAYSd`
/// (`governance:30d`, `compliance:90d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectLockSetting {
    pub mode: LockMode,
    pub days: u32,
}

impl std::fmt::Display for ObjectLockSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        };
        write!(f, "{mode}:{}d", self.days)
    }
}

impl std::str::FromStr for ObjectLockSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!("object lock {s:?} is not MODE:DAYSd (e.g. governance:30d or compliance:90d)")
        };
        let (mode, days) = s.trim().split_once(':').ok_or_else(usage)?;
        let mode = match mode.to_ascii_lowercase().as_str() {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            _ => return Err(usage()),
        };
        let days: u32 = days
            .trim()
            .trim_end_matches('d')
            .parse()
            .map_err(|_| usage())?;
        if days == 0 || days > 36_500 {
            return Err(format!(
                "object lock of {days} days: the retention must be 1 to 36500 days"
            ));
        }
        Ok(ObjectLockSetting { mode, days })
    }
}

/// A client for the object-lock calls on the bucket and prefix of an S3 repository URL.
#[derive(Debug, Clone)]
pub struct S3ObjectLock {
    client: reqwest::Client,
    /// `https://host[:port]/bucket` (path style) or `https://bucket.host` (virtual host).
    base: String,
    /// Key prefix inside the bucket, without slashes at the ends (may be empty).
    prefix: String,
    region: String,
    location: String,
}

impl S3ObjectLock {
    /// The client for `url`, or `None` when `url` is not an S3 repository.
    ///
    /// # Errors
    /// [`StorageError::Config`] for an unparsable URL or an AWS URL without a region.
    pub fn for_url(url: &str, opts: &BackendOptions) -> StorageResult<Option<S3ObjectLock>> {
        let parsed = RepoUrl::parse(url)?;
        let location = parsed.display();
        let RepoUrl::S3 {
            endpoint,
            bucket,
            prefix,
        } = parsed
        else {
            return Ok(None);
        };
        let env = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let endpoint = opts
            .endpoint
            .clone()
            .or(endpoint)
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let region = opts
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"));
        let (base, region) = match endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/').to_string();
                let base = if opts.addressing == Some(S3Addressing::VirtualHost) {
                    let (scheme, host) = e.split_once("://").unwrap_or(("https", &e));
                    format!("{scheme}://{bucket}.{host}")
                } else {
                    format!("{e}/{bucket}")
                };
                (base, region.unwrap_or_else(|| "us-east-1".into()))
            }
            None => {
                let region = region.ok_or_else(|| StorageError::Config {
                    location: location.clone(),
                    message: "S3 Object Lock needs the bucket's region (AWS_REGION or --region)"
                        .into(),
                })?;
                (
                    format!("https://{bucket}.s3.{region}.amazonaws.com"),
                    region,
                )
            }
        };
        Ok(Some(S3ObjectLock {
            client: reqwest::Client::new(),
            base,
            prefix: prefix.trim_matches('/').to_string(),
            region,
            location,
        }))
    }

    fn object_url(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            format!("{}/{key}", self.base)
        } else {
            format!("{}/{}/{key}", self.base, self.prefix)
        }
    }

    fn backend_err(&self, key: &str, message: String, retryable: bool) -> StorageError {
        StorageError::Backend {
            key: key.to_string(),
            location: self.location.clone(),
            message,
            retryable,
        }
    }

    /// Send a signed request; returns the status, the object-lock headers
    /// (mode, retain-until) and the body.
    fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        url: String,
        body: Option<Vec<u8>>,
    ) -> StorageResult<(u16, Option<String>, Option<String>, String)> {
        let this = self.clone();
        let key_owned = key.to_string();
        block_on(async move {
            let config = reqsign::AwsConfig::default().from_profile().from_env();
            let loader = reqsign::AwsDefaultLoader::new(this.client.clone(), config)
                .with_disable_ec2_metadata();
            let cred = loader
                .load()
                .await
                .map_err(|e| {
                    this.backend_err(&key_owned, format!("loading AWS credentials: {e}"), false)
                })?
                .ok_or_else(|| {
                    this.backend_err(
                        &key_owned,
                        "no AWS credentials found (AWS_ACCESS_KEY_ID / profile)".into(),
                        false,
                    )
                })?;
            let mut builder = this.client.request(method, &url);
            if let Some(b) = body {
                let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&b));
                builder = builder
                    .header("content-md5", md5)
                    .header("content-type", "application/xml")
                    .body(b);
            }
            let mut req = builder
                .build()
                .map_err(|e| this.backend_err(&key_owned, e.to_string(), false))?;
            reqsign::AwsV4Signer::new("s3", &this.region)
                .sign(&mut req, &cred)
                .map_err(|e| this.backend_err(&key_owned, format!("signing: {e}"), false))?;
            let resp = this
                .client
                .execute(req)
                .await
                .map_err(|e| this.backend_err(&key_owned, e.to_string(), true))?;
            let status = resp.status().as_u16();
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let mode = header("x-amz-object-lock-mode");
            let until = header("x-amz-object-lock-retain-until-date");
            let text = resp
                .text()
                .await
                .map_err(|e| this.backend_err(&key_owned, e.to_string(), true))?;
            Ok((status, mode, until, text))
        })
    }

    /// Whether the bucket has Object Lock enabled (`GET /?object-lock`).
    ///
    /// # Errors
    /// Storage errors other than "no object-lock configuration".
    pub fn bucket_enabled(&self) -> StorageResult<bool> {
        let (status, _, _, body) = self.send(
            "",
            reqwest::Method::GET,
            format!("{}?object-lock", self.base),
            None,
        )?;
        match status {
            200 => Ok(tag(&body, "ObjectLockEnabled").as_deref() == Some("Enabled")),
            404 => Ok(false),
            _ => Err(self.backend_err(
                "",
                format!("GetObjectLockConfiguration: HTTP {status}: {body}"),
                false,
            )),
        }
    }

    /// Set the retention of `key` (`PutObjectRetention`).
    ///
    /// # Errors
    /// Storage errors naming the key.
    pub fn put_retention(
        &self,
        key: &str,
        mode: LockMode,
        until: DateTime<Utc>,
    ) -> StorageResult<()> {
        let xml = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.as_s3(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let (status, _, _, body) = self.send(
            key,
            reqwest::Method::PUT,
            format!("{}?retention", self.object_url(key)),
            Some(xml.into_bytes()),
        )?;
        if status == 200 || status == 204 {
            return Ok(());
        }
        Err(self.backend_err(
            key,
            format!("setting object-lock retention: HTTP {status}: {body}"),
            status >= 500,
        ))
    }

    /// The retention of `key` (from `HEAD`), `None` if it has none.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] for a missing key; other storage errors.
    pub fn retention(&self, key: &str) -> StorageResult<Option<Retention>> {
        let (status, mode, until, _) =
            self.send(key, reqwest::Method::HEAD, self.object_url(key), None)?;
        match status {
            200 => {
                let Some(until) = until else {
                    return Ok(None);
                };
                let until = DateTime::parse_from_rfc3339(&until)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|e| {
                        self.backend_err(
                            key,
                            format!("unreadable retain-until date {until:?}: {e}"),
                            false,
                        )
                    })?;
                Ok(Some(Retention {
                    mode: mode.unwrap_or_default(),
                    until,
                }))
            }
            404 => Err(StorageError::NotFound {
                key: key.to_string(),
                location: self.location.clone(),
            }),
            _ => Err(self.backend_err(
                key,
                format!("reading object-lock retention: HTTP {status}"),
                status >= 500,
            )),
        }
    }
}

/// The text of the first `<name>...</name>` element of `xml`.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim().to_string())
}

/// Key prefixes whose objects get retention: everything a restore needs.
/// Session locks, prune marks and verification records are working state,
/// rewritten or deleted all the time, and get none.
pub const RETAINED_PREFIXES: &[&str] = &[
    "config",
    "keys/",
    "data/",
    "index/",
    "snapshots/",
    "parity/",
    "wal/",
];

/// A storage wrapper that sets Object Lock retention on every object it
/// uploads under [`RETAINED_PREFIXES`] (retain until upload time + `days`),
/// and answers [`Storage::retention`].
#[derive(Debug)]
pub struct ObjectLockLayer {
    inner: DynStorage,
    lock: Arc<S3ObjectLock>,
    mode: LockMode,
    days: u32,
}

impl ObjectLockLayer {
    pub fn new(inner: DynStorage, lock: S3ObjectLock, mode: LockMode, days: u32) -> Self {
        Self {
            inner,
            lock: Arc::new(lock),
            mode,
            days,
        }
    }

    /// The layer for a repository's [`ObjectLockSetting`].
    pub fn with_setting(inner: DynStorage, lock: S3ObjectLock, s: ObjectLockSetting) -> Self {
        Self::new(inner, lock, s.mode, s.days)
    }
}

impl Storage for ObjectLockLayer {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<()> {
        self.inner.put(key, data, options)?;
        if RETAINED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            // The layer sits outside the retry layer (the upload below is
            // retried there), so its own request gets a few tries here.
            let mut attempt = 0u32;
            loop {
                let until = Utc::now() + chrono::Duration::days(i64::from(self.days));
                match self.lock.put_retention(key, self.mode, until) {
                    Err(e) if e.is_retryable() && attempt < 4 => {
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
                    }
                    r => return r,
                }
            }
        }
        Ok(())
    }

    fn get(&self, key: &str, range: Option<std::ops::Range<u64>>) -> StorageResult<Bytes> {
        self.inner.get(key, range)
    }

    fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(key)
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key)
    }

    fn retention(&self, key: &str) -> StorageResult<Option<Retention>> {
        self.lock.retention(key)
    }
}
