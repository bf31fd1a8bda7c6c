//! Who a client is and what it may do (docs/security.md).
//!
//! Every request passes two checks before anything else: its `Origin` and
//! `Host` ([`OriginPolicy`]: a web page the user happens to open must not
//! reach the server through the user's browser), then its credentials
//! ([`Authenticator`]). In local mode (no keys configured) there are none:
//! `?user=NAME` or `anon-N`, with every right. With keys configured, a JWT
//! (`Authorization: Bearer` or `access_token`) names the user (`sub`), and
//! its claims give a role per graph and, optionally, the node-id prefixes
//! the user may read and write ([`Access`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use gitmind_schema::Body;

use crate::http::{Namer, Request, Response};
use crate::view::{edge_splits, SessionView, View};

/// What a role allows on a graph, each including the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sync, presence, cursors, selections, the snapshot.
    Read,
    /// Mutations too.
    Write,
    /// Everything, and the server's `/metrics` when held on every graph.
    Admin,
}

/// What one session (or one plain request) may do on one graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The user it acts as.
    pub user_id: String,
    /// Its role on the graph.
    pub role: Role,
    /// The nodes it may read; `None`: every node.
    pub read: SessionView,
    /// The nodes it may write (within what it may read); `None`:
    /// every node it may read.
    pub write: Option<View>,
    /// When the credentials expire, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
}

impl Access {
    /// Local mode: every right, no expiry.
    pub fn local(user_id: String) -> Self {
        Access {
            user_id,
            role: Role::Admin,
            read: None,
            write: None,
            expires_at: None,
        }
    }

    /// Whether it may send mutations at all.
    pub fn may_write(&self) -> bool {
        self.role >= Role::Write
    }

    /// Whether the node `id` may be read.
    pub fn may_read(&self, id: &str) -> bool {
        self.read.as_ref().is_none_or(|view| view.sees(id))
    }

    /// Whether the node `id` may be written: readable, and within the
    /// write prefixes.
    pub fn may_write_node(&self, id: &str) -> bool {
        self.may_write()
            && self.may_read(id)
            && self.write.as_ref().is_none_or(|view| view.sees(id))
    }

    /// Why a mutation is forbidden, if it is: no write role, or a node it
    /// touches outside what may be written. An edge may be written when its
    /// source may be written and its target read.
    pub fn refuses(&self, body: &Body) -> Option<String> {
        if !self.may_write() {
            return Some(format!("`{}` may only read this graph", self.user_id));
        }
        if self.read.is_none() && self.write.is_none() {
            return None;
        }
        let node = |id: &str| {
            (!self.may_write_node(id))
                .then(|| format!("`{}` may not write the node `{id}`", self.user_id))
        };
        let edge = |source: &str, target: &str| {
            node(source).or_else(|| {
                (!self.may_read(target))
                    .then(|| format!("`{}` may not read the node `{target}`", self.user_id))
            })
        };
        let edge_named = |id: Option<String>| match id {
            // Every way the id splits into source, type and target is
            // checked: a node id may itself contain ` -[`.
            Some(id) => edge_splits(&id).find_map(|(source, target)| edge(source, target)),
            None => None,
        };
        match body {
            Body::NodeCreate(m) => node(&m.node.id),
            Body::NodeUpdate(m) => node(&m.id),
            Body::NodeDelete(m) => node(&m.id),
            Body::EdgeCreate(m) => edge(&m.edge.source, &m.edge.target),
            Body::EdgeUpdate(m) => edge_named(m.edge_id()),
            Body::EdgeDelete(m) => edge_named(m.edge_id()),
            Body::BatchUpdate(batch) => batch
                .ops
                .iter()
                .find_map(|op| self.refuses(&Body::from(op.clone()))),
            _ => None,
        }
    }
}

/// Who a request is, before the graph is known.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Local mode: the user named in the request, or `anon-N`.
    Local(String),
    /// A verified token.
    Token(Arc<Claims>),
}

impl Credentials {
    /// The user.
    pub fn user_id(&self) -> &str {
        match self {
            Credentials::Local(user) => user,
            Credentials::Token(claims) => &claims.sub,
        }
    }

    /// What these credentials allow on `graph`.
    ///
    /// # Errors
    /// 403 when they give no role there.
    pub fn access(&self, graph: &str) -> Result<Access, Response> {
        match self {
            Credentials::Local(user) => Ok(Access::local(user.clone())),
            Credentials::Token(claims) => {
                let role = claims.role(graph).ok_or_else(|| {
                    Response::text(403, format!("no access to the graph `{graph}`"))
                })?;
                Ok(Access {
                    user_id: claims.sub.clone(),
                    role,
                    read: claims.read.clone().map(|p| Arc::new(View::new(p))),
                    write: claims.write.clone().map(View::new),
                    expires_at: Some(claims.exp),
                })
            }
        }
    }

    /// Whether they may read the server's metrics: local mode, or `admin`
    /// on every graph (`"*": "admin"`).
    pub fn may_read_metrics(&self) -> bool {
        match self {
            Credentials::Local(_) => true,
            Credentials::Token(claims) => claims.graphs.get("*") == Some(&Role::Admin),
        }
    }
}

/// The claims of a Gitmind token (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Role per graph: a graph's name, a prefix ending in `*`, or `*` alone.
    #[serde(default)]
    pub graphs: HashMap<String, Role>,
    /// Node-id prefixes the user may read (absent: all).
    #[serde(default)]
    pub read: Option<Vec<String>>,
    /// Node-id prefixes the user may write (absent: all it may read).
    #[serde(default)]
    pub write: Option<Vec<String>>,
}

impl Claims {
    /// The role on `graph`: its own entry, else the longest matching
    /// `prefix*`, else `*`.
    pub fn role(&self, graph: &str) -> Option<Role> {
        if let Some(role) = self.graphs.get(graph) {
            return Some(*role);
        }
        self.graphs
            .iter()
            .filter_map(|(pattern, role)| {
                let prefix = pattern.strip_suffix('*')?;
                graph.starts_with(prefix).then_some((prefix.len(), *role))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, role)| role)
    }
}

/// Where the keys that verify tokens come from, and what a token must say.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A file holding the HS256 shared secret (its bytes, trailing newline
    /// removed).
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM files of RS256 or EdDSA (Ed25519) public keys.
    pub jwt_public_key_files: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`) of RS256 and EdDSA public keys.
    pub jwks_file: Option<PathBuf>,
    /// The `aud` a token must name, when set.
    pub audience: Option<String>,
    /// The `iss` a token must name, when set.
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_s: u64,
    /// Browser origins allowed besides the server's own
    /// (`https://app.example.com`; `*` allows every origin).
    pub allowed_origins: Vec<String>,
    /// Host names clients may use besides loopback ones and the listening
    /// address (`gitmind.example.com`); when set, every request's `Host`
    /// is checked, also with authentication on.
    pub allowed_hosts: Vec<String>,
}

impl AuthConfig {
    /// Whether authentication is on: some key is configured.
    pub fn enabled(&self) -> bool {
        self.jwt_secret_file.is_some()
            || !self.jwt_public_key_files.is_empty()
            || self.jwks_file.is_some()
    }
}

/// The authentication step of every request.
pub trait Authenticator: Send + Sync {
    /// Establishes who the client is.
    ///
    /// # Errors
    /// The HTTP response refusing the request (400 or 401).
    fn authenticate(&self, request: &Request) -> Result<Credentials, Response>;
}

/// Builds the authenticator the configuration asks for.
///
/// # Errors
/// A key file that cannot be read or parsed, said in a sentence.
pub fn authenticator(config: &AuthConfig) -> Result<Arc<dyn Authenticator>, String> {
    if config.enabled() {
        Ok(Arc::new(JwtAuth::new(config)?))
    } else {
        Ok(Arc::new(LocalAuth::default()))
    }
}

/// Local mode: no credentials; `?user=NAME` or `anon-N`.
#[derive(Debug, Default)]
pub struct LocalAuth {
    namer: Namer,
}

impl Authenticator for LocalAuth {
    fn authenticate(&self, request: &Request) -> Result<Credentials, Response> {
        match request.param("user") {
            Some(user) if crate::http::valid_user(user) => Ok(Credentials::Local(user.to_owned())),
            Some(_) => Err(Response::text(
                400,
                "`user` must match ^[A-Za-z0-9_.-]{1,64}$",
            )),
            None => Ok(Credentials::Local(self.namer.anon())),
        }
    }
}

/// JWT authentication: HS256 with a shared secret, RS256 and EdDSA with
/// public keys. Each algorithm is verified only with keys of its own
/// family, so a token cannot choose how it is checked (no `none`, no
/// RS256 public key used as an HMAC secret).
pub struct JwtAuth {
    hmac: Option<DecodingKey>,
    rsa: Vec<Key>,
    ed: Vec<Key>,
    validation: Validation,
}

/// A public key and its `kid`, if it has one.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

impl JwtAuth {
    /// Loads the keys the configuration names.
    ///
    /// # Errors
    /// A key file that cannot be read or parsed, said in a sentence (never
    /// with the key's contents).
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let hmac = match &config.jwt_secret_file {
            Some(path) => {
                let mut secret = read(path)?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                if secret.len() < 32 {
                    return Err(format!(
                        "the HS256 secret in {} is shorter than 32 bytes",
                        path.display()
                    ));
                }
                Some(DecodingKey::from_secret(&secret))
            }
            None => None,
        };
        let (mut rsa, mut ed) = (Vec::new(), Vec::new());
        for path in &config.jwt_public_key_files {
            let pem = read(path)?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                rsa.push(Key { kid: None, key });
            } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                ed.push(Key { kid: None, key });
            } else {
                return Err(format!(
                    "{} holds no RSA or Ed25519 public key in PEM form",
                    path.display()
                ));
            }
        }
        if let Some(path) = &config.jwks_file {
            let text = read(path)?;
            let set: JwkSet = serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not a JWKS file: {e}", path.display()))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("a key in {} cannot be used: {e}", path.display()))?;
                let entry = Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                };
                match entry.key.family() {
                    jsonwebtoken::AlgorithmFamily::Rsa => rsa.push(entry),
                    jsonwebtoken::AlgorithmFamily::Ed => ed.push(entry),
                    _ => {
                        return Err(format!(
                            "{}: only RSA and Ed25519 keys are supported",
                            path.display()
                        ))
                    }
                }
            }
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        } else {
            validation.validate_aud = false;
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(JwtAuth {
            hmac,
            rsa,
            ed,
            validation,
        })
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// Why it is refused, in words for the 401's body (never the token).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the token is not a JWT with a supported algorithm".to_owned())?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.hmac.iter().collect(),
            Algorithm::RS256 => by_kid(&self.rsa, header.kid.as_deref()),
            Algorithm::EdDSA => by_kid(&self.ed, header.kid.as_deref()),
            _ => Vec::new(),
        };
        if keys.is_empty() {
            return Err(format!(
                "tokens signed with {:?} are not accepted here",
                header.alg
            ));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut why = String::new();
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return check_subject(data.claims),
                Err(e) => why = refusal(e.kind()),
            }
        }
        Err(why)
    }
}

/// The keys a token's `kid` may name: the one with that id, and keys
/// without an id.
fn by_kid<'a>(keys: &'a [Key], kid: Option<&str>) -> Vec<&'a DecodingKey> {
    keys.iter()
        .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
        .map(|k| &k.key)
        .collect()
}

/// A user id the server can put in envelopes and commits.
fn check_subject(claims: Claims) -> Result<Claims, String> {
    let sub = &claims.sub;
    if sub.is_empty() || sub.len() > 128 || sub.chars().any(char::is_control) {
        return Err("the token's `sub` must be 1 to 128 bytes without control characters".into());
    }
    Ok(claims)
}

fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token is for another audience",
        ErrorKind::InvalidIssuer => "the token is from another issuer",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::Json(_) => "the token's claims are not what Gitmind expects",
        _ => "the token is invalid",
    }
    .to_owned()
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, request: &Request) -> Result<Credentials, Response> {
        let bearer = request.header("authorization").and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        let Some(token) = bearer.or_else(|| request.param("access_token")) else {
            return Err(unauthorized(
                "credentials required: a bearer token (Authorization or access_token)",
            ));
        };
        match self.verify(token.trim()) {
            Ok(claims) => Ok(Credentials::Token(Arc::new(claims))),
            Err(why) => Err(unauthorized(&why)),
        }
    }
}

fn unauthorized(why: &str) -> Response {
    let mut response = Response::text(401, why.to_owned());
    response
        .headers
        .push(("WWW-Authenticate", "Bearer realm=\"gitmind\"".into()));
    response
}

/// Which origins and hosts may talk to the server (docs/security.md).
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// The port served on.
    port: u16,
    /// The address listened on.
    ip: IpAddr,
    /// Origins allowed besides the server's own, normalised.
    origins: Vec<String>,
    /// Every origin is allowed.
    any_origin: bool,
    /// Extra host names, lowercased.
    hosts: Vec<String>,
    /// Whether `Host` is checked.
    check_host: bool,
}

impl OriginPolicy {
    /// The policy for a server listening on `addr`.
    pub fn new(config: &AuthConfig, addr: SocketAddr) -> Self {
        OriginPolicy {
            port: addr.port(),
            ip: addr.ip(),
            origins: config
                .allowed_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            any_origin: config.allowed_origins.iter().any(|o| o == "*"),
            hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            // DNS rebinding targets a server on the user's own machine
            // without credentials; with them, a foreign Host gains nothing.
            check_host: !config.allowed_hosts.is_empty()
                || (!config.enabled() && addr.ip().is_loopback()),
        }
    }

    /// Checks a request's `Origin` and `Host`.
    ///
    /// # Errors
    /// 403 naming what is not allowed.
    pub fn check(&self, request: &Request) -> Result<(), Response> {
        if self.check_host {
            if let Some(host) = request.header("host") {
                if !self.is_own_host(host_name(host)) {
                    return Err(Response::text(
                        403,
                        format!("the host `{host}` is not this server's (allowed_hosts)"),
                    ));
                }
            }
        }
        if let Some(origin) = request.header("origin") {
            if !self.origin_allowed(origin) {
                return Err(Response::text(
                    403,
                    format!("the origin `{origin}` may not use this server (allowed_origins)"),
                ));
            }
        }
        Ok(())
    }

    fn is_own_host(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        name == "localhost"
            || bare
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip == self.ip)
            || self.hosts.contains(&name)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        // The server's own page, by any loopback name, on its own port.
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let name = host_name(authority);
        let port = authority[name.len()..]
            .strip_prefix(':')
            .map_or(Some(default_port), |p| p.parse::<u16>().ok());
        port == Some(self.port) && self.is_own_host(name)
    }
}

/// The name part of a `Host` header or an origin's authority (`[::1]`
/// keeps its brackets).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::http::test_request as request;

    fn policy(config: &AuthConfig) -> OriginPolicy {
        OriginPolicy::new(config, "127.0.0.1:7432".parse().unwrap())
    }

    #[test]
    fn the_servers_own_origins_pass_and_others_get_403() {
        let p = policy(&AuthConfig::default());
        for ok in [
            "http://localhost:7432",
            "http://127.0.0.1:7432",
            "https://[::1]:7432",
            "HTTP://LOCALHOST:7432/",
        ] {
            assert!(p.check(&request(&[("origin", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost:7433",
            "http://localhost",
            "null",
            "file://",
            "http://127.0.0.1.evil.example:7432",
        ] {
            let refused = p.check(&request(&[("origin", bad)])).unwrap_err();
            assert_eq!(refused.status, 403, "{bad}");
        }
        assert!(p.check(&request(&[])).is_ok(), "no Origin: not a browser");
    }

    #[test]
    fn configured_origins_and_star_are_allowed() {
        let p = policy(&AuthConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            ..AuthConfig::default()
        });
        assert!(p
            .check(&request(&[("origin", "https://app.example.com")]))
            .is_ok());
        assert!(p
            .check(&request(&[("origin", "https://x.example.com")]))
            .is_err());
        let any = policy(&AuthConfig {
            allowed_origins: vec!["*".into()],
            ..AuthConfig::default()
        });
        assert!(any
            .check(&request(&[("origin", "https://x.example.com")]))
            .is_ok());
    }

    #[test]
    fn a_rebound_host_name_is_refused_in_local_mode() {
        let p = policy(&AuthConfig::default());
        assert!(p.check(&request(&[("host", "127.0.0.1:7432")])).is_ok());
        assert!(p.check(&request(&[("host", "localhost:7432")])).is_ok());
        assert!(p.check(&request(&[("host", "[::1]:7432")])).is_ok());
        let refused = p
            .check(&request(&[("host", "attacker.example:7432")]))
            .unwrap_err();
        assert_eq!(refused.status, 403);
    }

    #[test]
    fn roles_come_from_the_exact_name_then_the_longest_prefix_then_star() {
        let claims = Claims {
            sub: "u".into(),
            exp: 0,
            graphs: [
                ("team".to_owned(), Role::Admin),
                ("team-*".to_owned(), Role::Write),
                ("team-archive-*".to_owned(), Role::Read),
                ("*".to_owned(), Role::Read),
            ]
            .into_iter()
            .collect(),
            read: None,
            write: None,
        };
        assert_eq!(claims.role("team"), Some(Role::Admin));
        assert_eq!(claims.role("team-a"), Some(Role::Write));
        assert_eq!(claims.role("team-archive-1"), Some(Role::Read));
        assert_eq!(claims.role("other"), Some(Role::Read));
        let none = Claims {
            graphs: HashMap::new(),
            ..claims
        };
        assert_eq!(none.role("team"), None);
    }

    #[test]
    fn prefixes_bound_reads_and_writes_within_reads() {
        let access = Access {
            user_id: "u".into(),
            role: Role::Write,
            read: Some(Arc::new(View::new(vec!["concept:".into(), "doc:".into()]))),
            write: Some(View::new(vec!["concept:mine/".into()])),
            expires_at: None,
        };
        assert!(access.may_read("doc:a"));
        assert!(!access.may_read("person:a"));
        assert!(access.may_write_node("concept:mine/a"));
        assert!(!access.may_write_node("concept:theirs"));
        let reader = Access {
            role: Role::Read,
            ..access
        };
        assert!(!reader.may_write_node("concept:mine/a"));
    }

    #[test]
    fn a_mutation_is_refused_for_any_node_it_may_not_write() {
        use gitmind_schema::json;
        let access = Access {
            user_id: "u".into(),
            role: Role::Write,
            read: Some(Arc::new(View::new(vec!["concept:".into()]))),
            write: Some(View::new(vec!["concept:mine/".into()])),
            expires_at: None,
        };
        let body = |text: &str| {
            json::decode(text, &gitmind_schema::Limits::default()).unwrap()[0]
                .as_ref()
                .unwrap()
                .body
                .clone()
        };
        let ok = [
            r#"{"id":"1","type":"node.create","data":{"baseSeq":0,"node":{"id":"concept:mine/a"}}}"#,
            r#"{"id":"2","type":"edge.create","data":{"baseSeq":0,"edge":{"source":"concept:mine/a","type":"relates-to","target":"concept:x"}}}"#,
            r#"{"id":"3","type":"edge.delete","data":{"baseSeq":0,"id":"concept:mine/a -[relates-to]-> concept:x"}}"#,
        ];
        for text in ok {
            assert_eq!(access.refuses(&body(text)), None, "{text}");
        }
        let refused = [
            r#"{"id":"4","type":"node.update","data":{"baseSeq":0,"id":"concept:x","set":{"label":"x"}}}"#,
            r#"{"id":"5","type":"edge.create","data":{"baseSeq":0,"edge":{"source":"concept:mine/a","type":"relates-to","target":"person:x"}}}"#,
            r#"{"id":"6","type":"edge.delete","data":{"baseSeq":0,"id":"concept:x -[relates-to]-> concept:mine/a"}}"#,
            r#"{"id":"7","type":"batch.update","data":{"baseSeq":0,"ops":[{"type":"node.create","data":{"node":{"id":"concept:mine/b"}}},{"type":"node.delete","data":{"id":"concept:y"}}]}}"#,
        ];
        for text in refused {
            assert!(access.refuses(&body(text)).is_some(), "{text}");
        }
    }
}
