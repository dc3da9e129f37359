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
}
