//! One wallet namespace's vector index: an exact scan over contiguous rows, with an HNSW graph
//! (`hnsw_rs`) over a prefix of the rows once there are enough of them.
//!
//! Rows are unit vectors stored back to back in one `Vec<f32>`, in insertion order; a row's
//! number is also its id inside the graph. The graph covers rows `0..covered`; rows after that
//! (the tail, written since the graph was built) are scanned exactly, so a search sees every
//! write at once. Deletes are tombstones: the row stays, flagged dead, and searches skip it.
//!
//! Graph work is slow, so it never runs under the caller's lock. `plan` hands out at most one
//! `Job` at a time (build a graph, rebuild it without the dead rows, or add the tail to it);
//! `Job::run` does the work anywhere; `install` merges the result with whatever changed in the
//! meantime. A rebuild renumbers rows, so every job carries the index generation it was
//! planned against, and a stale result is dropped.
//!
//! When jobs are planned:
//! - no graph and at least `exact_threshold` live rows: build one;
//! - dead rows are more than 25% of the graph's points: rebuild it from the live rows;
//! - the tail reaches `EXTEND_AT` rows: insert it into the graph.
//!
//! Without a graph, dead rows past 25% are compacted at once (a copy of fewer than
//! `exact_threshold` rows).

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use hnsw_rs::prelude::{Distance, Hnsw};

use super::MemoryId;

/// Tail length at which the tail is inserted into the graph.
pub const EXTEND_AT: usize = 256;

/// Fewest dead rows worth compacting in exact mode.
const COMPACT_MIN_DEAD: usize = 8;

/// `hnsw_rs` keeps at most 16 layers.
const MAX_LAYERS: usize = 16;

/// Graph and search settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Below this many live rows the index is an exact scan only.
    pub exact_threshold: usize,
    /// Links per point and layer (`M`; layer 0 keeps twice as many).
    pub max_connections: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to the number of results asked for).
    pub ef_search: usize,
}

impl Default for IndexParams {
    /// Settings chosen with `bench/memory_index.rs` (100k clustered 768-dimensional vectors):
    /// recall@10 ≈ 0.98 at ef_search 32, against 0.96 at 24 and 0.99 at 48 with ~1.6× the
    /// time; M 16 and ef_construction 100 build 100k points in about a minute on two cores
    /// (M 24 / 200 took four, for a recall gain the search does not need).
    fn default() -> Self {
        Self {
            exact_threshold: 2_000,
            max_connections: 16,
            ef_construction: 100,
            ef_search: 32,
        }
    }
}

/// Cosine distance between unit vectors, `1 − a·b`, never negative (`hnsw_rs` asserts that)
/// and never NaN.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

type Graph = Hnsw<'static, f32, UnitCosine>;

/// Accumulator lanes of `dot`: four SSE registers' worth of independent sums.
const LANES: usize = 16;

/// The dot product, written so that the compiler vectorizes it: fixed-size chunks summed into
/// independent lanes (no loop-carried dependency on a single float), then the lanes folded
/// four at a time, the shape LLVM turns into packed multiplies and adds.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    let mut quad = [0f32; 4];
    for i in 0..4 {
        quad[i] = (acc[i] + acc[i + 4]) + (acc[i + 8] + acc[i + 12]);
    }
    (quad[0] + quad[1]) + (quad[2] + quad[3]) + tail
}

/// Scales `v` to unit length in place; the zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// The best `k` (score, row) pairs seen so far, best first; ties keep the lower row first.
struct TopK {
    k: usize,
    items: Vec<(f32, u32)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    /// The score a candidate must beat to enter (−∞ until `k` are held).
    #[inline]
    fn floor(&self) -> f32 {
        if self.items.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.items.last().map_or(f32::NEG_INFINITY, |(s, _)| *s)
        }
    }

    #[inline]
    fn push(&mut self, score: f32, row: u32) {
        if self.k == 0 || score.is_nan() || score <= self.floor() {
            return;
        }
        let at = self.items.partition_point(|(s, _)| *s >= score);
        self.items.insert(at, (score, row));
        self.items.truncate(self.k);
    }
}

/// The graph and what it covers.
struct GraphState {
    hnsw: Arc<Graph>,
    /// Rows `0..covered` are in the graph.
    covered: usize,
    /// Dead rows among them.
    dead: usize,
}

/// Slow graph work handed out by `Index::plan`; run it anywhere, then `Index::install` it.
pub struct Job {
    generation: u64,
    params: IndexParams,
    dims: usize,
    kind: JobKind,
}

enum JobKind {
    /// A fresh graph over the live rows among `0..base_rows`, in order; `old_rows[j]` is where
    /// new row `j` was.
    Build {
        base_rows: usize,
        ids: Vec<MemoryId>,
        old_rows: Vec<u32>,
        vectors: Vec<f32>,
    },
    /// Rows `from..from + vectors.len() / dims` added to the current graph.
    Extend {
        hnsw: Arc<Graph>,
        from: usize,
        vectors: Vec<f32>,
    },
}

/// What an `install` replaced (a stale result, the old graph, the old rows): big, and slow to
/// free, so it is dropped after the index lock is released.
pub struct Replaced {
    _stale: Option<Finished>,
    _graph: Option<Arc<Graph>>,
    _rows: Vec<f32>,
}

/// A job's result.
pub struct Finished {
    generation: u64,
    kind: FinishedKind,
}

enum FinishedKind {
    Built {
        hnsw: Arc<Graph>,
        base_rows: usize,
        ids: Vec<MemoryId>,
        old_rows: Vec<u32>,
        vectors: Vec<f32>,
    },
    Extended {
        to: usize,
    },
}

impl Job {
    /// Does the graph work (seconds for large indexes; uses rayon's threads for builds).
    pub fn run(self) -> Finished {
        let Job {
            generation,
            params,
            dims,
            kind,
        } = self;
        let kind = match kind {
            JobKind::Build {
                base_rows,
                ids,
                old_rows,
                vectors,
            } => {
                let hnsw = Graph::new(
                    params.max_connections,
                    ids.len().max(1),
                    MAX_LAYERS,
                    params.ef_construction,
                    UnitCosine,
                );
                let points: Vec<(&[f32], usize)> = vectors
                    .chunks_exact(dims)
                    .enumerate()
                    .map(|(i, v)| (v, i))
                    .collect();
                hnsw.parallel_insert_slice(&points);
                drop(points);
                metrics::counter!("vectorway_memory_index_jobs_total", "kind" => "build")
                    .increment(1);
                FinishedKind::Built {
                    hnsw: Arc::new(hnsw),
                    base_rows,
                    ids,
                    old_rows,
                    vectors,
                }
            }
            JobKind::Extend {
                hnsw,
                from,
                vectors,
            } => {
                for (i, v) in vectors.chunks_exact(dims).enumerate() {
                    hnsw.insert_slice((v, from + i));
                }
                metrics::counter!("vectorway_memory_index_jobs_total", "kind" => "extend")
                    .increment(1);
                FinishedKind::Extended {
                    to: from + vectors.len() / dims,
                }
            }
        };
        Finished { generation, kind }
    }
}

/// The index of one (wallet, namespace).
pub struct Index {
    dims: usize,
    params: IndexParams,
    /// Row-major unit vectors, `dims` values per row.
    rows: Vec<f32>,
    ids: Vec<MemoryId>,
    dead: Vec<bool>,
    n_dead: usize,
    /// Live rows by id.
    row_of: HashMap<MemoryId, u32>,
    graph: Option<GraphState>,
    /// Bumped whenever rows are renumbered; jobs planned against an older one are dropped.
    generation: u64,
    /// A job is out (at most one at a time).
    busy: bool,
}

impl Index {
    /// An empty index of `dims`-value vectors.
    pub fn new(dims: usize, params: IndexParams) -> Self {
        Self {
            dims: dims.max(1),
            params,
            rows: Vec::new(),
            ids: Vec::new(),
            dead: Vec::new(),
            n_dead: 0,
            row_of: HashMap::new(),
            graph: None,
            generation: 0,
            busy: false,
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Live (searchable) vectors.
    pub fn live(&self) -> usize {
        self.row_of.len()
    }

    /// Rows held, dead ones included.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Points in the graph (0 without one).
    pub fn graph_points(&self) -> usize {
        self.graph.as_ref().map_or(0, |g| g.covered)
    }

    /// Dead points in the graph.
    pub fn graph_dead(&self) -> usize {
        self.graph.as_ref().map_or(0, |g| g.dead)
    }

    /// Changes the search-time candidate list size (benches sweep it; it needs no rebuild).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// The oldest live vector: rows keep insertion order through compactions and rebuilds, and
    /// a load inserts in id order, which is creation order (`MemoryId::now_v7` is time-ordered).
    pub fn oldest(&self) -> Option<MemoryId> {
        self.dead.iter().position(|d| !d).map(|r| self.ids[r])
    }

    pub fn contains(&self, id: &MemoryId) -> bool {
        self.row_of.contains_key(id)
    }

    /// Adds a vector (normalized here); `false` when the id is already present or the vector
    /// has the wrong size or a non-finite value.
    pub fn insert(&mut self, id: MemoryId, vector: &[f32]) -> bool {
        if vector.len() != self.dims
            || self.row_of.contains_key(&id)
            || vector.iter().any(|x| !x.is_finite())
        {
            return false;
        }
        let Ok(row) = u32::try_from(self.ids.len()) else {
            return false;
        };
        let start = self.rows.len();
        self.rows.extend_from_slice(vector);
        normalize(&mut self.rows[start..]);
        self.ids.push(id);
        self.dead.push(false);
        self.row_of.insert(id, row);
        true
    }

    /// Tombstones a vector; `false` when the id is not live here. Compacts at once in exact
    /// mode past 25% dead.
    pub fn delete(&mut self, id: &MemoryId) -> bool {
        let Some(row) = self.row_of.remove(id) else {
            return false;
        };
        let row = row as usize;
        self.dead[row] = true;
        self.n_dead += 1;
        if let Some(g) = &mut self.graph
            && row < g.covered
        {
            g.dead += 1;
        }
        if self.graph.is_none()
            && self.n_dead >= COMPACT_MIN_DEAD
            && self.n_dead * 4 > self.ids.len()
        {
            self.compact_exact();
        }
        true
    }

    /// Drops the dead rows (exact mode only: there is no graph numbering to keep).
    fn compact_exact(&mut self) {
        let d = self.dims;
        let mut w = 0;
        for r in 0..self.ids.len() {
            if self.dead[r] {
                continue;
            }
            if w != r {
                self.rows.copy_within(r * d..(r + 1) * d, w * d);
                self.ids[w] = self.ids[r];
            }
            w += 1;
        }
        self.rows.truncate(w * d);
        self.ids.truncate(w);
        self.dead.clear();
        self.dead.resize(w, false);
        self.n_dead = 0;
        self.reindex();
        self.generation += 1;
    }

    /// Rebuilds `row_of` from the live rows.
    fn reindex(&mut self) {
        self.row_of.clear();
        for (r, id) in self.ids.iter().enumerate() {
            if !self.dead[r] {
                self.row_of.insert(*id, r as u32);
            }
        }
    }

    /// The top `k` live vectors by cosine similarity to `query` (a unit vector), best first:
    /// the graph for the rows it covers, an exact scan for the rest.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(MemoryId, f32)> {
        if k == 0 || query.len() != self.dims {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        let start = match &self.graph {
            Some(g) => {
                self.search_graph(g, query, k, &mut top);
                g.covered
            }
            None => 0,
        };
        self.scan(query, start, &mut top);
        self.finish(top)
    }

    /// The exact top `k`, ignoring the graph (the reference for recall measurements).
    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<(MemoryId, f32)> {
        if k == 0 || query.len() != self.dims {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        self.scan(query, 0, &mut top);
        self.finish(top)
    }

    fn finish(&self, top: TopK) -> Vec<(MemoryId, f32)> {
        top.items
            .into_iter()
            .map(|(s, r)| (self.ids[r as usize], s.clamp(-1.0, 1.0)))
            .collect()
    }

    /// Scores rows `start..` one after the other: the hot loop of exact mode.
    fn scan(&self, query: &[f32], start: usize, top: &mut TopK) {
        let d = self.dims;
        let rows = self.rows.get(start * d..).unwrap_or(&[]);
        for (i, row) in rows.chunks_exact(d).enumerate() {
            let r = start + i;
            if self.dead[r] {
                continue;
            }
            top.push(dot(query, row), r as u32);
        }
    }

    /// Asks the graph for `k` live rows, widening the request while dead rows crowd them out;
    /// scores are recomputed exactly from the rows.
    fn search_graph(&self, g: &GraphState, query: &[f32], k: usize, top: &mut TopK) {
        let live = g.covered - g.dead;
        if live == 0 {
            return;
        }
        let want = k.min(live);
        let mut ask = if g.dead == 0 { k } else { 2 * k };
        loop {
            let found = g.hnsw.search(query, ask, self.params.ef_search.max(ask));
            let mut hits = 0;
            for n in &found {
                let r = n.d_id;
                if r < g.covered && !self.dead[r] {
                    hits += 1;
                    let row = &self.rows[r * self.dims..(r + 1) * self.dims];
                    top.push(dot(query, row), r as u32);
                }
            }
            if hits >= want || ask >= g.covered {
                return;
            }
            ask = (ask * 4).min(g.covered);
        }
    }

    /// The next piece of graph work, if any is due and none is out. The caller must pass the
    /// job's result to `install` (or call `abandon`) before another is handed out.
    pub fn plan(&mut self) -> Option<Job> {
        if self.busy {
            return None;
        }
        let kind = match &self.graph {
            None if self.live() > 0 && self.live() >= self.params.exact_threshold => {
                self.build_job()
            }
            Some(g) if g.dead * 4 > g.covered => self.build_job(),
            Some(g) if self.ids.len() - g.covered >= EXTEND_AT => {
                let from = g.covered;
                JobKind::Extend {
                    hnsw: g.hnsw.clone(),
                    from,
                    vectors: self.rows[from * self.dims..].to_vec(),
                }
            }
            _ => return None,
        };
        self.busy = true;
        Some(Job {
            generation: self.generation,
            params: self.params,
            dims: self.dims,
            kind,
        })
    }

    fn build_job(&self) -> JobKind {
        let d = self.dims;
        let mut ids = Vec::with_capacity(self.live());
        let mut old_rows = Vec::with_capacity(self.live());
        let mut vectors = Vec::with_capacity(self.live() * d);
        for (r, id) in self.ids.iter().enumerate() {
            if !self.dead[r] {
                ids.push(*id);
                old_rows.push(r as u32);
                vectors.extend_from_slice(&self.rows[r * d..(r + 1) * d]);
            }
        }
        JobKind::Build {
            base_rows: self.ids.len(),
            ids,
            old_rows,
            vectors,
        }
    }

    /// Gives up on the job out (for example, it panicked); another may be planned.
    pub fn abandon(&mut self) {
        self.busy = false;
    }

    /// Merges a finished job with the changes made since it was planned; a stale one (the
    /// rows were renumbered meanwhile) is dropped. Returns what it replaced, for the caller to
    /// free once it has let go of the index.
    pub fn install(&mut self, done: Finished) -> Replaced {
        self.busy = false;
        if done.generation != self.generation {
            return Replaced {
                _stale: Some(done),
                _graph: None,
                _rows: Vec::new(),
            };
        }
        match done.kind {
            FinishedKind::Extended { to } => {
                if let Some(g) = &mut self.graph {
                    g.dead += self.dead[g.covered..to].iter().filter(|d| **d).count();
                    g.covered = to;
                }
            }
            FinishedKind::Built {
                hnsw,
                base_rows,
                ids,
                old_rows,
                vectors,
            } => {
                let d = self.dims;
                // The built prefix, with the deletes made during the build re-applied.
                let mut dead: Vec<bool> = old_rows.iter().map(|r| self.dead[*r as usize]).collect();
                let graph_dead = dead.iter().filter(|x| **x).count();
                let covered = ids.len();
                let mut rows = vectors;
                let mut new_ids = ids;
                // The tail written during the build, as it is now.
                rows.extend_from_slice(&self.rows[base_rows * d..]);
                new_ids.extend_from_slice(&self.ids[base_rows..]);
                dead.extend_from_slice(&self.dead[base_rows..]);
                self.n_dead = dead.iter().filter(|x| **x).count();
                let old_rows = std::mem::replace(&mut self.rows, rows);
                self.ids = new_ids;
                self.dead = dead;
                self.reindex();
                let old_graph = self.graph.replace(GraphState {
                    hnsw,
                    covered,
                    dead: graph_dead,
                });
                self.generation += 1;
                return Replaced {
                    _stale: None,
                    _graph: old_graph.map(|g| g.hnsw),
                    _rows: old_rows,
                };
            }
        }
        Replaced {
            _stale: None,
            _graph: None,
            _rows: Vec::new(),
        }
    }

    /// Runs every due job here and now (tests, benches, and small indexes).
    pub fn maintain_now(&mut self) {
        while let Some(job) = self.plan() {
            let done = job.run();
            drop(self.install(done));
        }
    }
}
