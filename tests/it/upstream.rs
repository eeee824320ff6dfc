//! The upstream client against an h2 server with a stream limit, as Google's front ends have
//! (about 100 streams per connection): one connection per host would cap the Gemini calls in
//! flight at that limit however many agents wait; `upstream.connections` multiplies it.

use std::time::Duration;

use futures_util::future::join_all;
use http::StatusCode;
use serde_json::json;
use vectorway::config::SimulatorKnobs;
use vectorway::http::server::{ServeOptions, load_tls};
use vectorway::simulate::Simulator;

use crate::harness::{Env, W1, fast_knobs, localhost_cert};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_not_capped_by_one_h2_connections_stream_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_path, key_path) = localhost_cert(dir.path());
    let tls = load_tls(&cert_path, &key_path).unwrap();
    // Two streams per connection; six calls at once.
    for (connections, in_flight) in [(1, 2), (3, 6)] {
        let mut opts = ServeOptions::plain(Duration::from_secs(1));
        opts.tls = Some(tls.clone());
        opts.max_concurrent_streams = 2;
        let sim = Simulator::start_with("127.0.0.1:0".parse().unwrap(), fast_knobs(), None, opts)
            .await
            .unwrap();
        let base = format!("https://localhost:{}", sim.addr().port());
        let env = Env::against(&base, |c| {
            c.upstream.connections = connections;
            c.upstream.ca_file = Some(cert_path.clone());
        })
        .await;
        let key = env.funded_key(W1, 100_000_000).await;
        let ask = |n: usize| {
            env.chat(
                &key,
                json!({"model": "gemini-2.5-flash", "max_tokens": 16,
                       "memory_read": false, "memory_write": false,
                       "messages": [{"role": "user", "content": format!("call {n}")}]}),
            )
        };
        // One call per pool first, one at a time: each opens its connection and learns (by
        // ALPN) that it is h2, so the burst finds them open instead of racing handshakes.
        for n in 0..connections {
            assert_eq!(ask(n).await.status, StatusCode::OK);
        }
        sim.set_knobs(SimulatorKnobs {
            ttft: Duration::from_millis(800),
            ..fast_knobs()
        });
        let answers = join_all((0..6).map(ask)).await;
        for (n, res) in answers.iter().enumerate() {
            assert_eq!(res.status, StatusCode::OK, "call {n}: {}", res.json());
        }
        assert_eq!(
            sim.peak_in_flight(),
            in_flight,
            "{connections} connection(s) of 2 streams each"
        );
        env.stop().await;
        sim.stop().await;
    }
}
