//! `flatnet-bench-l7-table DIR [ROUNDS]`: loads the manifests of DIR (e.g. the 10,000-host
//! folder `l7bench.py gen` writes) and makes its route table ROUNDS times (default 30) the
//! way `flatnet l7`'s watcher does, the old table dropped and its memory given back each
//! time: built from all objects, then updated after one Ingress changed (the middle one's
//! first path switched to another Service and back, as a route change does). Prints the
//! median, p90 and max of each in milliseconds and the route count.

use flatnet_l7::manifests::{list, Objects};
use flatnet_l7_routes::{IngressChange, Table};
use k8s_openapi::api::networking::v1::Ingress;
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
    let built = rounds_of(rounds, &mut table, |_| objects.table());
    let middle = objects.ingresses.len() / 2;
    let updated = rounds_of(rounds, &mut table, |table| {
        let before = objects.ingresses[middle].clone();
        let after = switched(&before);
        objects.ingresses[middle] = after.clone();
        let change = IngressChange {
            before: &[before],
            after: &[after],
        };
        let updated = table.update(&objects.inputs(), &change);
        updated.expect("an Ingress without TLS or default backend")
    });
    println!(
        "routes={} rounds={rounds} build_ms(median,p90,max)={built} update_ms(median,p90,max)={updated}",
        table.routes().len()
    );
    Ok(())
}

/// Times `make` `rounds` times, each new table replacing `table`; "median,p90,max" in ms.
fn rounds_of(rounds: usize, table: &mut Table, mut make: impl FnMut(&Table) -> Table) -> String {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let next = make(table);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        drop(std::mem::replace(table, next));
        flatnet_alloc::give_back_freed_memory();
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!("{:.2},{:.2},{:.2}", at(0.5), at(0.9), at(1.0))
}

/// `ingress` with its first path's Service switched between `web-new` and `web`.
fn switched(ingress: &Ingress) -> Ingress {
    let mut ingress = ingress.clone();
    let rules = ingress.spec.as_mut().and_then(|s| s.rules.as_mut());
    let path = rules.and_then(|r| r.first_mut()?.http.as_mut()?.paths.first_mut());
    if let Some(service) = path.and_then(|p| p.backend.service.as_mut()) {
        service.name = if service.name == "web-new" {
            "web"
        } else {
            "web-new"
        }
        .into();
    }
    ingress
}
