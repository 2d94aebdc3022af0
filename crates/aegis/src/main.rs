//! The `aegis` command.

use std::{path::Path, process::ExitCode, time::Duration};

use aegis::{SERVICES, Settings};
use aegis_cases::CasesArgs;
use aegis_platform::{
    auth::{Role, User, mint_user_token},
    config::{self, CommonArgs, KeyPolicy, Secret, env},
    server::shutdown_signal,
    storage::Database,
    telemetry,
};
use clap::{Parser, Subcommand};

/// Aegis tracks risky Confluence content as cases until they are remediated, closed or
/// accepted as time-bounded risk exceptions.
#[derive(Debug, Parser)]
#[command(name = "aegis", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every service in one process behind one port, on the embedded SQLite database by
    /// default, with development keys created under the data folder.
    Up {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        cases: CasesArgs,
    },
    /// Runs one service on its own, as in production: token keys must be configured.
    Serve {
        /// The service to run.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(SERVICES))]
        service: String,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        cases: CasesArgs,
    },
    /// Applies the database migrations of every service and exits (for a migration job).
    Migrate {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Mints a development token signed with the HS256 secret (`aegis up` creates one under the
    /// data folder).
    Token {
        /// User id (the `sub` claim).
        #[arg(long)]
        user: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Email address.
        #[arg(long, default_value = "")]
        email: String,
        /// Role: viewer, analyst, approver or admin; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 12)]
        hours: u64,
        /// Folder holding the development secret.
        #[arg(long, env = env::DATA_DIR, default_value = "data")]
        data_dir: std::path::PathBuf,
        /// HS256 secret to sign with, instead of the development secret.
        #[arg(long, env = env::AUTH_HS256_SECRET, hide_env_values = true)]
        secret: Option<String>,
        /// `iss` claim.
        #[arg(long, env = env::AUTH_ISSUER, default_value = "aegis-dev")]
        issuer: String,
        /// `aud` claim.
        #[arg(long, env = env::AUTH_AUDIENCE, default_value = "aegis")]
        audience: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aegis: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up { common, cases } => {
            let platform = common.resolve(KeyPolicy::GenerateDevelopmentKeys)?;
            telemetry::init(common.log_format, &common.log_filter)?;
            let settings = Settings::new(platform, cases.sla_policy()?);
            serve(&settings, SERVICES, Some(&common)).await
        }
        Command::Serve {
            service,
            common,
            cases,
        } => {
            anyhow::ensure!(
                common.database_url.is_some(),
                "set {} (postgres://... in production, or sqlite://PATH)",
                env::DATABASE_URL
            );
            let platform = common.resolve(KeyPolicy::RequireConfiguredKeys)?;
            telemetry::init(common.log_format, &common.log_filter)?;
            let settings = Settings::new(platform, cases.sla_policy()?);
            serve(&settings, &[service.as_str()], None).await
        }
        Command::Migrate { common } => {
            telemetry::init(common.log_format, &common.log_filter)?;
            let database = Database::connect(&common.database_url()?).await?;
            database.migrate(&aegis_cases::storage::MIGRATOR).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token {
            user,
            name,
            email,
            roles,
            hours,
            data_dir,
            secret,
            issuer,
            audience,
        } => {
            let roles = roles
                .iter()
                .map(|r| {
                    Role::parse(r).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown role {r:?}: use viewer, analyst, approver or admin"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                !user.trim().is_empty() && !user.chars().any(char::is_control),
                "--user must name the user (the token's sub)"
            );
            let secret = match secret {
                Some(secret) => Secret::new(secret),
                None => existing_development_secret(&data_dir)?,
            };
            anyhow::ensure!(
                secret.expose().len() >= 32,
                "the HS256 secret must be at least 32 bytes, as the servers require"
            );
            let user = User {
                name: name.unwrap_or_else(|| user.clone()),
                id: user,
                email,
                roles,
            };
            let token = mint_user_token(
                &secret,
                &issuer,
                &audience,
                &user,
                Duration::from_secs(hours * 3600),
            )?;
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
            Ok(())
        }
    }
}

async fn serve(
    settings: &Settings,
    services: &[&str],
    up: Option<&CommonArgs>,
) -> anyhow::Result<()> {
    let server = aegis::bind(settings, services).await?;
    let addr = server.local_addr();
    let database = redact_url(&settings.platform.database_url);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        address = %addr,
        services = %server.service_names().join(", "),
        database = %database,
        "aegis listening (with grpc.health.v1.Health, server reflection and gRPC-web)"
    );
    if let Some(common) = up {
        print_banner(common, addr, &database);
    }
    aegis::run(server, shutdown_signal()).await
}

/// The secret `aegis up` created under `data_dir`. Minting with a fresh one would give a token
/// no server accepts, so a missing secret is an error.
fn existing_development_secret(data_dir: &Path) -> anyhow::Result<Secret> {
    let path = data_dir.join(config::DEV_USER_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Secret::new(text.trim())),
        Err(_) => anyhow::bail!(
            "no development secret in {}: start `aegis up --data-dir {}` first, or pass --secret",
            data_dir.display(),
            data_dir.display()
        ),
    }
}

/// Tells a person at a terminal where Aegis listens and how to call it.
#[allow(clippy::print_stdout)]
fn print_banner(common: &CommonArgs, addr: std::net::SocketAddr, database: &str) {
    let data_dir = common.data_dir.display();
    // The path this binary was started from, so the hint works after `cargo run` too.
    let exe = std::env::current_exe()
        .ok()
        .map(|path| match std::env::current_dir() {
            Ok(cwd) => path
                .strip_prefix(&cwd)
                .map(Path::to_path_buf)
                .unwrap_or(path),
            Err(_) => path,
        })
        .map_or_else(|| "aegis".to_owned(), |path| path.display().to_string());
    println!();
    println!(
        "Aegis {} is up on {addr} ({database})",
        env!("CARGO_PKG_VERSION")
    );
    println!("Get a token:");
    println!(
        "  export TOKEN=$({exe} token --data-dir {data_dir} --user alice --name Alice \
         --role analyst)"
    );
    println!("Then:");
    println!("  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" {addr} list");
    println!();
}

/// The database URL without its password, for the start-up log.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
