//! Typed configuration, read once at start from flags and environment variables.
//!
//! Every environment variable has its name as a constant in [`mod@env`] and a row in the README's
//! configuration table. Values that are secrets are wrapped in [`Secret`], which never prints.
//! Tests build these structs directly instead of touching the process environment.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};

/// Names of the environment variables Aegis reads. The README's table documents each one.
pub mod env {
    /// Address the gRPC server listens on.
    pub const LISTEN_ADDR: &str = "AEGIS_LISTEN_ADDR";
    /// Database URL: `sqlite://PATH` (embedded) or `postgres://...`.
    pub const DATABASE_URL: &str = "AEGIS_DATABASE_URL";
    /// Folder for the embedded database and development keys.
    pub const DATA_DIR: &str = "AEGIS_DATA_DIR";
    /// Log format: `text` or `json`.
    pub const LOG_FORMAT: &str = "AEGIS_LOG_FORMAT";
    /// Log filter, in `tracing` env-filter syntax (`info`, `aegis_cases=debug`).
    pub const LOG: &str = "AEGIS_LOG";
    /// Expected `iss` claim of user tokens.
    pub const AUTH_ISSUER: &str = "AEGIS_AUTH_ISSUER";
    /// Expected `aud` claim of user tokens.
    pub const AUTH_AUDIENCE: &str = "AEGIS_AUTH_AUDIENCE";
    /// Claim of user tokens that lists the roles; a dotted path reaches into objects.
    pub const AUTH_ROLES_CLAIM: &str = "AEGIS_AUTH_ROLES_CLAIM";
    /// Shared secret for HS256 user tokens (development).
    pub const AUTH_HS256_SECRET: &str = "AEGIS_AUTH_HS256_SECRET";
    /// File holding the HS256 secret, for a mounted Kubernetes secret.
    pub const AUTH_HS256_SECRET_FILE: &str = "AEGIS_AUTH_HS256_SECRET_FILE";
    /// JWKS file with the RS256/ES256 keys of the identity provider.
    pub const AUTH_JWKS_FILE: &str = "AEGIS_AUTH_JWKS_FILE";
    /// JWKS URL of the identity provider, fetched at start and refreshed.
    pub const AUTH_JWKS_URL: &str = "AEGIS_AUTH_JWKS_URL";
    /// Secret the services sign their calls to each other with.
    pub const SERVICE_TOKEN_SECRET: &str = "AEGIS_SERVICE_TOKEN_SECRET";
    /// File holding the service token secret.
    pub const SERVICE_TOKEN_SECRET_FILE: &str = "AEGIS_SERVICE_TOKEN_SECRET_FILE";
    /// Seconds in-flight calls get to finish after SIGTERM or SIGINT.
    pub const SHUTDOWN_GRACE_SECS: &str = "AEGIS_SHUTDOWN_GRACE_SECS";
    /// Largest request or response message, in bytes.
    pub const MAX_MESSAGE_BYTES: &str = "AEGIS_MAX_MESSAGE_BYTES";
    /// Origins allowed to call through gRPC-web, comma separated, or `*`.
    pub const CORS_ALLOWED_ORIGINS: &str = "AEGIS_CORS_ALLOWED_ORIGINS";
    /// SLA target in days of Critical cases.
    pub const SLA_DAYS_CRITICAL: &str = "AEGIS_SLA_DAYS_CRITICAL";
    /// SLA target in days of High cases.
    pub const SLA_DAYS_HIGH: &str = "AEGIS_SLA_DAYS_HIGH";
    /// SLA target in days of Medium cases.
    pub const SLA_DAYS_MEDIUM: &str = "AEGIS_SLA_DAYS_MEDIUM";
    /// SLA target in days of Low cases.
    pub const SLA_DAYS_LOW: &str = "AEGIS_SLA_DAYS_LOW";
}

/// A value that must never reach a log, an error or a response.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags and variables every service shares. Flattened into each command of the `aegis` binary.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long = "listen", env = env::LISTEN_ADDR, default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,
    /// Database URL; the embedded SQLite file under the data folder when unset.
    #[arg(long, env = env::DATABASE_URL)]
    pub database_url: Option<String>,
    /// Folder for the embedded database and the development keys.
    #[arg(long, env = env::DATA_DIR, default_value = "data")]
    pub data_dir: PathBuf,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter.
    #[arg(long = "log", env = env::LOG, default_value = "info")]
    pub log_filter: String,
    /// Expected `iss` claim of user tokens.
    #[arg(long, env = env::AUTH_ISSUER, default_value = "aegis-dev")]
    pub auth_issuer: String,
    /// Expected `aud` claim of user tokens.
    #[arg(long, env = env::AUTH_AUDIENCE, default_value = "aegis")]
    pub auth_audience: String,
    /// Claim that lists a user's roles (`roles`, or a dotted path such as
    /// `realm_access.roles`).
    #[arg(long, env = env::AUTH_ROLES_CLAIM, default_value = "roles")]
    pub auth_roles_claim: String,
    /// HS256 secret of user tokens.
    #[arg(long, env = env::AUTH_HS256_SECRET, hide_env_values = true)]
    pub auth_hs256_secret: Option<String>,
    /// File holding the HS256 secret of user tokens.
    #[arg(long, env = env::AUTH_HS256_SECRET_FILE)]
    pub auth_hs256_secret_file: Option<PathBuf>,
    /// JWKS file with the identity provider's RS256/ES256 keys.
    #[arg(long, env = env::AUTH_JWKS_FILE)]
    pub auth_jwks_file: Option<PathBuf>,
    /// JWKS URL of the identity provider.
    #[arg(long, env = env::AUTH_JWKS_URL)]
    pub auth_jwks_url: Option<String>,
    /// Secret of the tokens services use to call each other.
    #[arg(long, env = env::SERVICE_TOKEN_SECRET, hide_env_values = true)]
    pub service_token_secret: Option<String>,
    /// File holding the service token secret.
    #[arg(long, env = env::SERVICE_TOKEN_SECRET_FILE)]
    pub service_token_secret_file: Option<PathBuf>,
    /// Seconds in-flight calls get to finish at shutdown.
    #[arg(long, env = env::SHUTDOWN_GRACE_SECS, default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Largest message in bytes.
    #[arg(long, env = env::MAX_MESSAGE_BYTES, default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Origins allowed to call through gRPC-web (comma separated, or `*`).
    #[arg(long, env = env::CORS_ALLOWED_ORIGINS, default_value = "*")]
    pub cors_allowed_origins: String,
}

/// Where user-token verification keys come from.
#[derive(Debug, Clone)]
pub enum UserKeySource {
    /// A shared HS256 secret (development).
    Hs256(Secret),
    /// A JWKS file.
    JwksFile(PathBuf),
    /// A JWKS URL, refreshed periodically.
    JwksUrl(String),
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Expected `iss` of user tokens.
    pub issuer: String,
    /// Expected `aud` of user tokens.
    pub audience: String,
    /// Where the keys of user tokens come from.
    pub user_keys: UserKeySource,
    /// Claim path of the roles (`roles`, `realm_access.roles`).
    pub roles_claim: String,
    /// Secret of service tokens.
    pub service_secret: Secret,
}

/// Settings of the gRPC server itself.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// Time in-flight calls get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
    /// Allowed gRPC-web origins; empty means any.
    pub cors_allowed_origins: Vec<String>,
}

/// The resolved configuration every service needs.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Server settings.
    pub server: ServerConfig,
    /// Database URL.
    pub database_url: String,
    /// Authentication settings.
    pub auth: AuthConfig,
}

/// Whether missing keys may be generated (the embedded development setup) or must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// Generate missing keys into the data folder and keep them there (`aegis up`).
    GenerateDevelopmentKeys,
    /// Refuse to start without configured keys (`aegis serve`).
    RequireConfiguredKeys,
}

/// File name of the development HS256 secret inside the data folder.
pub const DEV_USER_SECRET_FILE: &str = "dev-user-token.secret";
/// File name of the development service token secret inside the data folder.
pub const DEV_SERVICE_SECRET_FILE: &str = "dev-service-token.secret";

impl CommonArgs {
    /// The database URL: the one given, or the embedded SQLite file under the data folder
    /// (whose folder is created).
    pub fn database_url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => {
                std::fs::create_dir_all(&self.data_dir).with_context(|| {
                    format!("cannot create data folder {}", self.data_dir.display())
                })?;
                Ok(format!(
                    "sqlite://{}",
                    self.data_dir.join("aegis.db").display()
                ))
            }
        }
    }

    /// Resolves flags into a validated configuration, reading secret files and, under
    /// [`KeyPolicy::GenerateDevelopmentKeys`], creating the development keys.
    pub fn resolve(&self, policy: KeyPolicy) -> anyhow::Result<PlatformConfig> {
        if self.max_message_bytes < 1024 {
            bail!("{} must be at least 1024 bytes", env::MAX_MESSAGE_BYTES);
        }
        let database_url = self.database_url()?;

        let user_secret = read_secret(
            self.auth_hs256_secret.as_deref(),
            self.auth_hs256_secret_file.as_ref(),
            env::AUTH_HS256_SECRET_FILE,
        )?;
        let user_keys = match (user_secret, &self.auth_jwks_file, &self.auth_jwks_url) {
            (Some(secret), None, None) => {
                if secret.expose().len() < 32 {
                    bail!("the HS256 user token secret must be at least 32 bytes");
                }
                UserKeySource::Hs256(secret)
            }
            (None, Some(file), None) => UserKeySource::JwksFile(file.clone()),
            (None, None, Some(url)) => UserKeySource::JwksUrl(url.clone()),
            (None, None, None) => match policy {
                KeyPolicy::GenerateDevelopmentKeys => {
                    UserKeySource::Hs256(development_secret(&self.data_dir, DEV_USER_SECRET_FILE)?)
                }
                KeyPolicy::RequireConfiguredKeys => bail!(
                    "no user token key configured: set {}, {} or {}",
                    env::AUTH_JWKS_URL,
                    env::AUTH_JWKS_FILE,
                    env::AUTH_HS256_SECRET_FILE
                ),
            },
            _ => bail!(
                "configure exactly one user token key source: {}, {} or an HS256 secret",
                env::AUTH_JWKS_URL,
                env::AUTH_JWKS_FILE
            ),
        };

        let service_secret = match read_secret(
            self.service_token_secret.as_deref(),
            self.service_token_secret_file.as_ref(),
            env::SERVICE_TOKEN_SECRET_FILE,
        )? {
            Some(secret) => secret,
            None => match policy {
                KeyPolicy::GenerateDevelopmentKeys => {
                    development_secret(&self.data_dir, DEV_SERVICE_SECRET_FILE)?
                }
                KeyPolicy::RequireConfiguredKeys => bail!(
                    "no service token secret configured: set {}",
                    env::SERVICE_TOKEN_SECRET_FILE
                ),
            },
        };
        if service_secret.expose().len() < 32 {
            bail!("the service token secret must be at least 32 bytes");
        }

        let cors_allowed_origins = match self.cors_allowed_origins.trim() {
            "*" | "" => Vec::new(),
            list => list.split(',').map(|o| o.trim().to_owned()).collect(),
        };

        Ok(PlatformConfig {
            server: ServerConfig {
                listen_addr: self.listen_addr,
                shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
                max_message_bytes: self.max_message_bytes,
                cors_allowed_origins,
            },
            database_url,
            auth: AuthConfig {
                issuer: self.auth_issuer.clone(),
                audience: self.auth_audience.clone(),
                user_keys,
                roles_claim: self.auth_roles_claim.clone(),
                service_secret,
            },
        })
    }
}

fn read_secret(
    value: Option<&str>,
    file: Option<&PathBuf>,
    file_var: &str,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("set either the secret or {file_var}, not both"),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {file_var} {}", path.display()))?;
            Ok(Some(Secret::new(text.trim())))
        }
        (None, None) => Ok(None),
    }
}

/// Reads a development secret from the data folder, creating it on first use.
pub fn development_secret(data_dir: &std::path::Path, name: &str) -> anyhow::Result<Secret> {
    let path = data_dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(Secret::new(text.trim()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    let secret = crate::auth::random_secret();
    write_private(&path, &secret)
        .with_context(|| format!("cannot write development key {}", path.display()))?;
    // Read back: when two processes start at once, the file of the first one wins.
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read development key {}", path.display()))?;
    Ok(Secret::new(text.trim()))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path) {
        Ok(mut file) => file.write_all(contents.as_bytes()),
        // Another process created it first: theirs wins.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2-hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
