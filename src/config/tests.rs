//! Config layering and validation tests.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_validate_and_price_the_five_models() {
    let c = RawConfig::load(None, env(&[])).unwrap().validate().unwrap();
    assert_eq!(c.listen.port(), 8080);
    assert!(c.upstream.base_url.is_none(), "no key: the simulator");
    for id in [
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-3.1-flash-lite",
        "gemini-3.5-flash",
    ] {
        assert!(c.prices.get(id).is_some(), "{id}");
        assert_eq!(c.prices.get(&format!("gemini/{id}")).unwrap().id, id);
    }
    // $0.30 per 1M × 1.2 = 360,000 credits per 1M.
    assert_eq!(c.prices.get("gemini-2.5-flash").unwrap().input, 360_000);
}

#[test]
fn file_then_env_layers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:9000\"\n[billing]\nmarkup = \"1.5\"\n[models.\"gemini-2.5-flash\"]\ninput_per_m = \"1.00\"\n",
    )
    .unwrap();
    let c = RawConfig::load(
        Some(&path),
        env(&[
            ("VECTORWAY_SERVER__LISTEN", "127.0.0.1:9001"),
            ("GEMINI_API_KEY", "k"),
            (
                "VECTORWAY_X402__FACILITATOR_URL",
                "https://facilitator.example",
            ),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(c.listen.port(), 9001, "env beats the file");
    assert_eq!(c.prices.get("gemini-2.5-flash").unwrap().input, 1_500_000);
    assert_eq!(
        c.upstream.base_url.as_deref(),
        Some("https://generativelanguage.googleapis.com")
    );
    let c = RawConfig::load(None, env(&[("VECTORWAY_BILLING__MARKUP", "2")]))
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(
        c.prices.get("gemini-2.5-flash").unwrap().input,
        600_000,
        "numeric env for a string key"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[server]\nlisen = \"127.0.0.1:9000\"\n").unwrap();
    assert!(matches!(
        RawConfig::load(Some(&path), env(&[])),
        Err(ConfigError::Schema(_))
    ));
    assert!(matches!(
        RawConfig::load(None, env(&[("VECTORWAY_SERVER__NOPE", "1")])),
        Err(ConfigError::Schema(_))
    ));
    for (k, v) in [
        ("VECTORWAY_SERVER__LISTEN", "nowhere"),
        ("VECTORWAY_BILLING__MARKUP", "0.5"),
        ("VECTORWAY_SERVER__BODY_LIMIT_BYTES", "10"),
        ("VECTORWAY_UPSTREAM__BASE_URL", "ftp://x"),
        ("VECTORWAY_SERVER__TLS_CERT", "/nonexistent.pem"),
        ("VECTORWAY_SERVER__PUBLIC_BASE_URL", "api.example.com"),
        (
            "VECTORWAY_SERVER__PUBLIC_BASE_URL",
            "https://user@api.example.com",
        ),
        ("VECTORWAY_SERVER__BODY_READ_TIMEOUT_MS", "0"),
        ("VECTORWAY_SERVER__BODY_IDLE_TIMEOUT_MS", "0"),
        ("VECTORWAY_LIMITS__IP_PER_MIN", "0"),
        ("VECTORWAY_LIMITS__IP_BURST", "0"),
        ("VECTORWAY_LIMITS__MAX_TRACKED", "10"),
        ("VECTORWAY_AUTH__MAX_NONCES", "0"),
    ] {
        let r = RawConfig::load(None, env(&[(k, v)])).and_then(RawConfig::validate);
        assert!(r.is_err(), "{k}={v} should be rejected");
    }
}

/// A Gemini key with the built-in facilitator simulator would sell real calls for the simulator's
/// free $1,000 per address: refused unless the operator opts in by name.
#[test]
fn a_real_upstream_refuses_the_simulated_facilitator_without_the_opt_in() {
    let load =
        |pairs: &[(&str, &str)]| RawConfig::load(None, env(pairs)).and_then(RawConfig::validate);
    const OPT_IN: &str = "VECTORWAY_X402__ALLOW_SIMULATED_FACILITATOR_WITH_REAL_UPSTREAM";
    for key in [
        ("GEMINI_API_KEY", "k"),
        ("VECTORWAY_UPSTREAM__API_KEY", "k"),
    ] {
        match load(&[key]) {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "x402.facilitator_url");
                assert!(
                    message.contains("allow_simulated_facilitator_with_real_upstream"),
                    "the message names the opt-in: {message}"
                );
            }
            other => panic!("{key:?} without a facilitator must be refused: {other:?}"),
        }
        // `false` spelled out is still a refusal.
        assert!(load(&[key, (OPT_IN, "false")]).is_err());
        let c = load(&[key, (OPT_IN, "true")]).unwrap();
        assert!(c.x402.facilitator_url.is_none(), "the simulator, as asked");
        assert!(c.x402.allow_simulated_facilitator_with_real_upstream);
        let c = load(&[
            key,
            ("VECTORWAY_X402__FACILITATOR_URL", "https://f.example/"),
        ])
        .unwrap();
        assert_eq!(c.x402.facilitator_url.as_deref(), Some("https://f.example"));
        assert!(!c.x402.allow_simulated_facilitator_with_real_upstream);
    }
    // No key: the Gemini simulator answers, so the facilitator simulator sells nothing real.
    let c = load(&[]).unwrap();
    assert!(c.upstream.api_key.is_none() && c.x402.facilitator_url.is_none());
    // The setting lives in the file too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[upstream]\napi_key = \"k\"\n[x402]\nallow_simulated_facilitator_with_real_upstream = true\n",
    )
    .unwrap();
    let c = RawConfig::load(Some(&path), env(&[]))
        .unwrap()
        .validate()
        .unwrap();
    assert!(c.x402.allow_simulated_facilitator_with_real_upstream);
}

#[test]
fn exhaustion_and_binding_settings_have_defaults_and_layer() {
    let c = RawConfig::load(None, env(&[])).unwrap().validate().unwrap();
    assert_eq!(
        (c.body_read_timeout.as_secs(), c.body_idle_timeout.as_secs()),
        (30, 10)
    );
    assert_eq!(
        (c.limits.ip_per_min, c.limits.ip_burst, c.limits.max_tracked),
        (600, 300, 100_000)
    );
    assert_eq!(c.auth.max_nonces, 100_000);
    let c = RawConfig::load(
        None,
        env(&[
            ("VECTORWAY_LIMITS__IP_PER_MIN", "60"),
            ("VECTORWAY_AUTH__MAX_NONCES", "5"),
            (
                "VECTORWAY_SERVER__PUBLIC_BASE_URL",
                "https://api.example.com/",
            ),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!((c.limits.ip_per_min, c.auth.max_nonces), (60, 5));
    assert_eq!(
        c.public_base_url.as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(c.auth.siwe_domain, "api.example.com");
}

#[test]
fn cache_read_prices_default_from_the_reference_and_never_exceed_input() {
    let c = RawConfig::load(None, env(&[])).unwrap().validate().unwrap();
    let rate = |id: &str| {
        let m = c.prices.get(id).unwrap();
        (m.cached_input, m.input, m.long_cached_input)
    };
    // List cache-read prices × the 1.2 markup (reference §4); none listed: the input price.
    assert_eq!(rate("gemini-2.5-flash"), (36_000, 360_000, None));
    assert_eq!(rate("gemini-2.5-flash-lite"), (12_000, 120_000, None));
    assert_eq!(rate("gemini-2.5-pro"), (150_000, 1_500_000, Some(300_000)));
    assert_eq!(rate("gemini-3.5-flash"), (180_000, 1_800_000, None));
    assert_eq!(rate("gemini-3.1-flash-lite"), (300_000, 300_000, None));
    let dir = tempfile::tempdir().unwrap();
    for (toml, ok) in [
        ("cached_input_per_m = \"0.05\"", true),
        ("cached_input_per_m = \"0.31\"", false),
        ("cached_input_per_m = \"cheap\"", false),
        ("long_cached_input_per_m = \"0.01\"", false),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("[models.\"gemini-2.5-flash\"]\n{toml}\n")).unwrap();
        let r = RawConfig::load(Some(&path), env(&[])).and_then(RawConfig::validate);
        assert_eq!(r.is_ok(), ok, "{toml}: {:?}", r.err());
    }
}

/// `[store]`: embedded by default; `postgres` needs a parseable URL (literal or `$VAR`, never
/// echoed back) and sane pool and timeout values.
#[test]
fn the_store_backend_is_validated() {
    let load =
        |pairs: &[(&str, &str)]| RawConfig::load(None, env(pairs)).and_then(RawConfig::validate);
    assert!(matches!(load(&[]).unwrap().backend, StoreBackend::Embedded));
    let pg = load(&[
        ("VECTORWAY_STORE__BACKEND", "postgres"),
        (
            "VECTORWAY_STORE__POSTGRES_URL",
            "postgres://vw:s3cret@127.0.0.1:5432/vw",
        ),
        ("VECTORWAY_STORE__POSTGRES_POOL_SIZE", "4"),
        ("VECTORWAY_STORE__POSTGRES_STATEMENT_TIMEOUT_MS", "250"),
    ])
    .unwrap();
    // The journal's window: 5 ms embedded, 20 ms on PostgreSQL, or what is configured.
    assert_eq!(
        load(&[]).unwrap().journal_interval,
        Duration::from_millis(5)
    );
    assert_eq!(pg.journal_interval, Duration::from_millis(20));
    let set = [("VECTORWAY_STORE__JOURNAL_INTERVAL_MS", "7")];
    assert_eq!(
        load(&set).unwrap().journal_interval,
        Duration::from_millis(7)
    );
    for bad in ["0", "1001"] {
        let set = [("VECTORWAY_STORE__JOURNAL_INTERVAL_MS", bad)];
        assert!(
            matches!(load(&set), Err(ConfigError::Invalid { .. })),
            "{bad}"
        );
    }
    let StoreBackend::Postgres(p) = pg.backend else {
        panic!("postgres expected");
    };
    assert_eq!(p.pool_size, 4);
    assert_eq!(p.statement_timeout, Duration::from_millis(250));
    assert_eq!(p.connect_timeout, Duration::from_millis(5_000));
    assert!(
        !format!("{p:?}").contains("s3cret"),
        "Debug redacts the URL"
    );
    let driver = p.driver_config().unwrap();
    assert_eq!(driver.get_options(), Some("-c statement_timeout=250"));
    for (k, v) in [
        ("VECTORWAY_STORE__BACKEND", "mysql"),
        ("VECTORWAY_STORE__POSTGRES_POOL_SIZE", "0"),
        ("VECTORWAY_STORE__POSTGRES_CONNECT_TIMEOUT_MS", "0"),
    ] {
        let with_url = [
            ("VECTORWAY_STORE__BACKEND", "postgres"),
            ("VECTORWAY_STORE__POSTGRES_URL", "postgres://h/db"),
            (k, v),
        ];
        assert!(
            matches!(load(&with_url), Err(ConfigError::Invalid { .. })),
            "{k}={v}"
        );
    }
    match load(&[("VECTORWAY_STORE__BACKEND", "postgres")]) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "store.postgres_url"),
        other => panic!("a missing URL must be refused: {other:?}"),
    }
    match load(&[
        ("VECTORWAY_STORE__BACKEND", "postgres"),
        (
            "VECTORWAY_STORE__POSTGRES_URL",
            "postgres://u:pw@h:notaport/db",
        ),
    ]) {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "store.postgres_url");
            assert!(!message.contains("pw@"), "{message}");
        }
        other => panic!("a bad URL must be refused: {other:?}"),
    }
}
