//! The import rules: the refused-address matrix, URL checks, names and the allow-list, and
//! resolution-only refusals (nothing is ever sent to a refused address).

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn only_public_addresses_are_fetched() {
    for refused in [
        "127.0.0.1",
        "127.255.0.9",
        "0.0.0.0",
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.10",
        "198.18.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        // IPv4 in IPv6 clothing.
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:c0a8:101::1",
    ] {
        assert!(!is_public(ip(refused)), "{refused} must be refused");
    }
    for public in [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "2002:0808:0808::1",
    ] {
        assert!(is_public(ip(public)), "{public} is public");
    }
}

#[test]
fn source_urls_are_checked() {
    assert!(parse_source_url("https://example.com/a.jpg").is_ok());
    assert!(parse_source_url("http://example.com:8080/a.jpg?x=1").is_ok());
    for bad in [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "http://user:pw@example.com/a.jpg",
        "http://user@example.com/a.jpg",
        "not a url",
        "http://",
    ] {
        assert!(parse_source_url(bad).is_err(), "{bad}");
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
    assert!(parse_source_url(&long).is_err());
}

#[test]
fn names_come_from_the_path() {
    let name = |u: &str| name_from_url(&Url::parse(u).unwrap());
    assert_eq!(name("https://e.com/photos/IMG%201.jpg?x=2"), "IMG 1.jpg");
    assert_eq!(name("https://e.com/"), "import");
    assert_eq!(name("https://e.com"), "import");
    assert_eq!(name("https://e.com/a/%0Abad.png"), "bad.png");
}

#[test]
fn the_allow_list_names_host_and_port() {
    let list = AllowList::parse(" 127.0.0.1:8081, Images.Internal:443 ,[::1]:9000").unwrap();
    assert!(list.allows("127.0.0.1", 8081));
    assert!(!list.allows("127.0.0.1", 8082));
    assert!(list.allows("images.internal", 443));
    assert!(list.allows("[::1]", 9000));
    assert!(list.allows("::1", 9000));
    assert_eq!(AllowList::parse("").unwrap(), AllowList::default());
    assert!(AllowList::parse("nohost").is_err());
    assert!(AllowList::parse("h:port").is_err());
    assert!(AllowList::parse(":80").is_err());
}

/// Resolution only: nothing is ever sent to these addresses.
#[tokio::test]
async fn names_that_resolve_to_refused_addresses_are_refused_before_connecting() {
    let none = AllowList::default();
    for url in [
        "http://localhost/a.jpg",
        "http://127.0.0.1:9/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.jpg",
        "http://[::ffff:127.0.0.1]/a.jpg",
        "http://10.1.2.3/a.jpg",
        "http://0x7f000001/a.jpg",
        "http://2130706433/a.jpg",
    ] {
        let url = Url::parse(url).unwrap();
        match pin(&url, &none).await {
            Err(FetchError::Refused(_)) => {}
            other => panic!("{url}: {other:?}"),
        }
    }
    // The allow-list lets a named loopback host through (tests, internal hosts).
    let allow = AllowList::parse("127.0.0.1:9").unwrap();
    let url = Url::parse("http://127.0.0.1:9/a.jpg").unwrap();
    assert_eq!(
        pin(&url, &allow).await.unwrap(),
        "127.0.0.1:9".parse().unwrap()
    );
}
