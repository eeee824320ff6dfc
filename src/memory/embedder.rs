//! Text → unit vectors: Gemini `batchEmbedContents`, the local all-MiniLM-L6-v2 model
//! (`model.rs`), or a deterministic feature-hashing embedder (the fallback, and in tests).

use super::MemoryError;
use super::model::{self, ModelEmbedder, ModelError};
use crate::config::{EmbedderKind, MemoryConfig};
use crate::upstream::Gemini;

/// Version tag of the local embedder's features; bump it when `LocalEmbedder` changes, so that
/// stored vectors made by the old scheme are recognised as incomparable.
const LOCAL_VERSION: &str = "local-v1";

/// Turns texts into unit-length vectors of a fixed size.
#[derive(Debug, Clone)]
pub enum Embedder {
    Gemini(Box<GeminiEmbedder>),
    /// all-MiniLM-L6-v2 in process (`memory.embedder = "local-model"`).
    Model(ModelEmbedder),
    Local(LocalEmbedder),
}

/// Gemini `batchEmbedContents` with a model and an output size.
#[derive(Debug, Clone)]
pub struct GeminiEmbedder {
    pub client: Gemini,
    pub model: String,
    pub dims: usize,
}

impl Embedder {
    /// The embedder the memory config asks for; `client` is used only for `EmbedderKind::Gemini`.
    /// The local model is loaded (and its files verified) here, so this blocks for a moment and
    /// fails when the files are missing or corrupt.
    pub fn from_config(cfg: &MemoryConfig, client: Gemini) -> Result<Self, ModelError> {
        Ok(match cfg.embedder {
            EmbedderKind::Gemini => Embedder::Gemini(Box::new(GeminiEmbedder {
                client,
                model: cfg.embed_model.clone(),
                dims: cfg.dims,
            })),
            EmbedderKind::LocalModel => Embedder::Model(ModelEmbedder::open(&cfg.model_dir)?),
            EmbedderKind::Local => Embedder::Local(LocalEmbedder::new(cfg.dims)),
        })
    }

    /// The model's name, for the `model` field of `/v1/embeddings` answers.
    pub fn model_name(&self) -> &str {
        match self {
            Embedder::Gemini(g) => &g.model,
            Embedder::Model(_) => model::MODEL_NAME,
            Embedder::Local(_) => "local-feature-hashing",
        }
    }

    /// Number of values in every vector.
    pub fn dims(&self) -> usize {
        match self {
            Embedder::Gemini(g) => g.dims,
            Embedder::Model(_) => model::DIMS,
            Embedder::Local(l) => l.dims(),
        }
    }

    /// Names the vector space: two vectors are comparable only when their fingerprints are equal.
    pub fn fingerprint(&self) -> String {
        match self {
            Embedder::Gemini(g) => format!("gemini:{}/{}", g.model, g.dims),
            Embedder::Model(m) => format!("local-model:{}", m.fingerprint()),
            Embedder::Local(l) => format!("{LOCAL_VERSION}/{}", l.dims()),
        }
    }

    /// Starts embedding `texts` without waiting: the local model queues them at once, so the
    /// caller's other work overlaps the forward pass.
    pub fn start(&self, texts: Vec<String>) -> Started {
        match self {
            Embedder::Model(m) => match m.submit(texts) {
                Ok(rx) => Started::Queued(rx),
                Err(e) => Started::Failed(MemoryError::Internal(e.to_string())),
            },
            Embedder::Gemini(_) | Embedder::Local(_) => Started::Deferred(texts),
        }
    }

    /// One unit vector per text, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        match self {
            Embedder::Gemini(g) => Ok(g.client.embed(&g.model, texts, g.dims).await?),
            Embedder::Model(m) => m
                .embed(texts.to_vec())
                .await
                .map_err(|e| MemoryError::Internal(e.to_string())),
            Embedder::Local(l) => Ok(texts.iter().map(|t| l.embed_one(t)).collect()),
        }
    }
}

/// An embedding under way (`Embedder::start`): the local model has the texts queued already;
/// the other embedders embed them when it is finished.
#[derive(Debug)]
pub enum Started {
    Queued(model::Submitted),
    Deferred(Vec<String>),
    Failed(MemoryError),
}

impl Started {
    /// The vectors, in order.
    pub async fn finish(self, embedder: &Embedder) -> Result<Vec<Vec<f32>>, MemoryError> {
        match self {
            Started::Queued(rx) => ModelEmbedder::finish(rx)
                .await
                .map_err(|e| MemoryError::Internal(e.to_string())),
            Started::Deferred(texts) => embedder.embed(&texts).await,
            Started::Failed(e) => Err(e),
        }
    }
}

/// Feature hashing: each lower-cased word, each pair of adjacent words and each character
/// trigram of a word (with `^`/`$` boundary marks) adds a signed weight to one hashed
/// coordinate; the sum is scaled to unit length. Texts sharing words or word pieces share
/// coordinates, so similar texts score higher than unrelated ones. The hash is spelled out
/// here (not `std`'s `DefaultHasher`, whose output may change between Rust releases) because
/// the vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEmbedder {
    dims: usize,
}

/// Feature weights: whole words carry most of the meaning; pieces catch inflections and typos.
const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.5;
const TRIGRAM_WEIGHT: f32 = 0.25;

impl LocalEmbedder {
    /// An embedder producing `dims` values (at least 1).
    pub fn new(dims: usize) -> Self {
        Self { dims: dims.max(1) }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The unit vector of one text; a text without any letter or digit hashes as a whole, and
    /// the empty text is the zero vector.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let mut chars = Vec::new();
        for (i, w) in words.iter().enumerate() {
            self.add(&mut v, b'w', &[w.as_bytes()], WORD_WEIGHT);
            if let Some(next) = words.get(i + 1) {
                self.add(
                    &mut v,
                    b'b',
                    &[w.as_bytes(), b" ", next.as_bytes()],
                    BIGRAM_WEIGHT,
                );
            }
            chars.clear();
            chars.push('^');
            chars.extend(w.chars());
            chars.push('$');
            let mut buf = [0u8; 12];
            for tri in chars.windows(3) {
                let mut len = 0;
                for c in tri {
                    len += c.encode_utf8(&mut buf[len..]).len();
                }
                self.add(&mut v, b't', &[&buf[..len]], TRIGRAM_WEIGHT);
            }
        }
        if words.is_empty() && !text.trim().is_empty() {
            self.add(&mut v, b'r', &[text.trim().as_bytes()], WORD_WEIGHT);
        }
        let norm = v
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            v.iter_mut().for_each(|x| *x *= inv);
        }
        v
    }

    /// Adds `weight` with a hashed sign at the hashed coordinate of the feature `kind ‖ parts`.
    fn add(&self, v: &mut [f32], kind: u8, parts: &[&[u8]], weight: f32) {
        let h = feature_hash(kind, parts);
        let idx = (h % self.dims as u64) as usize;
        v[idx] += if h >> 63 == 0 { weight } else { -weight };
    }
}

/// FNV-1a over the bytes, then the SplitMix64 finalizer so that the low bits (the coordinate)
/// and the top bit (the sign) are both well mixed.
fn feature_hash(kind: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&kind).chain(parts.iter().flat_map(|p| p.iter())) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a of `w` ‖ `memory` with the SplitMix64 finalizer, computed independently.
    const PINNED_HASH: u64 = 2_886_968_252_573_836_865;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_and_unit_length() {
        let e = LocalEmbedder::new(768);
        let a = e.embed_one("The agent ran the nightly simulation.");
        assert_eq!(a, e.embed_one("The agent ran the nightly simulation."));
        assert_eq!(a.len(), 768);
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        // Fixed values pin the hash: stored vectors must not change between builds.
        assert_eq!(feature_hash(b'w', &[b"memory"]), PINNED_HASH);
        let pinned = LocalEmbedder::new(8).embed_one("memory");
        let again = LocalEmbedder::new(8).embed_one("MEMORY!");
        assert_eq!(pinned, again, "case and punctuation are ignored");
        assert!(e.embed_one("").iter().all(|x| *x == 0.0));
        assert!((cos(&e.embed_one("!!!"), &e.embed_one("!!!")) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn similar_texts_are_closer() {
        let e = LocalEmbedder::new(768);
        let base = e.embed_one("we ran the load test against the staging gateway yesterday");
        let near = e.embed_one("yesterday's load tests ran against the staging gateway");
        let far = e.embed_one("my favourite pasta recipe uses fresh basil and garlic");
        assert!(cos(&base, &near) > 0.5, "{}", cos(&base, &near));
        assert!(cos(&base, &near) > cos(&base, &far) + 0.3);
        let typo = e.embed_one("simulaton results");
        let right = e.embed_one("simulation results");
        assert!(cos(&typo, &right) > 0.5, "trigrams bridge a typo");
    }

    #[tokio::test]
    async fn the_enum_embeds_in_order_with_a_stable_fingerprint() {
        let e = Embedder::Local(LocalEmbedder::new(16));
        let texts = vec!["one".to_string(), "two".to_string()];
        let out = e.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], LocalEmbedder::new(16).embed_one("two"));
        assert_eq!(e.fingerprint(), "local-v1/16");
        assert_eq!(e.dims(), 16);
    }
}
