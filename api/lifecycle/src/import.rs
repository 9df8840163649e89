//! Import by URL: `POST /images/` with `source_url` makes the service fetch the image itself,
//! then handle it as an upload (the same events, states and WebSocket messages). The upload
//! watcher runs the fetch when it sees the `upload_requested` event that carries the URL
//! (`watcher/import.rs`); this module holds the rules and the fetch.
//!
//! The fetch is the classic SSRF hole, so:
//! - http and https only, no user name or password in the URL, at most 2,048 bytes;
//! - the host is resolved here and the connection is pinned to the address that was checked
//!   (the HTTP client does no lookup of its own that a hostile DNS server could answer
//!   differently), and that address must be public ([`is_public`]): never loopback, private,
//!   link-local (the cloud metadata address 169.254.169.254 is one), shared (100.64/10),
//!   multicast, unspecified, broadcast, reserved, documentation or benchmarking ranges, the
//!   IPv6 equivalents (`::1`, `fc00::/7`, `fe80::/10`, `ff00::/8`, ...), nor an IPv4 address
//!   carried in IPv6 (`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) that is one
//!   of those;
//! - redirects are followed here, at most [`MAX_REDIRECTS`], each target checked like the
//!   first; no proxy from the environment;
//! - the uploads' size limit, and one time limit for the whole fetch;
//! - the type is sniffed from the bytes (the processor sniffs again; the name means nothing).
//!
//! An allow-list (`--import-allow-hosts`, `GALLERY_IMPORT_ALLOW_HOSTS`: comma-separated
//! `host:port`) names hosts fetched whatever their address: a loopback test server, an
//! internal image host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use gallery_schema::ErrorCode;
use reqwest::Url;
use reqwest::header::{LOCATION, USER_AGENT};

/// The longest `source_url` taken.
pub const MAX_URL: usize = 2048;
/// Redirects followed before the fetch is refused.
pub const MAX_REDIRECTS: usize = 5;

/// Checks a `source_url` from a request: http(s), a host, no credentials, not too long.
pub fn parse_source_url(text: &str) -> Result<Url, String> {
    if text.len() > MAX_URL {
        return Err(format!("source_url is longer than {MAX_URL} bytes"));
    }
    let url = Url::parse(text).map_err(|e| format!("source_url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "source_url must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("source_url has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("source_url must not carry a user name or password".into());
    }
    Ok(url)
}

/// A file name for an imported image: the URL path's last segment, else `import`.
pub fn name_from_url(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        })
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "import".to_owned())
}

/// Whether the service may connect to `ip` for an import (module docs).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", 0.0.0.0 included
        || ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16: the cloud metadata address is 169.254.169.254
        || (a == 100 && (b & 0xc0) == 64) // 100.64/10, carrier-grade NAT
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF protocol assignments, TEST-NET-1
        || (a == 198 && (b & 0xfe) == 18) // 198.18/15, benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || ip.is_multicast() // 224/4
        || a >= 240; // 240/4 reserved, 255.255.255.255 broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast() // ff00::/8
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local (AWS's fd00:ec2::254 metadata too)
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, the old site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]); // 100::/64, discard
    !refused
}

/// An IPv4 address carried in an IPv6 one: mapped `::ffff:a.b.c.d`, the old compatible
/// `::a.b.c.d` (with `::` and `::1`), NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0; 6] || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) {
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    None
}

/// Hosts fetched whatever their address (`host:port`, compared case-insensitively).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllowList(Vec<(String, u16)>);

impl AllowList {
    /// Comma-separated `host:port` (IPv6 in brackets: `[::1]:8080`); blanks ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, port) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("{item:?}: expected host:port"))?;
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{item:?}: the port is not a number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{item:?}: no host"));
            }
            hosts.push((host.to_ascii_lowercase(), port));
        }
        Ok(Self(hosts))
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0
            .iter()
            .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(host))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why an import ended in `error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The rules said no (scheme, address, redirects): `fetch_refused`.
    #[error("{0}")]
    Refused(String),
    /// The source failed (DNS, connection, HTTP status, time limit): `fetch_failed`.
    #[error("{0}")]
    Failed(String),
    #[error("the source sent more than the limit of {0} bytes")]
    TooLarge(u64),
}

impl FetchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused(_) => ErrorCode::FetchRefused,
            Self::Failed(_) => ErrorCode::FetchFailed,
            Self::TooLarge(_) => ErrorCode::UploadTooLarge,
        }
    }
}

/// The address to connect to for `url`: the first public one its host resolves to (or the
/// first of any kind for an allowed host).
pub async fn pin(url: &Url, allow: &AllowList) -> Result<SocketAddr, FetchError> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| FetchError::Refused(format!("{url}: no port")))?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| FetchError::Failed(format!("resolving {name}: {e}")))?
            .collect(),
        None => return Err(FetchError::Refused(format!("{url}: no host"))),
    };
    if allow.allows(&host, port) {
        return addrs
            .first()
            .copied()
            .ok_or_else(|| FetchError::Failed(format!("{host} has no address")));
    }
    addrs
        .iter()
        .copied()
        .find(|a| is_public(a.ip()))
        .ok_or_else(|| {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            FetchError::Refused(format!(
                "{host} resolves to {}: not a public address (the operator can allow this \
                 host with GALLERY_IMPORT_ALLOW_HOSTS={host}:{port})",
                list.join(", ")
            ))
        })
}

/// Limits of one import.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    pub max_bytes: u64,
    /// For the whole fetch, redirects included.
    pub timeout: Duration,
}

/// Fetches `url` under the rules of the module docs; the body.
pub async fn fetch(
    url: Url,
    limits: &FetchLimits,
    allow: &AllowList,
) -> Result<bytes::Bytes, FetchError> {
    let timeout = limits.timeout;
    tokio::time::timeout(timeout, fetch_inner(url, limits.max_bytes, allow))
        .await
        .map_err(|_| {
            FetchError::Failed(format!(
                "the source took longer than {}s",
                timeout.as_secs_f64()
            ))
        })?
}

async fn fetch_inner(
    mut url: Url,
    max_bytes: u64,
    allow: &AllowList,
) -> Result<bytes::Bytes, FetchError> {
    for _ in 0..=MAX_REDIRECTS {
        let addr = pin(&url, allow).await?;
        let host = url.host_str().unwrap_or_default().to_owned();
        // One client per hop, its lookup of this host pinned to the address checked above.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .resolve(&host, addr)
            .build()
            .map_err(|e| FetchError::Failed(format!("an HTTP client: {e}")))?;
        let response = client
            .get(url.clone())
            .header(USER_AGENT, "lite-gallery-import/1")
            .send()
            .await
            .map_err(|e| FetchError::Failed(format!("fetching {url}: {e}")))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::Failed(format!("{url} redirects nowhere")))?;
            let next = url
                .join(location)
                .map_err(|e| FetchError::Failed(format!("{url} redirects to {location:?}: {e}")))?;
            url = parse_source_url(next.as_str())
                .map_err(|why| FetchError::Refused(format!("a redirect to {next}: {why}")))?;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Failed(format!("{url} answered {status}")));
        }
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let mut body = bytes::BytesMut::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| FetchError::Failed(format!("reading {url}: {e}")))?;
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(body.freeze());
    }
    Err(FetchError::Refused(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

#[cfg(test)]
mod tests;
