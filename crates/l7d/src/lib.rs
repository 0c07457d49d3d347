//! The Ingress controller of a lab cluster: turns flatnet's desired state (Ingresses,
//! IngressClasses, Services, Secrets) and its nodes' reports (the EndpointSlices) into the
//! L7 route table, rebuilds it whenever the store changes, and serves it with flatnet's
//! proxy. Runs as the pods of the `flatnet-ingress` Deployment in `kube-system`.

use anyhow::Result;
use flatnet_l7_routes::{Inputs, Table};
use flatnet_model::state::{ClusterDir, State, StoreNotices, STORE_FALLBACK};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::sync::Arc;
use tokio::sync::watch;

/// The route table of `state` given its EndpointSlices.
pub fn table(state: &State, slices: &[EndpointSlice]) -> Table {
    Table::build(&Inputs {
        ingresses: &state.ingresses,
        classes: &state.ingress_classes,
        services: &state.services,
        slices,
        secrets: &state.secrets,
    })
}

/// The table of the store as it is now.
fn load(dir: &ClusterDir, state: &State) -> Table {
    let slices = flatnet_controller::endpoints::slices_from(dir, state);
    let table = table(state, &slices);
    for w in table.warnings() {
        tracing::warn!("{w}");
    }
    table
}

/// Serves cluster `dir`'s Ingresses with `config` until the cluster is gone; prints `ready`
/// on stdout once the listeners are bound (the agent waits for it).
pub fn run(dir: ClusterDir, config: flatnet_l7::ProxyConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let notices = StoreNotices::new(&dir);
        let state = dir.read_state()?;
        let (tx, rx) = watch::channel(Arc::new(load(&dir, &state)));
        let proxy = flatnet_l7::Proxy::bind(config).await?;
        println!("ready");
        let serving = tokio::spawn(proxy.run(rx));
        let following = tokio::task::spawn_blocking(move || follow(&dir, state, notices, &tx));
        tokio::select! {
            served = serving => served?,
            followed = following => followed?,
        }
    })
}

/// Sends a new table on `tx` whenever cluster `dir`'s store changes, until the cluster is
/// gone or the proxy stops (`tx` closed); `state` is the store as the current table was made
/// from it.
fn follow(
    dir: &ClusterDir,
    mut state: State,
    mut notices: StoreNotices,
    tx: &watch::Sender<Arc<Table>>,
) -> Result<()> {
    let mut seen = dir.store_mtime(&state);
    while !tx.is_closed() {
        notices.wait(Some(&state), STORE_FALLBACK);
        let Ok(now_state) = dir.read_state() else {
            tracing::info!("cluster state is gone; the ingress controller exits");
            return Ok(());
        };
        state = now_state;
        let now = dir.store_mtime(&state);
        if now != seen {
            seen = now;
            tx.send_replace(Arc::new(load(dir, &state)));
        }
    }
    Ok(())
}
