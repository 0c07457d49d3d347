//! The `flatnet.dev/` annotations: defaults, valid and invalid values.

use flatnet_l7_routes::annotations::{self, BadAnnotation, DOCUMENTED};
use flatnet_l7_routes::{Balance, Options};
use std::collections::BTreeMap;
use std::time::Duration;

fn parse(pairs: &[(&str, &str)]) -> Result<Options, Vec<BadAnnotation>> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    annotations::parse(Some(&map))
}

#[test]
fn defaults_without_annotations() {
    let defaults = Options {
        balance: Balance::RoundRobin,
        ssl_redirect: false,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(60),
        retries: 1,
    };
    assert_eq!(Options::default(), defaults);
    assert_eq!(annotations::parse(None), Ok(defaults.clone()));
    assert_eq!(parse(&[("example.com/other", "anything")]), Ok(defaults));
}

#[test]
fn valid_values() {
    let cases = [
        ("flatnet.dev/load-balance", "least-request"),
        ("flatnet.dev/load-balance", "hash-client-ip"),
        ("flatnet.dev/ssl-redirect", "true"),
        ("flatnet.dev/connect-timeout", "1h"),
        ("flatnet.dev/request-timeout", "1ms"),
        ("flatnet.dev/retries", "5"),
    ];
    let options = parse(&cases[1..]).unwrap();
    assert_eq!(options.balance, Balance::HashClientIp);
    assert!(options.ssl_redirect);
    assert_eq!(options.connect_timeout, Duration::from_secs(3600));
    assert_eq!(options.request_timeout, Duration::from_millis(1));
    assert_eq!(options.retries, 5);
    assert_eq!(parse(&cases[..1]).unwrap().balance, Balance::LeastRequest);
    let header = parse(&[("flatnet.dev/load-balance", "hash-header:X-Session_Id")]);
    assert_eq!(
        header.unwrap().balance,
        Balance::HashHeader("x-session_id".into())
    );
}

#[test]
fn invalid_values_are_each_reported() {
    let cases = [
        ("flatnet.dev/load-balance", "random"),
        ("flatnet.dev/load-balance", "hash-header:"),
        ("flatnet.dev/load-balance", "hash-header:X User"),
        ("flatnet.dev/ssl-redirect", "yes"),
        ("flatnet.dev/connect-timeout", "0s"),
        ("flatnet.dev/connect-timeout", "61m"),
        ("flatnet.dev/connect-timeout", "5"),
        ("flatnet.dev/request-timeout", "1.5s"),
        ("flatnet.dev/request-timeout", "-1s"),
        ("flatnet.dev/retries", "6"),
        ("flatnet.dev/retries", "-1"),
        ("flatnet.dev/retry", "1"),
    ];
    for (key, value) in cases {
        let bad = parse(&[(key, value)]).unwrap_err();
        assert_eq!(bad.len(), 1, "{key}={value}");
        assert_eq!(bad[0].key, key);
        assert!(bad[0]
            .to_string()
            .starts_with(&format!("metadata.annotations[{key}]: ")));
    }
    let two = parse(&[
        ("flatnet.dev/retries", "x"),
        ("flatnet.dev/ssl-redirect", "1"),
    ]);
    assert_eq!(two.unwrap_err().len(), 2);
}

#[test]
fn every_documented_annotation_is_read() {
    assert_eq!(DOCUMENTED.len(), 5);
    for (key, description) in DOCUMENTED {
        assert!(key.starts_with(annotations::PREFIX) && !description.is_empty());
        let unknown = parse(&[(key, "")]).unwrap_err();
        assert!(
            !unknown[0].reason.starts_with("unknown"),
            "{key} is documented but not read"
        );
    }
}
