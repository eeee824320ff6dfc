//! Index tests: the dot product, exact search, tombstones, compaction, and the graph against
//! the exact answer.

use super::*;

/// SplitMix64: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Roughly normal (sum of uniforms), good enough for test data.
    fn normal(&mut self) -> f32 {
        let s: f64 = (0..6)
            .map(|_| (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            .sum();
        ((s - 3.0) * std::f64::consts::SQRT_2) as f32
    }
}

/// Points around `clusters` random centres, unit length.
fn clustered(n: usize, dims: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dims).map(|_| rng.normal()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % clusters];
            let mut v: Vec<f32> = c.iter().map(|x| x + spread * rng.normal()).collect();
            normalize(&mut v);
            v
        })
        .collect()
}

fn id(i: usize) -> MemoryId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    MemoryId::from_bytes(b)
}

fn params(exact_threshold: usize) -> IndexParams {
    IndexParams {
        exact_threshold,
        max_connections: 12,
        ef_construction: 64,
        ef_search: 48,
    }
}

fn filled(vectors: &[Vec<f32>], exact_threshold: usize) -> Index {
    let mut ix = Index::new(vectors[0].len(), params(exact_threshold));
    for (i, v) in vectors.iter().enumerate() {
        assert!(ix.insert(id(i), v));
    }
    ix
}

fn ids_of(hits: &[(MemoryId, f32)]) -> Vec<MemoryId> {
    hits.iter().map(|(id, _)| *id).collect()
}

#[test]
fn dot_matches_the_naive_sum_at_every_length() {
    let mut rng = Rng(1);
    for n in 0..70 {
        let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let naive: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-4, "n = {n}");
    }
    assert_eq!(
        UnitCosine.eval(&[1.0, 0.0], &[1.0000001, 0.0]),
        0.0,
        "never negative"
    );
}

#[test]
fn top_k_keeps_the_best_in_order() {
    let mut top = TopK::new(3);
    for (s, r) in [
        (0.1, 0),
        (0.9, 1),
        (0.5, 2),
        (0.9, 3),
        (f32::NAN, 4),
        (0.2, 5),
    ] {
        top.push(s, r);
    }
    assert_eq!(top.items, vec![(0.9, 1), (0.9, 3), (0.5, 2)]);
}

#[test]
fn exact_search_deletes_and_compaction() {
    let vs = clustered(100, 32, 10, 0.3, 7);
    let mut ix = filled(&vs, 1_000);
    assert!(!ix.insert(id(0), &vs[0]), "ids are unique");
    assert!(!ix.insert(id(999), &vs[0][..31]), "wrong size");
    let hits = ix.search(&vs[42], 5);
    assert_eq!(hits[0].0, id(42));
    assert!((hits[0].1 - 1.0).abs() < 1e-5);
    assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));

    assert!(ix.delete(&id(42)));
    assert!(!ix.delete(&id(42)), "a second delete finds nothing");
    assert!(!ids_of(&ix.search(&vs[42], 100)).contains(&id(42)));
    assert_eq!(
        (ix.live(), ix.rows()),
        (99, 100),
        "a tombstone, not yet compacted"
    );

    // Past 25% dead, exact mode compacts and the survivors are still found.
    for i in 0..25 {
        ix.delete(&id(i));
    }
    assert_eq!(ix.rows(), ix.live());
    assert_eq!(ix.live(), 74);
    for i in [30, 60, 99] {
        assert_eq!(ix.search(&vs[i], 1)[0].0, id(i));
    }
    assert_eq!(ix.search(&vs[1], 200).len(), 74);
}

/// Recall@10 of `ix.search` against `ix.search_exact` over `queries`.
fn recall(ix: &Index, queries: &[Vec<f32>]) -> f64 {
    let mut hit = 0;
    for q in queries {
        let truth = ids_of(&ix.search_exact(q, 10));
        let got = ids_of(&ix.search(q, 10));
        hit += got.iter().filter(|id| truth.contains(id)).count();
    }
    hit as f64 / (10 * queries.len()) as f64
}

#[test]
fn graph_agrees_with_exact_search() {
    let vs = clustered(2_000, 24, 40, 0.6, 11);
    let queries = clustered(100, 24, 40, 0.6, 12);
    let mut ix = filled(&vs, 500);
    assert_eq!(ix.graph_points(), 0, "nothing is built until asked");
    ix.maintain_now();
    assert_eq!(ix.graph_points(), 2_000);
    let r = recall(&ix, &queries);
    assert!(r >= 0.95, "recall@10 = {r}");
    // Scores come from the rows, so a hit scores as in an exact scan.
    let q = &queries[0];
    assert_eq!(ix.search(q, 1)[0], ix.search_exact(q, 1)[0]);
}

#[test]
fn the_tail_is_searched_at_once_and_extended_later() {
    let vs = clustered(900, 16, 30, 0.5, 3);
    let mut ix = filled(&vs[..600], 100);
    ix.maintain_now();
    assert_eq!(ix.graph_points(), 600);
    for (i, v) in vs.iter().enumerate().skip(600) {
        ix.insert(id(i), v);
    }
    assert_eq!(ix.search(&vs[850], 1)[0].0, id(850), "the tail is scanned");
    ix.maintain_now();
    assert_eq!(ix.graph_points(), 900);
    assert_eq!(ix.search(&vs[850], 1)[0].0, id(850));
}

#[test]
fn tombstones_past_a_quarter_rebuild_the_graph() {
    let vs = clustered(1_000, 16, 20, 0.5, 5);
    let mut ix = filled(&vs, 100);
    ix.maintain_now();
    for i in 0..250 {
        ix.delete(&id(i));
    }
    assert_eq!(ix.graph_dead(), 250);
    assert!(ix.plan().is_none(), "exactly 25% is not past it");
    ix.delete(&id(250));
    for i in [0, 100, 250] {
        assert!(
            !ids_of(&ix.search(&vs[i], 10)).contains(&id(i)),
            "gone at once"
        );
    }
    let job = ix.plan().expect("a rebuild is due");
    ix.install(job.run());
    assert_eq!(
        (ix.graph_points(), ix.graph_dead(), ix.rows()),
        (749, 0, 749)
    );
    assert_eq!(ix.search(&vs[700], 1)[0].0, id(700));
    assert!(!ids_of(&ix.search(&vs[5], 50)).contains(&id(5)));
}

#[test]
fn install_merges_what_changed_during_a_build() {
    let vs = clustered(700, 16, 20, 0.5, 9);
    let mut ix = filled(&vs[..600], 100);
    let job = ix.plan().expect("a build is due");
    assert!(ix.plan().is_none(), "one job at a time");
    // Meanwhile: deletes inside the snapshot, and new rows after it.
    ix.delete(&id(3));
    ix.delete(&id(4));
    for (i, v) in vs.iter().enumerate().skip(600) {
        ix.insert(id(i), v);
    }
    ix.delete(&id(650));
    ix.install(job.run());
    assert_eq!((ix.graph_points(), ix.graph_dead()), (600, 2));
    assert_eq!((ix.live(), ix.rows()), (697, 700));
    assert!(!ids_of(&ix.search(&vs[3], 20)).contains(&id(3)));
    assert!(!ids_of(&ix.search(&vs[650], 20)).contains(&id(650)));
    assert_eq!(ix.search(&vs[690], 1)[0].0, id(690));
    assert_eq!(ix.search(&vs[10], 1)[0].0, id(10));
}

#[test]
fn a_job_planned_before_a_compaction_is_dropped() {
    let vs = clustered(40, 8, 4, 0.5, 2);
    let mut ix = filled(&vs, 20);
    let job = ix.plan().expect("a build is due");
    for i in 0..11 {
        ix.delete(&id(i));
    }
    assert_eq!(ix.rows(), 29, "exact mode compacted");
    ix.install(job.run());
    assert_eq!(ix.graph_points(), 0, "the stale build was dropped");
    ix.maintain_now();
    assert_eq!(ix.graph_points(), 29);
    assert_eq!(ix.search(&vs[30], 1)[0].0, id(30));
}
