//! SIWE parser and verifier tests, with real k256 signatures.

use k256::ecdsa::SigningKey;

use super::*;

const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OTHER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn key(hex_key: &str) -> SigningKey {
    SigningKey::from_slice(&hex::decode(hex_key).unwrap()).unwrap()
}

fn sign(k: &SigningKey, msg: &str) -> String {
    let (sig, recid) = k
        .sign_prehash_recoverable(&crypto::eip191_hash(msg.as_bytes()))
        .unwrap();
    let mut out = sig.to_bytes().to_vec();
    out.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(out))
}

fn wallet(k: &SigningKey) -> Wallet {
    crypto::address_of(k.verifying_key())
}

fn siwe() -> Siwe {
    Siwe::new(
        "localhost:8080".into(),
        vec![1, 8453, 84532],
        Duration::from_secs(300),
    )
}

#[test]
fn rfc3339_round_trip() {
    assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some(NOW));
    assert_eq!(
        parse_rfc3339("2021-12-07T18:28:18.807Z"),
        Some(1_638_901_698)
    );
    assert_eq!(parse_rfc3339("2026-01-01T01:00:00+01:00"), Some(NOW));
    assert_eq!(format_rfc3339(NOW), "2026-01-01T00:00:00Z");
    for bad in [
        "",
        "2026-01-01",
        "2026-13-01T00:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00.Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn parses_the_reference_messages() {
    let m = parse("localhost:4361 wants you to sign in with your Ethereum account:\n0x6Da01670d8fc844e736095918bbE11fE8D564163\n\nSIWE Notepad Example\n\nURI: http://localhost:4361\nVersion: 1\nChain ID: 1\nNonce: kEWepMt9knR6lWJ6A\nIssued At: 2021-12-07T18:28:18.807Z").unwrap();
    assert_eq!(
        (m.domain.as_str(), m.chain_id, m.statement.as_deref()),
        ("localhost:4361", 1, Some("SIWE Notepad Example"))
    );
    let no_statement = "example.com wants you to sign in with your Ethereum account:\n0x6Da01670d8fc844e736095918bbE11fE8D564163\n\n\nURI: https://example.com\nVersion: 1\nChain ID: 8453\nNonce: 12345678\nIssued At: 2026-01-01T00:00:00Z\nExpiration Time: 2026-01-01T00:05:00Z\nNot Before: 2026-01-01T00:00:00Z\nRequest ID: abc\nResources:\n- https://example.com/a\n- ipfs://b";
    let m = parse(no_statement).unwrap();
    assert_eq!(
        (m.statement, m.resources.len(), m.request_id.as_deref()),
        (None, 2, Some("abc"))
    );
    for bad in [
        no_statement.replace('\n', "\r\n"),
        no_statement.replace("Version: 1", "Version: 2"),
        no_statement.replace(
            "0x6Da01670d8fc844e736095918bbE11fE8D564163",
            "0x6DA01670d8fc844e736095918bbE11fE8D564163",
        ),
        no_statement.replace("Nonce: 12345678", "Nonce: 1234"),
        format!("{no_statement}\nExtra: line"),
        no_statement.replace("Chain ID: 8453", "Chain ID: -1"),
    ] {
        assert!(parse(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn challenge_then_verify_and_every_rejection() {
    let s = siwe();
    let k = key(DEV_KEY);
    let w = wallet(&k);
    let c = s.challenge(w, 84532, NOW).unwrap();
    assert!(c.nonce.len() >= 22);
    let m = s
        .verify(&c.message, &sign(&k, &c.message), NOW + 5)
        .unwrap();
    assert_eq!(m.address, w);
    assert_eq!(
        s.verify(&c.message, &sign(&k, &c.message), NOW + 5),
        Err(SiweError::NonceInvalid),
        "single use"
    );

    let c = s.challenge(w, 1, NOW).unwrap();
    let other = key(OTHER_KEY);
    assert_eq!(
        s.verify(&c.message, &sign(&other, &c.message), NOW),
        Err(SiweError::SignatureInvalid)
    );
    assert_eq!(
        s.verify(&c.message, &sign(&k, &c.message), NOW),
        Err(SiweError::NonceInvalid),
        "a failed attempt spends it"
    );

    let c = s.challenge(w, 1, NOW).unwrap();
    let evil = c.message.replace("localhost:8080", "evil.example");
    assert!(matches!(
        s.verify(&evil, &sign(&k, &evil), NOW),
        Err(SiweError::DomainMismatch { .. })
    ));

    let c = s.challenge(w, 1, NOW).unwrap();
    assert_eq!(
        s.verify(&c.message, &sign(&k, &c.message), NOW + 301),
        Err(SiweError::Expired)
    );

    let c = s.challenge(w, 1, NOW).unwrap();
    let chain = c.message.replace("Chain ID: 1\n", "Chain ID: 5\n");
    assert_eq!(
        s.verify(&chain, &sign(&k, &chain), NOW),
        Err(SiweError::ChainId(5))
    );
    assert_eq!(s.challenge(w, 5, NOW).unwrap_err(), SiweError::ChainId(5));

    // A nonce this server never issued.
    let forged = c.message.replace(&c.nonce, "abcdefgh12345678");
    assert_eq!(
        s.verify(&forged, &sign(&k, &forged), NOW),
        Err(SiweError::NonceInvalid)
    );
}

/// The RFC 3339 helpers are the `time` crate's: impossible dates and offsets are refused, and any
/// separator but `T` is too (the old hand-written parser took 31 days in every month).
#[test]
fn rfc3339_refuses_impossible_dates_and_offsets() {
    assert_eq!(
        parse_rfc3339("2028-02-29T00:00:00Z"),
        Some(1_835_395_200),
        "a leap day"
    );
    for bad in [
        "2026-02-29T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+01:60",
        "2026-01-01 00:00:00Z",
        "2026-01-01X00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00Zjunk",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    assert_eq!(parse_rfc3339("2026-01-01t00:00:00z"), Some(NOW), "any case");
    // Whatever parses formats back to the same instant (the fuzz target's property), so an
    // offset may not carry the instant out of the years RFC 3339 writes in UTC.
    for edge in ["0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59-00:01"] {
        assert_eq!(parse_rfc3339(edge), None, "{edge}");
    }
    for s in [
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.9Z",
    ] {
        let t = parse_rfc3339(s).unwrap();
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t), "{s}");
    }
    assert_eq!(format_rfc3339(1_835_395_200), "2028-02-29T00:00:00Z");
    assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    assert_eq!(format_rfc3339(i64::MAX), "9999-12-31T23:59:59Z", "clamped");
    assert_eq!(format_rfc3339(i64::MIN), "0000-01-01T00:00:00Z", "clamped");
}

#[test]
fn origins_are_normalized() {
    for (uri, origin) in [
        ("https://Example.com", Some("https://example.com")),
        (
            "https://example.com:443/login?x=1#f",
            Some("https://example.com"),
        ),
        ("http://example.com:80", Some("http://example.com")),
        ("http://example.com:8080/", Some("http://example.com:8080")),
        ("https://example.com:80", Some("https://example.com:80")),
        ("http://[::1]:8080/a", Some("http://[::1]:8080")),
        ("ipfs://bafy/x", Some("ipfs://bafy")),
        ("https://user@example.com", None),
        ("did:key:z6Mk", None),
        ("https://", None),
        ("://example.com", None),
    ] {
        assert_eq!(origin_of(uri).as_deref(), origin, "{uri}");
    }
}

#[test]
fn the_uri_must_name_this_deployments_origin() {
    let s = siwe().with_origin("https://api.example.com/v1");
    assert_eq!(s.origin(), "https://api.example.com");
    let k = key(DEV_KEY);
    let w = wallet(&k);
    let c = s.challenge(w, 1, NOW).unwrap();
    assert!(c.message.contains("\nURI: https://api.example.com\n"));
    for foreign in [
        "http://api.example.com",
        "https://api.example.com:8443",
        "https://evil.example",
        "https://api.example.com@evil.example",
        "urn:uuid:0",
    ] {
        let m = c
            .message
            .replace("URI: https://api.example.com", &format!("URI: {foreign}"));
        assert!(
            matches!(
                s.verify(&m, &sign(&k, &m), NOW),
                Err(SiweError::UriMismatch { .. })
            ),
            "{foreign}"
        );
    }
    // Refused before the nonce is spent: the same challenge still signs in with a URI on this
    // origin (a path and the default port are fine).
    let m = c.message.replace(
        "URI: https://api.example.com",
        "URI: https://API.example.com:443/login",
    );
    assert_eq!(s.verify(&m, &sign(&k, &m), NOW).unwrap().address, w);
}

#[test]
fn challenges_past_the_cap_are_refused_with_a_wait() {
    let s = siwe().with_max_nonces(2);
    let w = wallet(&key(DEV_KEY));
    s.challenge(w, 1, NOW).unwrap();
    s.challenge(w, 1, NOW).unwrap();
    assert!(matches!(
        s.challenge(w, 1, NOW),
        Err(SiweError::ChallengesExhausted { retry_after_s }) if (299..=300).contains(&retry_after_s)
    ));
    assert_eq!(s.nonces().len(), (2, 2));
}
