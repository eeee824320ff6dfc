//! Logs and metrics: `tracing` subscriber set-up and the process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the Prometheus recorder once per process and returns its render handle. Several
/// servers in one process (tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = install_recorder();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// The recorder keeps every histogram sample until a scrape or an upkeep folds it into the
/// buckets: with nobody scraping `/metrics`, that is a leak of a few samples per request (the
/// soak measured ~0.4 MB/min). A thread folds them every `UPKEEP_EVERY`.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("vw-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(%e, "could not start the metrics upkeep thread; histograms grow until scraped");
    }
}

/// The recorder with our histogram buckets, installed as the process's global recorder.
fn install_recorder() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .map(PrometheusBuilder::build_recorder);
    match recorder {
        Ok(recorder) => {
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        }
        Err(e) => {
            tracing::warn!(%e, "metrics buckets rejected; using the default recorder");
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        }
    }
}

/// Initializes `tracing`: `VECTORWAY_LOG` (an env-filter, default `info`) and `VECTORWAY_LOG_FORMAT`
/// (`json` for structured logs, anything else for text). Logs go to stderr.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VECTORWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("VECTORWAY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let _ = result;
}

#[cfg(test)]
mod tests {
    #[test]
    fn histogram_samples_are_folded_by_an_upkeep_thread() {
        drop(super::metrics_handle());
        // Listing /proc/self/task can skip entries while other tests' threads come and go:
        // look a few times.
        let found = (0..100).any(|_| {
            let seen = std::fs::read_dir("/proc/self/task")
                .into_iter()
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .any(|c| c.trim() == "vw-metrics");
            if !seen {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            seen
        });
        assert!(found, "no vw-metrics thread");
    }
}
