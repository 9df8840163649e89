//! Connecting to NATS: a URL list (`nats://a:4222,nats://b:4222`), the credentials and TLS
//! settings of [`NatsAuth`], and retries while a server is starting, so a client is not refused
//! for connecting a moment early. URLs in logs and errors go through [`redact`].

use std::time::Duration;

/// The servers of a NATS URL list: `nats://a:4222,nats://b:4222` (the NATS convention for
/// seed URLs; async-nats would read the whole string as one URL). Blanks are ignored.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, std::io::Error> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<async_nats::ServerAddr>, _>>()?;
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no NATS server URL given",
        ));
    }
    Ok(addrs)
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL list with any `user:password@` removed, for logs and error messages.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://***@{}", &u[..scheme], &u[at + 1..])
                }
                _ => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How a client proves who it is to NATS, and which servers it trusts (docs/ARCHITECTURE.md
/// §11). Without any of it, a `user:password@` in the URL is used.
#[derive(Clone, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<String>,
    /// A `.creds` file (JWT and NKey seed), for operator-mode deployments.
    pub creds_file: Option<std::path::PathBuf>,
    /// The CA that signed the servers' certificates: TLS is then required.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key, for servers that verify clients (`verify: true`).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

impl NatsAuth {
    async fn apply(
        &self,
        addrs: &[async_nats::ServerAddr],
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, async_nats::ConnectError> {
        if let Some(path) = &self.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(async_nats::ConnectError::from)?;
        } else if let Some(user) = &self.user {
            options =
                options.user_and_password(user.clone(), self.password.clone().unwrap_or_default());
        } else if let Some((user, password)) = addrs.iter().find_map(|a| {
            // async-nats reads no credential from a URL: take `user:password@` from the first
            // that has one (every server of a cluster takes the same).
            Some((
                percent_decode(a.username()?),
                percent_decode(a.password().unwrap_or_default()),
            ))
        }) {
            options = options.user_and_password(user, password);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }
}

/// Connects to NATS (one URL or a comma-separated list of a cluster's servers) with retries,
/// for up to `wait`: a freshly started server (or one that is restarting) is not refused as down.
pub async fn connect(
    urls: &str,
    wait: Duration,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    connect_with(urls, &NatsAuth::default(), wait).await
}

/// [`connect`] with credentials and TLS settings.
pub async fn connect_with(
    urls: &str,
    auth: &NatsAuth,
    wait: Duration,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let addrs = server_addrs(urls).map_err(async_nats::ConnectError::from)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let options = auth
            .apply(&addrs, async_nats::ConnectOptions::new())
            .await?;
        let attempt = options
            .name("lite-gallery")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .connect(addrs.clone());
        // retry_on_initial_connect returns at once and connects in the background; we want to
        // know the server is up, so wait for the first flush.
        match attempt.await {
            Ok(client) => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                if tokio::time::timeout(remaining.max(Duration::from_millis(100)), client.flush())
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    return Ok(client);
                }
                if tokio::time::Instant::now() >= deadline {
                    // Still unreachable: return the client anyway; it keeps reconnecting and
                    // /ready reports the state.
                    return Ok(client);
                }
            }
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the servers refused a command's connection (permission violations, as the server
/// words them), kept for its error message: a request the server drops for want of a
/// permission is otherwise only a timeout.
pub type Refusals = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Connects once, for an operator's command: the first failure is the answer (a wrong user or
/// password is refused at once, not retried for `wait`), and the server's refusals while
/// connected go into `refusals`.
pub async fn connect_command(
    urls: &str,
    auth: &NatsAuth,
    refusals: Refusals,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let addrs = server_addrs(urls).map_err(async_nats::ConnectError::from)?;
    auth.apply(&addrs, async_nats::ConnectOptions::new())
        .await?
        .name("lite-gallery-admin")
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let refusals = refusals.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    refusals
                        .lock()
                        .expect("refusals lock")
                        .push(err.to_string());
                }
            }
        })
        .connect(addrs)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_list_is_split_into_servers() {
        let addrs = super::server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,,").unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[1].port(), 4223);
        assert!(super::server_addrs(" , ").is_err());
        assert!(super::server_addrs("nats://a:1,bad url with spaces").is_err());
    }

    #[test]
    fn url_credentials_are_percent_decoded() {
        assert_eq!(super::percent_decode("p%40ss%3Aw"), "p@ss:w");
        assert_eq!(super::percent_decode("plain%"), "plain%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
        assert_eq!(super::percent_decode("%é"), "%é");
    }

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            super::redact("nats://gallery:s3cret@127.0.0.1:4222, tls://n2:4222"),
            "nats://***@127.0.0.1:4222,tls://n2:4222"
        );
    }
}
