//! The embedding cache: vectors by (embedder fingerprint, exact text), bounded in bytes, evicted
//! by CLOCK, so a text that was embedded recently (a repeated prompt, the query a turn is then
//! stored from) is never sent to the embedder again.
//!
//! One mutex guards the table; a hit costs one hash of the text and a copy of its vector, far
//! below any embedder (the local model takes milliseconds, Gemini a round trip). Hash
//! collisions are harmless: the full key is compared, and a collision is a miss.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use super::embedder::Started;
use super::{MAX_EMBED_INPUTS, Memory, MemoryError, index, validate_text};
use crate::locks::lock;

/// Bytes an entry costs besides its text and vector (key, slot, table entry, allocations).
const ENTRY_OVERHEAD: usize = 96;

/// Vectors by (fingerprint, text), at most `budget` bytes of them.
#[derive(Debug)]
pub struct EmbedCache {
    budget: usize,
    hasher: RandomState,
    inner: Mutex<Clock>,
}

#[derive(Debug, Default)]
struct Clock {
    /// Key hash → slot.
    map: HashMap<u64, usize>,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    fingerprint: Arc<str>,
    text: Box<str>,
    vector: Arc<[f32]>,
    /// Set by every hit; CLOCK clears it once before evicting.
    referenced: bool,
}

impl Entry {
    fn bytes(&self) -> usize {
        cost(&self.text, self.vector.len())
    }
}

fn cost(text: &str, dims: usize) -> usize {
    text.len() + dims * std::mem::size_of::<f32>() + ENTRY_OVERHEAD
}

/// What the cache holds and has served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl EmbedCache {
    /// A cache of at most `budget` bytes (0: caches nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            hasher: RandomState::new(),
            inner: Mutex::new(Clock::default()),
        }
    }

    fn hash(&self, fingerprint: &str, text: &str) -> u64 {
        self.hasher.hash_one((fingerprint, text))
    }

    /// The vector of `text` under `fingerprint`, if cached.
    pub fn get(&self, fingerprint: &str, text: &str) -> Option<Vec<f32>> {
        if self.budget == 0 {
            return None;
        }
        let h = self.hash(fingerprint, text);
        let mut c = lock(&self.inner);
        let found = c.map.get(&h).copied().and_then(|i| {
            let e = c.slots[i].as_mut()?;
            (&*e.fingerprint == fingerprint && &*e.text == text).then(|| {
                e.referenced = true;
                e.vector.clone()
            })
        });
        match found {
            Some(v) => {
                c.hits += 1;
                drop(c);
                metrics::counter!("vectorway_embed_cache_hits_total").increment(1);
                Some(v.to_vec())
            }
            None => {
                c.misses += 1;
                drop(c);
                metrics::counter!("vectorway_embed_cache_misses_total").increment(1);
                None
            }
        }
    }

    /// Keeps `vector` as the embedding of `text` under `fingerprint`, evicting entries not used
    /// since the hand last passed them until it fits. An entry larger than the whole budget is
    /// not kept.
    pub fn put(&self, fingerprint: &Arc<str>, text: &str, vector: &[f32]) {
        let need = cost(text, vector.len());
        if need > self.budget {
            return;
        }
        let h = self.hash(fingerprint, text);
        let mut c = lock(&self.inner);
        if let Some(i) = c.map.get(&h).copied() {
            // The same key again (two callers embedded it at once), or a colliding key: the
            // newer one takes the slot.
            c.evict(i);
        }
        while c.bytes + need > self.budget && c.evict_one() {}
        let entry = Entry {
            hash: h,
            fingerprint: fingerprint.clone(),
            text: text.into(),
            vector: vector.into(),
            referenced: false,
        };
        c.bytes += need;
        let i = match c.free.pop() {
            Some(i) => {
                c.slots[i] = Some(entry);
                i
            }
            None => {
                c.slots.push(Some(entry));
                c.slots.len() - 1
            }
        };
        c.map.insert(h, i);
    }

    pub fn stats(&self) -> CacheStats {
        let c = lock(&self.inner);
        CacheStats {
            entries: c.map.len(),
            bytes: c.bytes,
            hits: c.hits,
            misses: c.misses,
        }
    }
}

impl Clock {
    fn evict(&mut self, i: usize) {
        if let Some(e) = self.slots[i].take() {
            self.bytes -= e.bytes();
            self.map.remove(&e.hash);
            self.free.push(i);
        }
    }

    /// Moves the hand until it evicts an entry (at most two turns); false when empty.
    fn evict_one(&mut self) -> bool {
        if self.map.is_empty() {
            return false;
        }
        for _ in 0..2 * self.slots.len() {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match self.slots[i].as_mut() {
                Some(e) if e.referenced => e.referenced = false,
                Some(_) => {
                    self.evict(i);
                    return true;
                }
                None => {}
            }
        }
        false
    }
}

// === the cache in front of `Memory`'s embedder ===

/// A query's embedding begun ahead of its search (`Memory::start_embed`).
#[derive(Debug)]
pub struct QueryEmbedding {
    text: String,
    state: Begun,
}

#[derive(Debug)]
enum Begun {
    Cached(Vec<f32>),
    Running(Started),
}

impl Memory {
    /// Starts embedding `text` (validated like a search query) and returns at once: a cached
    /// vector is taken now, the local model queues the text now, and `finish_embed` collects it.
    pub fn start_embed(&self, text: &str) -> QueryEmbedding {
        let state = match validate_text("q", text) {
            Err(e) => Begun::Running(Started::Failed(e)),
            Ok(()) => match self
                .cache
                .as_ref()
                .and_then(|c| c.get(&self.cache_key, text))
            {
                Some(v) => Begun::Cached(v),
                None => Begun::Running(self.embedder.start(vec![text.to_string()])),
            },
        };
        QueryEmbedding {
            text: text.to_string(),
            state,
        }
    }

    /// The unit vector of a `start_embed` (kept in the cache).
    pub async fn finish_embed(&self, q: QueryEmbedding) -> Result<Vec<f32>, MemoryError> {
        let mut out = match q.state {
            Begun::Cached(v) => vec![v],
            Begun::Running(started) => {
                let out = started.finish(&self.embedder).await?;
                if let (Some(c), [v]) = (&self.cache, out.as_slice()) {
                    c.put(&self.cache_key, &q.text, v);
                }
                out
            }
        };
        self.one_vector(&mut out)
    }

    fn one_vector(&self, out: &mut Vec<Vec<f32>>) -> Result<Vec<f32>, MemoryError> {
        match out.pop() {
            Some(mut v) if out.is_empty() && v.len() == self.dims() => {
                index::normalize(&mut v);
                Ok(v)
            }
            _ => Err(MemoryError::Internal(
                "the embedder returned no vector of the configured size".into(),
            )),
        }
    }

    /// One unit vector per text, in order (`POST /v1/embeddings`).
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        if texts.is_empty() || texts.len() > MAX_EMBED_INPUTS {
            return Err(MemoryError::validation(
                "input",
                format!("input must hold 1 to {MAX_EMBED_INPUTS} texts"),
            ));
        }
        for t in texts {
            validate_text("input", t)?;
        }
        self.embed_cached(texts).await
    }

    /// `embedder.embed` through the cache: only the texts it does not hold are embedded (in one
    /// call), and their vectors are kept.
    async fn embed_cached(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let Some(cache) = &self.cache else {
            return self.embed_checked(texts).await;
        };
        let mut out: Vec<Option<Vec<f32>>> = texts
            .iter()
            .map(|t| cache.get(&self.cache_key, t))
            .collect();
        let missing: Vec<String> = texts
            .iter()
            .zip(&out)
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        if !missing.is_empty() {
            let mut fresh = self.embed_checked(&missing).await?.into_iter();
            for (slot, text) in out.iter_mut().zip(texts).filter(|(v, _)| v.is_none()) {
                let v = fresh.next().unwrap_or_default();
                cache.put(&self.cache_key, text, &v);
                *slot = Some(v);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn embed_checked(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let vectors = self.embedder.embed(texts).await?;
        if vectors.len() != texts.len() {
            return Err(MemoryError::Internal(format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        Ok(vectors)
    }

    /// The unit vector of one text (through the cache).
    pub async fn embed_one(&self, text: &str) -> Result<Vec<f32>, MemoryError> {
        let mut out = self.embed_cached(&[text.to_string()]).await?;
        self.one_vector(&mut out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Embedder;

    fn v(x: f32) -> Vec<f32> {
        vec![x; 4]
    }

    #[test]
    fn hit_and_miss_by_exact_text() {
        let c = EmbedCache::new(1 << 20);
        let fp: Arc<str> = "model-a".into();
        assert_eq!(c.get(&fp, "hello"), None);
        c.put(&fp, "hello", &v(1.0));
        assert_eq!(c.get(&fp, "hello"), Some(v(1.0)));
        assert_eq!(
            c.get(&fp, "hello "),
            None,
            "exact text, not a normalised one"
        );
        assert_eq!(c.get(&fp, "Hello"), None);
        let s = c.stats();
        assert_eq!((s.entries, s.hits, s.misses), (1, 1, 3));
        // The same key again replaces, without counting twice.
        c.put(&fp, "hello", &v(2.0));
        assert_eq!(c.get(&fp, "hello"), Some(v(2.0)));
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.stats().bytes, cost("hello", 4));
    }

    #[test]
    fn fingerprints_separate_vector_spaces() {
        let c = EmbedCache::new(1 << 20);
        let (a, b): (Arc<str>, Arc<str>) = ("gemini:x/768".into(), "local-model:y".into());
        c.put(&a, "same text", &v(1.0));
        assert_eq!(c.get(&b, "same text"), None);
        c.put(&b, "same text", &v(2.0));
        assert_eq!(c.get(&a, "same text"), Some(v(1.0)));
        assert_eq!(c.get(&b, "same text"), Some(v(2.0)));
        // (fingerprint, text) is the key, not their concatenation.
        let (ab, empty): (Arc<str>, Arc<str>) = ("ab".into(), "a".into());
        c.put(&ab, "c", &v(3.0));
        assert_eq!(c.get(&empty, "bc"), None);
    }

    #[test]
    fn bounded_in_bytes_and_keeps_what_is_used() {
        let per = cost("text 000", 4);
        let c = EmbedCache::new(per * 10);
        let fp: Arc<str> = "fp".into();
        c.put(&fp, "text 000", &v(0.0));
        for i in 1..100 {
            // The first text is used all along: CLOCK keeps it while the others churn.
            assert!(c.get(&fp, "text 000").is_some(), "evicted at {i}");
            c.put(&fp, &format!("text {i:03}"), &v(i as f32));
            let s = c.stats();
            assert!(s.bytes <= per * 10, "{} bytes over the budget", s.bytes);
            assert!(s.entries <= 10);
        }
        assert_eq!(c.stats().entries, 10);
        assert_eq!(c.get(&fp, "text 099"), Some(v(99.0)));
        assert_eq!(c.get(&fp, "text 050"), None, "long evicted");
        // An entry larger than the budget is refused; a zero budget caches nothing.
        c.put(&fp, &"x".repeat(per * 10), &v(1.0));
        assert!(c.stats().bytes <= per * 10);
        let none = EmbedCache::new(0);
        none.put(&fp, "a", &v(1.0));
        assert_eq!(none.get(&fp, "a"), None);
    }

    /// The model behind `Memory`: a text written is not embedded again when it is searched
    /// for, whether the search embeds inline or ahead (`start_embed`); a new text is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_embeds_each_text_once() {
        use crate::memory::model::{MiniLm, ModelEmbedder};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::Store::open_when_free(dir.path()).unwrap();
        let model = MiniLm::load(&crate::memory::model::tests::test_model_dir()).unwrap();
        let e = ModelEmbedder::start(model).unwrap();
        let m = Memory::new(store, Embedder::Model(e.clone()), Default::default());
        let w = crate::wallet::Wallet([7; 20]);
        let text = "User: my flight leaves at 9\nAssistant: noted";
        m.write(w, None, text).await.unwrap();
        let rounds = e.rounds();
        let hits = m.search(w, None, text, 1).await.unwrap();
        assert_eq!(hits[0].text, text);
        let ahead = m.start_embed(text);
        let v = m.finish_embed(ahead).await.unwrap();
        assert_eq!(e.rounds(), rounds, "a cached text went to the model");
        let s = m.cache_stats().unwrap();
        assert_eq!((s.entries, s.hits), (1, 2));
        let other = m
            .finish_embed(m.start_embed("the plane departs in the morning"))
            .await;
        assert_eq!(e.rounds(), rounds + 1);
        let other = other.unwrap();
        let c: f32 = v.iter().zip(&other).map(|(a, b)| a * b).sum();
        assert!(c < 0.99 && c > 0.2, "{c}");
        // Feature hashing is cheaper than a lookup: no cache.
        let dir2 = tempfile::tempdir().unwrap();
        let store = crate::storage::Store::open_when_free(dir2.path()).unwrap();
        let hashing = Memory::new(
            store,
            Embedder::Local(crate::memory::LocalEmbedder::new(16)),
            Default::default(),
        );
        assert!(hashing.cache_stats().is_none());
    }
}
