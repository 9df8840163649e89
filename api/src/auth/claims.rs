//! What a token grants: a project [`Scope`] (one id, or a prefix ending in `*`), a set of
//! [`Rights`], and once verified the [`Grant`] with its end.

use chrono::{DateTime, Utc};
use gallery_schema::ProjectId;

use super::AuthError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Ask for upload links, confirm uploads, reprocess.
    Upload,
    /// List images and read one (including the original's link).
    Read,
    /// The project's WebSocket.
    Subscribe,
    /// Mint tokens for projects inside the scope.
    Admin,
}

impl Right {
    pub const ALL: [Right; 4] = [Self::Upload, Self::Read, Self::Subscribe, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Read => "read",
            Self::Subscribe => "subscribe",
            Self::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    /// `upload,read,subscribe,admin` (any order, any subset, at least one).
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        let mut rights = Rights::default();
        for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let right = Right::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| {
                    AuthError::Invalid(format!(
                        "unknown right {name:?}; use upload, read, subscribe or admin"
                    ))
                })?;
            rights.0 |= right.bit();
        }
        if rights.0 == 0 {
            return Err(AuthError::Invalid("name at least one right".into()));
        }
        Ok(rights)
    }

    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    pub fn covers(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn names(self) -> Vec<&'static str> {
        Right::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Right::as_str)
            .collect()
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// The projects a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Project(ProjectId),
    /// Every project whose id starts with this (`""`: every project).
    Prefix(String),
}

impl Scope {
    /// A project id, or a prefix of ids followed by `*` (`*` alone: every project).
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        match raw.strip_suffix('*') {
            Some(prefix) => {
                // A prefix is a project id cut short: the same characters, never a wildcard.
                if !prefix.is_empty() && ProjectId::parse(prefix).is_err() {
                    return Err(AuthError::Invalid(format!(
                        "{raw:?} is not a project id or a prefix of ids followed by *: ids are \
                         1-64 letters, digits, _ or - (^[A-Za-z0-9_-]{{1,64}}$)"
                    )));
                }
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None => ProjectId::parse(raw).map(Self::Project).map_err(|_| {
                AuthError::Invalid(format!(
                    "{raw:?} is not a project id: 1-64 letters, digits, _ or - \
                         (^[A-Za-z0-9_-]{{1,64}}$), or a prefix of ids followed by *"
                ))
            }),
        }
    }

    pub fn covers(&self, project: &ProjectId) -> bool {
        match self {
            Self::Project(p) => p == project,
            Self::Prefix(prefix) => project.as_str().starts_with(prefix.as_str()),
        }
    }

    /// Whether every project `other` names is in this scope (for minting narrower tokens).
    pub fn covers_scope(&self, other: &Scope) -> bool {
        match (self, other) {
            (_, Self::Project(p)) => self.covers(p),
            (Self::Prefix(mine), Self::Prefix(theirs)) => theirs.starts_with(mine.as_str()),
            (Self::Project(_), Self::Prefix(_)) => false,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Project(p) => write!(f, "{p}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scope: Scope,
    pub rights: Rights,
    pub expires_at: DateTime<Utc>,
    /// The `kid` of the key that verified it (for logs).
    pub kid: String,
    /// The end of that key's rotation window, if it is retiring: the grant ends there too.
    pub key_until: Option<DateTime<Utc>>,
}

impl Grant {
    /// When this grant stops allowing anything: its expiry, or its key's retirement if sooner.
    pub fn valid_until(&self) -> DateTime<Utc> {
        match self.key_until {
            Some(until) => self.expires_at.min(until),
            None => self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> ProjectId {
        ProjectId::parse(id).unwrap()
    }

    #[test]
    fn a_refused_scope_says_what_an_id_may_hold() {
        for raw in ["a.b", "a.b*"] {
            let err = Scope::parse(raw).unwrap_err().to_string();
            assert!(err.contains("1-64 letters, digits, _ or -"), "{err}");
            assert!(err.contains("^[A-Za-z0-9_-]{1,64}$"), "{err}");
        }
    }

    #[test]
    fn scopes_cover_their_projects_only() {
        let exact = Scope::parse("acme").unwrap();
        assert!(exact.covers(&p("acme")) && !exact.covers(&p("acme2")));
        let prefix = Scope::parse("acme-*").unwrap();
        assert!(prefix.covers(&p("acme-1")) && !prefix.covers(&p("acme")));
        let all = Scope::parse("*").unwrap();
        assert!(all.covers(&p("x")));
        assert!(
            all.covers_scope(&prefix) && prefix.covers_scope(&Scope::parse("acme-1*").unwrap())
        );
        assert!(prefix.covers_scope(&Scope::parse("acme-7").unwrap()));
        assert!(!prefix.covers_scope(&all) && !exact.covers_scope(&prefix));
        for bad in ["a.b", "a*b*", ">", "a b", "", "**"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Scope::parse("acme-*").unwrap().to_string(), "acme-*");
    }

    #[test]
    fn rights_parse_and_print() {
        let r = Rights::parse("read, upload").unwrap();
        assert_eq!(r.to_string(), "upload,read");
        assert!(Rights::parse("").is_err() && Rights::parse("write").is_err());
        assert!(
            Rights::parse("upload,read,subscribe,admin")
                .unwrap()
                .covers(r)
        );
        assert!(!r.covers(Rights::parse("admin").unwrap()));
    }
}
