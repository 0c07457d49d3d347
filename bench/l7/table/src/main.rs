//! `flatnet-bench-l7-table DIR [ROUNDS]`: loads the manifests of DIR (e.g. the 10,000-host
//! folder `l7bench.py gen` writes) and builds the route table ROUNDS times (default 30) the
//! way `flatnet l7`'s watcher does: the new table built, the old one dropped, its memory
//! given back. Prints the median, p90 and max build time in milliseconds and the route count.

use flatnet_l7::manifests::{list, Objects};
use std::time::Instant;

#[global_allocator]
static ALLOC: flatnet_alloc::Allocator = flatnet_alloc::Allocator;

fn main() -> anyhow::Result<()> {
    flatnet_alloc::return_freed_memory_after(std::time::Duration::from_millis(100));
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: DIR [ROUNDS]"))?;
    let rounds: usize = args.next().map_or(Ok(30), |r| r.parse())?;
    let mut objects = Objects::default();
    for file in list(dir.as_ref())?.files {
        objects.parse(
            &std::fs::read_to_string(&file)?,
            &file.display().to_string(),
        )?;
    }
    let mut table = objects.table();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let next = objects.table();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        drop(std::mem::replace(&mut table, next));
        flatnet_alloc::give_back_freed_memory();
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "routes={} rounds={rounds} median_ms={:.2} p90_ms={:.2} max_ms={:.2}",
        table.routes().len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    Ok(())
}
