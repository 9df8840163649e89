//! The [`Switch`] of `--auth` and `--rate-limits`, and whether a URL names a loopback host
//! (what `auto` decides by).

/// `--auth` and `--rate-limits`: on, off, or `auto`, which is on unless the api listens on
/// loopback only (a developer's `gallery up`, or local benchmarks from one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Switch {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            other => Err(format!("{other:?}: use auto, on or off")),
        }
    }
}

impl Switch {
    /// `auto` is on unless the api both listens on loopback and is published under a loopback
    /// URL: a reverse proxy forwarding from the internet to 127.0.0.1 (its public URL names the
    /// outside host) turns it on.
    pub fn resolve(self, listen: std::net::SocketAddr, public_url: &str) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => !listen.ip().is_loopback() || !is_loopback_url(public_url),
        }
    }
}

/// Whether a URL's host is a loopback name or address.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_open_on_loopback_only() {
        let local = "http://127.0.0.1:8080";
        assert!(!Switch::Auto.resolve("127.0.0.1:8080".parse().unwrap(), local));
        assert!(!Switch::Auto.resolve("[::1]:8080".parse().unwrap(), "http://[::1]:8080/"));
        assert!(!Switch::Auto.resolve("127.0.0.1:8080".parse().unwrap(), "http://localhost:8080"));
        assert!(Switch::Auto.resolve("0.0.0.0:8080".parse().unwrap(), local));
        // Behind a reverse proxy on the same host: loopback listen, public URL outside.
        assert!(Switch::Auto.resolve(
            "127.0.0.1:8080".parse().unwrap(),
            "https://photos.example.com"
        ));
        assert!(Switch::On.resolve("127.0.0.1:1".parse().unwrap(), local));
        assert!(!Switch::Off.resolve("0.0.0.0:1".parse().unwrap(), "https://x.example"));
    }
}
