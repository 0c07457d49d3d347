//! Host and path normalisation, rule by rule.

use flatnet_l7_routes::host;
use flatnet_l7_routes::path::{self, PathError};

#[test]
fn paths_are_normalised() {
    let cases = [
        ("/", "/"),
        ("//", "/"),
        ("/a/b/", "/a/b/"),
        ("/a//b///c", "/a/b/c"),
        ("/a/./b", "/a/b"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/../b", "/b"),
        ("/../../a", "/a"),
        ("/..", "/"),
        ("/a/%2E%2e/b", "/b"),
        ("/%7Euser/%41%62", "/~user/Ab"),
        ("/a%2fb", "/a%2Fb"),
        ("/a%2Fb/..", "/"),
        ("/%c3%a9", "/%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/A/b", "/A/b"),
        ("/a.b/c..d", "/a.b/c..d"),
    ];
    for (raw, want) in cases {
        assert_eq!(path::normalise(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn bad_paths_are_refused() {
    let cases = [
        ("", PathError::NotAbsolute),
        ("a/b", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("/%", PathError::BadEncoding),
        ("/%2", PathError::BadEncoding),
        ("/%zz", PathError::BadEncoding),
        ("/%00", PathError::BadEncoding),
        ("/a%0", PathError::BadEncoding),
    ];
    for (raw, want) in cases {
        assert_eq!(path::normalise(raw), Err(want), "{raw:?}");
    }
}

#[test]
fn hosts_are_normalised() {
    let cases = [
        ("foo.com", Some("foo.com")),
        ("Foo.COM", Some("foo.com")),
        ("foo.com:8080", Some("foo.com")),
        ("foo.com.", Some("foo.com")),
        ("foo.com.:80", Some("foo.com")),
        ("foo.com:", Some("foo.com")),
        ("my_host-1", Some("my_host-1")),
        ("10.0.0.1:80", Some("10.0.0.1")),
        ("[::1]:80", Some("::1")),
        ("[FD00::A]", Some("fd00::a")),
        ("", None),
        (".", None),
        ("foo.com..", None),
        ("a..b", None),
        ("foo com", None),
        ("foo.com:http", None),
        ("foo.com:99999", None),
        ("::1", None),
        ("[::1", None),
        ("[nope]:80", None),
        ("user@foo.com", None),
        ("*.foo.com", None),
    ];
    for (authority, want) in cases {
        assert_eq!(host::normalise(authority).as_deref(), want, "{authority:?}");
    }
}
