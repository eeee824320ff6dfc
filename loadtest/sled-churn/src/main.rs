//! sled-churn: inserts OPS records of 3.5 KB (a 768-float memory record) into one sled tree with
//! an 8 MiB cache, removing the oldest once CAP are live, and prints VmRSS every 20,000 ops.
//!
//!   cargo run --release --offline --manifest-path loadtest/sled-churn/Cargo.toml -- [OPS] [CAP]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn key(i: u64) -> [u8; 36] {
    let mut k = [1u8; 36]; // wallet (20) ‖ time-ordered id (16), as the gateway keys memory
    k[20..28].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ops: u64 = args.next().map_or(Ok(600_000), |a| a.parse())?;
    let cap: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("sled-churn-{}", std::process::id()));
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(8 << 20)
        .open()?;
    let tree = db.open_tree("memory")?;
    let value = vec![7u8; 3500];
    for i in 0..ops {
        tree.insert(key(i), &value[..])?;
        if i >= cap {
            tree.remove(key(i - cap))?;
        }
        if i % 20_000 == 0 {
            println!("{i} ops: RSS {} kB, {} live", rss_kb(), tree.len());
        }
    }
    println!("{ops} ops: RSS {} kB", rss_kb());
    drop(tree);
    drop(db);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
