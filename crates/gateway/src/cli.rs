//! The command line (SPEC §1).

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Portcullis: a zero-trust API security gateway.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole gateway with no setup: a demo upstream, config and curl commands.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin API (health, metrics, reload) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Serve https (and ask for client certificates) with a fresh local CA, whose
        /// certificates the demo writes beside its configuration.
        #[arg(long)]
        tls: bool,
        /// Add a browser login: a development OpenID provider beside the items API, and an
        /// items page behind a browser session (`auth: session`).
        #[arg(long)]
        login: bool,
    },
    /// Run the gateway from a configuration file.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "portcullis.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file and everything it references, without serving.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "portcullis.yaml")]
        config: PathBuf,
    },
    /// Mint a signed JWT for local testing.
    Token(TokenArgs),
    /// Work with the configured policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with the decision log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// DPoP (RFC 9449) tools for trying bound tokens.
    #[command(subcommand)]
    Dpop(DpopCommand),
}

/// `portcullis dpop ...`
#[derive(Debug, Subcommand)]
pub enum DpopCommand {
    /// Print a DPoP proof for one request (for `curl -H "DPoP: $(portcullis dpop proof ...)"`).
    Proof {
        /// The client's private key (EC P-256 JWK or PKCS#8 PEM); its public half goes in the proof.
        #[arg(long)]
        key: PathBuf,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request URL (query and fragment are left out of `htu`).
        #[arg(long)]
        url: String,
        /// The access token the proof goes with (sets `ath`).
        #[arg(long)]
        token: Option<String>,
        /// A server nonce (`DPoP-Nonce`) to include.
        #[arg(long)]
        nonce: Option<String>,
        /// How many proofs to print, one per line, each with its own `jti` (for load tests).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Print the RFC 7638 thumbprint of a key's public half (the `cnf.jkt` it binds to).
    Thumbprint {
        /// The key (JWK or PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
    },
}

/// `portcullis policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate the configured policy on one input document and print the decision.
    Eval {
        /// The configuration file.
        #[arg(long, short, default_value = "portcullis.yaml")]
        config: PathBuf,
        /// The policy input (JSON), shaped as the gateway builds it.
        #[arg(long)]
        input: PathBuf,
    },
}

/// `portcullis audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of decision log files (oldest first; a single current file
    /// brings its rotated predecessors along).
    Verify {
        /// The decision log file(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `portcullis token` options.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The private key: a file holding a JWK (EC or Ed25519, with `d`) or a PKCS#8 PEM.
    #[arg(long)]
    pub key: PathBuf,
    /// The `iss` claim.
    #[arg(long)]
    pub iss: String,
    /// The `aud` claim.
    #[arg(long)]
    pub aud: String,
    /// The `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// Lifetime (`exp - iat`), e.g. 15m.
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Space-separated scopes (the `scope` claim).
    #[arg(long)]
    pub scope: Option<String>,
    /// Extra claims, `name=value` (a JSON value, or else a string); repeatable.
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// The `kid` header (default: the JWK's `kid`).
    #[arg(long)]
    pub kid: Option<String>,
    /// For an RSA key: RS256 or PS256.
    #[arg(long, default_value = "RS256")]
    pub alg: String,
    /// The `typ` header.
    #[arg(long, default_value = "at+jwt")]
    pub typ: String,
    /// How many tokens to print, one per line, each with its own `jti` (for load tests).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Bind the token to this client key (DPoP): `cnf.jkt` = the thumbprint of its public half.
    #[arg(long)]
    pub cnf_jkt: Option<PathBuf>,
    /// Bind the token to this client certificate (PEM, RFC 8705): `cnf.x5t#S256`.
    #[arg(long)]
    pub cnf_x5t: Option<PathBuf>,
}
