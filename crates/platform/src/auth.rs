//! Who is calling, and what they may do.
//!
//! [`AuthLayer`] verifies the bearer token of every request (user tokens: HS256 with a shared
//! secret for development, RS256/ES256 with keys from a JWKS file or URL for production;
//! service tokens: HS256 with the internal service secret) and puts the outcome in the request
//! extensions. It refuses nothing itself, so health and reflection stay open; each handler
//! asks [`authorize`] for the [`Permission`] its action needs, and that one function holds the
//! role table of the product.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};

use crate::{
    config::{AuthConfig, Secret, UserKeySource},
    error::{ApiError, reason},
};

/// Issuer and audience of the tokens services use to call each other.
pub const SERVICE_TOKEN_ISSUER: &str = "aegis-internal";
const SERVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const CLOCK_LEEWAY_SECS: u64 = 30;

/// The roles a person can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything and exports.
    Viewer,
    /// Works cases: creates, edits, comments, links findings, changes status, requests
    /// exceptions, creates Jira issues.
    Analyst,
    /// An Analyst who also approves and revokes risk exceptions.
    Approver,
    /// An Approver who also configures integrations, channels, users and maintenance.
    Admin,
}

impl Role {
    /// Every role, in order of increasing power.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Analyst, Role::Approver, Role::Admin];

    /// The role's name in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name, ignoring case.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action that needs a role. The table in [`Permission::allows`] is the product's role
/// table; no other code decides who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read cases, findings, comments, evidence and exceptions; export.
    Read,
    /// Create and edit cases, comment, link findings, change status, bulk actions.
    EditCases,
    /// Request a risk exception.
    RequestException,
    /// Approve or revoke a risk exception.
    DecideException,
    /// Create a Jira issue from a case.
    CreateJiraIssue,
    /// Configure integrations, channels, routing rules, users; run maintenance now.
    Administer,
    /// Calls reserved for the Aegis services themselves.
    ServiceOnly,
}

impl Permission {
    /// Whether a person holding `role` may act.
    pub fn allows(self, role: Role) -> bool {
        use Role::{Admin, Analyst, Approver, Viewer};
        match self {
            Permission::Read => matches!(role, Viewer | Analyst | Approver | Admin),
            Permission::EditCases | Permission::RequestException | Permission::CreateJiraIssue => {
                matches!(role, Analyst | Approver | Admin)
            }
            Permission::DecideException => matches!(role, Approver | Admin),
            Permission::Administer => matches!(role, Admin),
            Permission::ServiceOnly => false,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Permission::Read => "reading needs the viewer, analyst, approver or admin role",
            Permission::EditCases => "changing cases needs the analyst, approver or admin role",
            Permission::RequestException => {
                "requesting an exception needs the analyst, approver or admin role"
            }
            Permission::DecideException => {
                "approving or revoking an exception needs the approver or admin role"
            }
            Permission::CreateJiraIssue => {
                "creating a Jira issue needs the analyst, approver or admin role"
            }
            Permission::Administer => "this action needs the admin role",
            Permission::ServiceOnly => "this call is reserved for the Aegis services",
        }
    }
}

/// A person, as their token names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The token's `sub`.
    pub id: String,
    /// Display name (`name` claim), or the id when absent.
    pub name: String,
    /// Email (`email` claim), possibly empty.
    pub email: String,
    /// The roles the token grants.
    pub roles: Vec<Role>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person.
    User(User),
    /// An Aegis service, by name (`exceptions`, `integrations`, ...).
    Service(String),
}

impl Caller {
    /// Whether the caller may take an action needing `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Caller::User(user) => user.roles.iter().any(|role| permission.allows(*role)),
            // Services act only through the calls reserved for them, plus reads.
            Caller::Service(_) => matches!(permission, Permission::ServiceOnly | Permission::Read),
        }
    }

    /// A stable id for idempotency scopes and logs.
    pub fn id(&self) -> String {
        match self {
            Caller::User(user) => user.id.clone(),
            Caller::Service(name) => format!("service:{name}"),
        }
    }
}

/// What the auth layer found out about a request, stored in its extensions.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// A valid token.
    Verified(Caller),
    /// No `authorization` header.
    Missing,
    /// A token that failed verification, with the reason (safe to return).
    Rejected(String),
}

/// Checks that the request's caller may take an action, and returns the caller.
///
/// No token (or a bad one) is `UNAUTHENTICATED`; a known caller without the role is
/// `PERMISSION_DENIED`.
pub fn authorize(
    extensions: &http::Extensions,
    permission: Permission,
) -> Result<Caller, ApiError> {
    match extensions.get::<Authentication>() {
        Some(Authentication::Verified(caller)) => {
            if caller.may(permission) {
                Ok(caller.clone())
            } else {
                let reason = match permission {
                    Permission::ServiceOnly => reason::SERVICE_ONLY,
                    _ => reason::MISSING_ROLE,
                };
                Err(ApiError::PermissionDenied {
                    reason,
                    message: format!("permission denied: {}", permission.describe()),
                })
            }
        }
        Some(Authentication::Rejected(why)) => Err(ApiError::Unauthenticated(format!(
            "invalid bearer token: {why}"
        ))),
        Some(Authentication::Missing) | None => Err(ApiError::Unauthenticated(
            "missing bearer token: send `authorization: Bearer <token>` (`aegis token` mints one \
             for development)"
                .to_owned(),
        )),
    }
}

/// The claims of a user token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserClaims {
    /// The user id.
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Role names; unknown names are ignored.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// What a verified user token tells about its holder. `iss`, `aud` (a string or a list),
/// `exp` and `nbf` are checked by the verifier itself; the roles are read from the configured
/// claim path, so they are taken from the whole claim set.
#[derive(Debug, Deserialize)]
struct IdentityClaims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl IdentityClaims {
    /// The role names at `path` (`roles`, `realm_access.roles`); none when absent.
    fn roles(&self, path: &str) -> Vec<String> {
        let mut parts = path.split('.');
        let first = parts.next().unwrap_or_default();
        let mut value = self.rest.get(first);
        for part in parts {
            value = value.and_then(|v| v.get(part));
        }
        match value {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    }
}

/// Longest user id, name or email a token may carry.
pub const CLAIM_MAX_CHARS: usize = 255;

/// A claim stored with what the user does: at most 255 characters, no control characters.
fn checked_claim(name: &str, value: &str, min: usize) -> Result<String, String> {
    let count = value.chars().count();
    if count < min || count > CLAIM_MAX_CHARS || value.chars().any(char::is_control) {
        return Err(format!(
            "the token's {name} claim must be {min} to {CLAIM_MAX_CHARS} characters without \
             control characters"
        ));
    }
    Ok(value.to_owned())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceClaims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
}

/// Verifies tokens. Cheap to clone; JWKS keys fetched from a URL are refreshed in place.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthenticatorInner>,
}

struct AuthenticatorInner {
    issuer: String,
    audience: String,
    user_hs256: Option<DecodingKey>,
    roles_claim: String,
    jwks: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    service: DecodingKey,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds a verifier from configuration, loading a JWKS file or fetching a JWKS URL once.
    /// A URL source is refreshed every ten minutes by a background task.
    pub async fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let (user_hs256, jwks) = match &config.user_keys {
            UserKeySource::Hs256(secret) => (Some(hs256_key(secret)?), HashMap::new()),
            UserKeySource::JwksFile(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read JWKS file {}", path.display()))?;
                (None, parse_jwks(&text)?)
            }
            UserKeySource::JwksUrl(url) => (None, fetch_jwks(url).await?),
        };
        let authenticator = Self {
            inner: Arc::new(AuthenticatorInner {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                user_hs256,
                roles_claim: config.roles_claim.clone(),
                jwks: RwLock::new(jwks),
                service: hs256_key(&config.service_secret)?,
            }),
        };
        if let UserKeySource::JwksUrl(url) = &config.user_keys {
            authenticator.spawn_jwks_refresh(url.clone());
        }
        Ok(authenticator)
    }

    fn spawn_jwks_refresh(&self, url: String) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(600));
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                match fetch_jwks(&url).await {
                    Ok(keys) => {
                        if let Ok(mut jwks) = inner.jwks.write() {
                            *jwks = keys;
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "jwks refresh failed"),
                }
            }
        });
    }

    /// Verifies a bearer token (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Caller, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| "malformed token".to_owned())?;
        if header.alg == Algorithm::HS256
            && let Some(service) = self.verify_service(token)
        {
            return Ok(service);
        }
        let key = match header.alg {
            Algorithm::HS256 => self
                .inner
                .user_hs256
                .clone()
                .ok_or_else(|| "HS256 user tokens are not accepted here".to_owned())?,
            Algorithm::RS256 | Algorithm::ES256 => {
                self.jwks_key(header.kid.as_deref(), header.alg)?
            }
            other => return Err(format!("algorithm {other:?} is not accepted")),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        let data = jsonwebtoken::decode::<IdentityClaims>(token, &key, &validation)
            .map_err(|err| describe_jwt_error(&err))?;
        let claims = data.claims;
        let sub = checked_claim("sub", &claims.sub, 1)?;
        let name = checked_claim("name", claims.name.as_deref().unwrap_or_default(), 0)?;
        let email = checked_claim("email", claims.email.as_deref().unwrap_or_default(), 0)?;
        let mut roles: Vec<Role> = claims
            .roles(&self.inner.roles_claim)
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect();
        roles.sort();
        roles.dedup();
        Ok(Caller::User(User {
            name: if name.is_empty() { sub.clone() } else { name },
            email,
            id: sub,
            roles,
        }))
    }

    fn verify_service(&self, token: &str) -> Option<Caller> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[SERVICE_TOKEN_ISSUER]);
        validation.set_audience(&[SERVICE_TOKEN_ISSUER]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        let data =
            jsonwebtoken::decode::<ServiceClaims>(token, &self.inner.service, &validation).ok()?;
        let name = data.claims.sub.strip_prefix("service:")?.to_owned();
        Some(Caller::Service(name))
    }

    fn jwks_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, String> {
        let jwks = self
            .inner
            .jwks
            .read()
            .map_err(|_| "key set unavailable".to_owned())?;
        let entry = match kid {
            Some(kid) => jwks.get(kid),
            None if jwks.len() == 1 => jwks.values().next(),
            None => None,
        };
        match entry {
            Some((key_alg, key)) if *key_alg == alg => Ok(key.clone()),
            Some(_) => Err("the token's algorithm does not match its key".to_owned()),
            None => Err("the token is signed by an unknown key".to_owned()),
        }
    }
}

fn describe_jwt_error(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not accepted".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the {claim} claim"),
        _ => "malformed token".to_owned(),
    }
}

fn hs256_key(secret: &Secret) -> anyhow::Result<DecodingKey> {
    DecodingKey::from_secret(secret.expose().as_bytes()).context("invalid HS256 secret")
}

fn parse_jwks(text: &str) -> anyhow::Result<HashMap<String, (Algorithm, DecodingKey)>> {
    let set: JwkSet = serde_json::from_str(text).context("invalid JWKS document")?;
    let mut keys = HashMap::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let alg = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => continue,
        };
        let key =
            DecodingKey::from_jwk(jwk).with_context(|| format!("invalid JWKS key {index}"))?;
        let kid = jwk
            .common
            .key_id
            .clone()
            .unwrap_or_else(|| index.to_string());
        keys.insert(kid, (alg, key));
    }
    anyhow::ensure!(
        !keys.is_empty(),
        "the JWKS document holds no RS256 or ES256 key"
    );
    Ok(keys)
}

async fn fetch_jwks(url: &str) -> anyhow::Result<HashMap<String, (Algorithm, DecodingKey)>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the JWKS client")?;
    let text = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("cannot fetch the JWKS document")?
        .text()
        .await
        .context("cannot read the JWKS document")?;
    parse_jwks(&text)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Mints an HS256 user token for development (`aegis token`) and tests.
pub fn mint_user_token(
    secret: &Secret,
    issuer: &str,
    audience: &str,
    user: &User,
    lifetime: Duration,
) -> anyhow::Result<String> {
    let now = now_secs();
    let claims = UserClaims {
        sub: user.id.clone(),
        name: Some(user.name.clone()),
        email: (!user.email.is_empty()).then(|| user.email.clone()),
        roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        exp: now + lifetime.as_secs(),
        nbf: Some(now.saturating_sub(1)),
        iat: Some(now),
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes()).context("invalid secret")?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).context("cannot sign")
}

/// Mints and caches the short-lived token a service presents when it calls another service.
#[derive(Clone)]
pub struct ServiceTokenSource {
    name: String,
    key: EncodingKey,
    cached: Arc<RwLock<Option<(String, u64)>>>,
}

impl fmt::Debug for ServiceTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTokenSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServiceTokenSource {
    /// A source for the service called `name`.
    pub fn new(name: impl Into<String>, secret: &Secret) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.into(),
            key: EncodingKey::from_secret(secret.expose().as_bytes())
                .context("invalid service token secret")?,
            cached: Arc::new(RwLock::new(None)),
        })
    }

    /// A valid token, minted anew when the cached one is close to expiry.
    pub fn token(&self) -> anyhow::Result<String> {
        let now = now_secs();
        if let Ok(cached) = self.cached.read()
            && let Some((token, exp)) = cached.as_ref()
            && *exp > now + 60
        {
            return Ok(token.clone());
        }
        let exp = now + SERVICE_TOKEN_LIFETIME.as_secs();
        let claims = ServiceClaims {
            sub: format!("service:{}", self.name),
            iss: SERVICE_TOKEN_ISSUER.to_owned(),
            aud: SERVICE_TOKEN_ISSUER.to_owned(),
            exp,
            nbf: now.saturating_sub(1),
            iat: now,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("cannot sign a service token")?;
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some((token.clone(), exp));
        }
        Ok(token)
    }
}

/// A random 256-bit secret, base64url encoded.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tower layer that authenticates every request; see the module docs.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    /// A layer verifying with `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        Self { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let outcome = match request.headers().get(http::header::AUTHORIZATION) {
            None => Authentication::Missing,
            Some(value) => match value.to_str().ok().and_then(bearer_token) {
                None => Authentication::Rejected("expected `Bearer <token>`".to_owned()),
                Some(token) => match self.authenticator.verify(token) {
                    Ok(caller) => Authentication::Verified(caller),
                    Err(why) => Authentication::Rejected(why),
                },
            },
        };
        request.extensions_mut().insert(outcome);
        self.inner.call(request)
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            issuer: "aegis-dev".into(),
            audience: "aegis".into(),
            user_keys: UserKeySource::Hs256(Secret::new("user-secret-user-secret-user-secret")),
            roles_claim: "roles".into(),
            service_secret: Secret::new("service-secret-service-secret-service"),
        }
    }

    fn analyst() -> User {
        User {
            id: "u-1".into(),
            name: "Ana".into(),
            email: "ana@example.com".into(),
            roles: vec![Role::Analyst],
        }
    }

    #[tokio::test]
    async fn a_minted_user_token_verifies_with_its_roles() {
        let config = config();
        let auth = Authenticator::from_config(&config).await.expect("auth");
        let UserKeySource::Hs256(secret) = &config.user_keys else {
            unreachable!()
        };
        let token = mint_user_token(
            secret,
            "aegis-dev",
            "aegis",
            &analyst(),
            Duration::from_secs(60),
        )
        .expect("token");

        assert_eq!(auth.verify(&token), Ok(Caller::User(analyst())));
    }

    #[tokio::test]
    async fn wrong_audience_issuer_and_key_are_rejected() {
        let config = config();
        let auth = Authenticator::from_config(&config).await.expect("auth");
        let UserKeySource::Hs256(secret) = &config.user_keys else {
            unreachable!()
        };
        let hour = Duration::from_secs(3600);
        let wrong_aud = mint_user_token(secret, "aegis-dev", "other", &analyst(), hour).expect("t");
        let wrong_iss = mint_user_token(secret, "other", "aegis", &analyst(), hour).expect("t");
        let other_key = Secret::new("another-secret-another-secret-another");
        let wrong_key =
            mint_user_token(&other_key, "aegis-dev", "aegis", &analyst(), hour).expect("t");

        assert!(auth.verify(&wrong_aud).unwrap_err().contains("audience"));
        assert!(auth.verify(&wrong_iss).unwrap_err().contains("issuer"));
        assert!(auth.verify(&wrong_key).unwrap_err().contains("signature"));
        assert!(auth.verify("not-a-token").is_err());
    }

    #[tokio::test]
    async fn an_expired_token_is_rejected() {
        let config = config();
        let auth = Authenticator::from_config(&config).await.expect("auth");
        let now = now_secs();
        let claims = UserClaims {
            sub: "u-1".into(),
            name: None,
            email: None,
            roles: vec!["admin".into()],
            iss: "aegis-dev".into(),
            aud: "aegis".into(),
            exp: now - 3600,
            nbf: Some(now - 7200),
            iat: Some(now - 7200),
        };
        let key = EncodingKey::from_secret(b"user-secret-user-secret-user-secret").expect("key");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("t");

        assert!(auth.verify(&token).unwrap_err().contains("expired"));
    }

    #[tokio::test]
    async fn service_tokens_carry_the_service_identity_and_users_cannot_forge_one() {
        let config = config();
        let auth = Authenticator::from_config(&config).await.expect("auth");
        let source = ServiceTokenSource::new("exceptions", &config.service_secret).expect("source");
        let token = source.token().expect("token");
        assert_eq!(
            auth.verify(&token),
            Ok(Caller::Service("exceptions".into()))
        );

        // The same claims signed with the user secret are not a service token.
        let user_secret = Secret::new("user-secret-user-secret-user-secret");
        let forged = ServiceTokenSource::new("exceptions", &user_secret).expect("source");
        let forged = forged.token().expect("token");
        assert!(!matches!(auth.verify(&forged), Ok(Caller::Service(_))));
    }

    #[test]
    fn the_role_table_matches_the_product() {
        use Permission::*;
        let table = [
            (Read, [true, true, true, true]),
            (EditCases, [false, true, true, true]),
            (RequestException, [false, true, true, true]),
            (DecideException, [false, false, true, true]),
            (CreateJiraIssue, [false, true, true, true]),
            (Administer, [false, false, false, true]),
            (ServiceOnly, [false, false, false, false]),
        ];
        for (permission, expected) in table {
            for (role, allowed) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(
                    permission.allows(role),
                    allowed,
                    "{permission:?} for {role}"
                );
            }
        }
    }

    const JWKS: &str = include_str!("../tests/fixtures/jwks.json");
    const ES256_KEY: &str = include_str!("../tests/fixtures/es256-private.pem");
    const RS256_KEY: &str = include_str!("../tests/fixtures/rs256-private.pem");

    fn jwks_config(user_keys: UserKeySource) -> AuthConfig {
        AuthConfig {
            issuer: "https://idp.example.com/".into(),
            audience: "aegis".into(),
            user_keys,
            roles_claim: "roles".into(),
            service_secret: Secret::new("service-secret-service-secret-service"),
        }
    }

    fn idp_token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
        let now = now_secs();
        let claims = UserClaims {
            sub: "okta|42".into(),
            name: Some("Pat Approver".into()),
            email: Some("pat@example.com".into()),
            roles: vec!["approver".into(), "unknown-role".into()],
            iss: "https://idp.example.com/".into(),
            aud: "aegis".into(),
            exp: now + 600,
            nbf: None,
            iat: Some(now),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, key).expect("sign")
    }

    fn pat() -> Caller {
        Caller::User(User {
            id: "okta|42".into(),
            name: "Pat Approver".into(),
            email: "pat@example.com".into(),
            roles: vec![Role::Approver],
        })
    }

    #[tokio::test]
    async fn es256_and_rs256_tokens_verify_against_a_jwks_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, JWKS).expect("write");
        let auth = Authenticator::from_config(&jwks_config(UserKeySource::JwksFile(path)))
            .await
            .expect("auth");
        let ec = EncodingKey::from_ec_pem(ES256_KEY.as_bytes()).expect("ec key");
        let rsa = EncodingKey::from_rsa_pem(RS256_KEY.as_bytes()).expect("rsa key");

        assert_eq!(
            auth.verify(&idp_token(Algorithm::ES256, "ec-1", &ec)),
            Ok(pat())
        );
        assert_eq!(
            auth.verify(&idp_token(Algorithm::RS256, "rsa-1", &rsa)),
            Ok(pat())
        );
        let unknown = auth.verify(&idp_token(Algorithm::ES256, "rotated-away", &ec));
        assert!(unknown.expect_err("unknown kid").contains("unknown key"));
        let mismatched = auth.verify(&idp_token(Algorithm::RS256, "ec-1", &rsa));
        assert!(mismatched.is_err());
    }

    #[tokio::test]
    async fn hs256_tokens_are_refused_when_only_a_jwks_is_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, JWKS).expect("write");
        let auth = Authenticator::from_config(&jwks_config(UserKeySource::JwksFile(path)))
            .await
            .expect("auth");
        // Signed with the public key's text as an HMAC secret: the classic algorithm confusion.
        let key = EncodingKey::from_secret(JWKS.as_bytes()).expect("key");

        let result = auth.verify(&idp_token(Algorithm::HS256, "ec-1", &key));

        assert!(result.expect_err("refused").contains("HS256"));
    }

    #[tokio::test]
    async fn a_jwks_url_is_fetched_at_start() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{JWKS}",
                    JWKS.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        let url = format!("http://{addr}/.well-known/jwks.json");
        let auth = Authenticator::from_config(&jwks_config(UserKeySource::JwksUrl(url)))
            .await
            .expect("auth");
        let ec = EncodingKey::from_ec_pem(ES256_KEY.as_bytes()).expect("ec key");

        assert_eq!(
            auth.verify(&idp_token(Algorithm::ES256, "ec-1", &ec)),
            Ok(pat())
        );
    }

    fn hs256_token(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(b"user-secret-user-secret-user-secret").expect("key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
    }

    #[tokio::test]
    async fn an_audience_list_is_accepted_when_it_names_aegis() {
        let auth = Authenticator::from_config(&config()).await.expect("auth");
        let exp = now_secs() + 600;
        let token = |aud: serde_json::Value| {
            hs256_token(serde_json::json!({
                "sub": "u-1", "iss": "aegis-dev", "aud": aud, "exp": exp, "roles": ["viewer"],
            }))
        };

        assert!(
            auth.verify(&token(serde_json::json!(["other", "aegis"])))
                .is_ok()
        );
        assert!(auth.verify(&token(serde_json::json!(["other"]))).is_err());
    }

    #[tokio::test]
    async fn claims_with_control_characters_or_overlong_ids_are_refused() {
        let auth = Authenticator::from_config(&config()).await.expect("auth");
        let exp = now_secs() + 600;
        let token = |sub: &str, name: &str| {
            hs256_token(serde_json::json!({
                "sub": sub, "name": name, "iss": "aegis-dev", "aud": "aegis", "exp": exp,
            }))
        };

        assert!(
            auth.verify(&token("a\u{0}b", "A"))
                .expect_err("nul")
                .contains("sub")
        );
        assert!(auth.verify(&token(&"x".repeat(256), "A")).is_err());
        assert!(
            auth.verify(&token("u-1", "Evil\u{1b}[31m"))
                .expect_err("esc")
                .contains("name")
        );
        assert!(auth.verify(&token("", "A")).is_err());
        assert!(auth.verify(&token("u-1", "")).is_ok());
    }

    #[tokio::test]
    async fn roles_are_read_from_a_nested_claim_when_configured() {
        let mut config = config();
        config.roles_claim = "realm_access.roles".into();
        let auth = Authenticator::from_config(&config).await.expect("auth");
        let exp = now_secs() + 600;
        let token = hs256_token(serde_json::json!({
            "sub": "u-1", "iss": "aegis-dev", "aud": "aegis", "exp": exp,
            "roles": ["admin"], "realm_access": {"roles": ["offline_access", "Analyst"]},
        }));

        let Ok(Caller::User(user)) = auth.verify(&token) else {
            panic!("verifies");
        };
        assert_eq!(user.roles, [Role::Analyst]);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
