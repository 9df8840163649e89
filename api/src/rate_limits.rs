//! Rate limits (`tower_governor`, a GCRA limiter per key) on what is cheap to ask and costly
//! to serve: upload-link requests, reprocess requests and WebSocket connects, each limited per
//! client address and per token. A refused request gets 429 `rate_limited` with `Retry-After`.
//!
//! The client address is the TCP peer, or behind a load balancer the last address in the
//! header it appends (`--trusted-proxy-header x-forwarded-for`; set it only when every request
//! comes through that proxy, or clients can claim any address). IPv6 clients are keyed by their
//! /64, which is what one host usually holds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, Request, Response};
use axum::response::IntoResponse;
use gallery_schema::ErrorCode;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::error::ApiError;

/// Requests per second and the burst allowed above that rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `RATE:BURST`, e.g. `20:100` (20 a second, bursts of 100).
    fn from_str(raw: &str) -> Result<Self, String> {
        let (rate, burst) = raw
            .split_once(':')
            .ok_or_else(|| format!("{raw:?}: use RATE:BURST, e.g. 20:100"))?;
        let per_second: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("{rate:?} is not a number of requests per second"))?;
        let burst: u32 = burst
            .trim()
            .parse()
            .map_err(|_| format!("{burst:?} is not a whole number"))?;
        if !(per_second > 0.0 && per_second <= 1e6) || burst == 0 {
            return Err(format!("{raw:?}: the rate and the burst must be positive"));
        }
        Ok(Self { per_second, burst })
    }
}

/// The limits of a deployment (`--rate-limits on`).
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// `POST /images/` per client address.
    pub links: Rate,
    /// `POST /images/` per token (a backend that serves many users holds one token).
    pub token_links: Rate,
    /// `POST /images/{id}/reprocess` per address and per token.
    pub reprocess: Rate,
    /// WebSocket connects per address and per token.
    pub ws: Rate,
    /// The header a trusted load balancer puts the client address in.
    pub trusted_proxy_header: Option<HeaderName>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            links: Rate {
                per_second: 20.0,
                burst: 100,
            },
            token_links: Rate {
                per_second: 200.0,
                burst: 1000,
            },
            reprocess: Rate {
                per_second: 2.0,
                burst: 20,
            },
            ws: Rate {
                per_second: 5.0,
                burst: 50,
            },
            trusted_proxy_header: None,
        }
    }
}

/// The client address of a request: the trusted header's last entry, else the TCP peer.
pub fn client_ip(
    headers: &axum::http::HeaderMap,
    peer: Option<SocketAddr>,
    trusted: Option<&HeaderName>,
) -> Option<IpAddr> {
    if let Some(name) = trusted
        && let Some(ip) = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| parse_forwarded_ip(entry.trim()))
            .next_back()
    {
        return Some(ip);
    }
    peer.map(|p| p.ip())
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    // `1.2.3.4:5678` or `[::1]:5678`.
    entry.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The key an address is limited by: IPv4 as is, IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Clone)]
pub struct AddressKey {
    trusted: Option<HeaderName>,
}

impl KeyExtractor for AddressKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| *a);
        client_ip(req.headers(), peer, self.trusted.as_ref())
            .map(address_key)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// What the per-token limit counts against: a token that verifies, or, for a request without
/// a valid one, its address (random junk tokens must not each get a fresh quota, nor must
/// token-less requests share one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenOrAddress {
    Token(u64),
    Address(IpAddr),
}

#[derive(Clone)]
pub struct TokenKey {
    keys: Arc<crate::auth::TokenKeys>,
    address: AddressKey,
}

impl KeyExtractor for TokenKey {
    type Key = TokenOrAddress;

    fn extract<T>(&self, req: &Request<T>) -> Result<TokenOrAddress, GovernorError> {
        use std::hash::BuildHasher;
        static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        match crate::headers::bearer_token(req.headers()) {
            Some(token) if self.keys.verify(token, chrono::Utc::now()).is_ok() => Ok(
                TokenOrAddress::Token(SEED.get_or_init(Default::default).hash_one(token)),
            ),
            _ => self.address.extract(req).map(TokenOrAddress::Address),
        }
    }
}

fn config<K: Prunable>(
    rate: Rate,
    key: K,
) -> Arc<GovernorConfig<K, governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>>> {
    let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(rate.burst)
        .key_extractor(key)
        .finish()
        .expect("a positive period and burst");
    let config = Arc::new(config);
    prune_in_background(&config);
    config
}

/// What the pruning task needs of a key extractor.
trait Prunable: KeyExtractor<Key: Send + Sync + 'static> + Send + Sync + 'static {}
impl<K: KeyExtractor<Key: Send + Sync + 'static> + Send + Sync + 'static> Prunable for K {}

/// Forgets keys whose quota is full again, once a minute, so the limiter's memory follows the
/// active clients, not every address ever seen. Stops when the router is dropped.
fn prune_in_background<K: Prunable>(
    config: &Arc<
        GovernorConfig<K, governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>>,
    >,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(config);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(config) = weak.upgrade() else {
                return;
            };
            config.limiter().retain_recent();
        }
    });
}

fn limited(err: GovernorError) -> Response<Body> {
    match err {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let wait = wait_time.max(1);
            ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry in {wait} s"),
            )
            .retry_after(wait)
            .into_response()
        }
        other => ApiError::internal("rate limiting", other).into_response(),
    }
}

/// Wraps a route in a per-address limit of `rate` and, where tokens exist (`keys`), a
/// per-token limit of `token_rate`.
pub fn limit<S>(
    route: axum::routing::MethodRouter<S>,
    limits: &RateLimits,
    keys: Option<&Arc<crate::auth::TokenKeys>>,
    rate: Rate,
    token_rate: Rate,
) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let address = AddressKey {
        trusted: limits.trusted_proxy_header.clone(),
    };
    let by_address =
        tower_governor::GovernorLayer::new(config(rate, address.clone())).error_handler(limited);
    let route = match keys {
        Some(keys) => {
            let key = TokenKey {
                keys: keys.clone(),
                address,
            };
            route.layer::<_, std::convert::Infallible>(
                tower_governor::GovernorLayer::new(config(token_rate, key)).error_handler(limited),
            )
        }
        None => route,
    };
    route.layer::<_, std::convert::Infallible>(by_address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn rates_parse() {
        assert_eq!(
            "20:100".parse::<Rate>().unwrap(),
            Rate {
                per_second: 20.0,
                burst: 100
            }
        );
        assert_eq!("0.5:3".parse::<Rate>().unwrap().per_second, 0.5);
        for bad in ["20", "0:10", "5:0", "x:1", "-1:5", "nan:4"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_address_comes_from_the_trusted_header_only() {
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        // Untrusted: a client can write anything there.
        assert_eq!(client_ip(&h, Some(peer), None), Some(peer.ip()));
        let xff = HeaderName::from_static("x-forwarded-for");
        // Trusted: the entry our proxy appended (the last one).
        assert_eq!(
            client_ip(&h, Some(peer), Some(&xff)),
            Some("203.0.113.7".parse().unwrap())
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(&h, Some(peer), Some(&xff)), Some(peer.ip()));
        assert_eq!(client_ip(&HeaderMap::new(), None, Some(&xff)), None);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
