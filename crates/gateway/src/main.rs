//! The `portcullis` binary: thin; the work is in the modules.

mod admin;
mod admin_session;
mod audit;
mod cli;
mod config;
mod dashboard;
mod demo;
mod event_stream;
mod flood;
mod gateway;
mod grpc;
mod metrics;
mod pipeline;
mod proxy;
mod reload;
mod server;
mod tls;
mod token;
mod traces;
mod upgrade;
mod upstream_pool;

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A panic is a bug; the operator still gets one line, never a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("portcullis: internal error: {message}");
    }));
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("portcullis: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Check { config } => Ok(check(&config)),
        cli::Command::Run { config } => {
            runtime()?.block_on(serve::run(config, None))?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Policy(cli::PolicyCommand::Eval { config, input }) => {
            runtime()?.block_on(audit::policy_eval(&config, &input))
        }
        cli::Command::Audit(cli::AuditCommand::Verify { files }) => audit::verify(&files),
        cli::Command::Token(args) => {
            token::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Dpop(cli::DpopCommand::Proof {
            key,
            method,
            url,
            token,
            nonce,
            count,
        }) => {
            let request = token::ProofRequest {
                method: &method,
                url: &url,
                token: token.as_deref(),
                nonce: nonce.as_deref(),
            };
            token::dpop_proofs(&key, &request, count, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Dpop(cli::DpopCommand::Thumbprint { key }) => {
            println!("{}", token::thumbprint_of(&key)?);
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Demo {
            listen,
            admin,
            tls,
            login,
        } => {
            runtime()?.block_on(demo::run(listen, admin, tls, login))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // On a single core a work-stealing scheduler only adds synchronisation.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                let line = warning.line.map(|l| format!(":{l}")).unwrap_or_default();
                println!(
                    "{}{line}: warning: {}: {}",
                    path.display(),
                    warning.path,
                    warning.message
                );
            }
            let operations = config
                .contract
                .as_ref()
                .map(|c| format!(", {} documented operations", c.operations().count()))
                .unwrap_or_default();
            println!(
                "{}: configuration is valid ({} routes, {} upstreams{operations})",
                path.display(),
                config.route_count,
                config.upstream_count
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            eprintln!(
                "portcullis: error: {} problem(s) in {}",
                error.problems.len(),
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

mod serve {
    //! `portcullis run`: listeners, reload triggers, graceful shutdown.

    use crate::gateway::Gateway;
    use crate::{admin, reload, server};
    use std::path::PathBuf;
    use std::time::Duration;
    use tokio::sync::{oneshot, watch};

    /// Addresses the listeners are bound to, reported to whoever started the gateway.
    pub struct Bound {
        /// The data plane.
        pub listen: std::net::SocketAddr,
        /// The admin API, if configured.
        pub admin: Option<std::net::SocketAddr>,
    }

    /// Runs the gateway from `config_path` until SIGTERM or Ctrl-C.
    pub async fn run(
        config_path: PathBuf,
        bound: Option<oneshot::Sender<Bound>>,
    ) -> anyhow::Result<()> {
        let gateway = Gateway::start(config_path.clone())?;
        let generation = gateway.current();
        let listener = server::bind(generation.config.listen, "requests").await?;
        let listen = listener.local_addr()?;
        let admin_listener = match &generation.config.admin {
            Some(admin) => Some(server::bind(admin.address, "the admin API").await?),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        if let Some(admin_listener) = admin_listener {
            tokio::spawn(admin::serve(
                gateway.clone(),
                admin_listener,
                shutdown_rx.clone(),
            ));
        }
        tokio::spawn(gateway.clone().exchange_flags(shutdown_rx.clone()));
        reload::on_sighup(gateway.clone())?;
        let _watch = reload::on_file_change(gateway.clone(), &config_path)?;
        gateway.set_ready();
        let scheme = if generation.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!("portcullis: listening on {scheme}://{listen}");
        if let Some(admin) = admin_addr {
            eprintln!("portcullis: admin on http://{admin}");
        }
        if let Some(bound) = bound {
            // Whoever waits for the addresses (the demo's banner) is about to send requests:
            // let the first key sets load, so those requests are not refused for want of keys.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !gateway.is_ready() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = bound.send(Bound {
                listen,
                admin: admin_addr,
            });
        }
        tokio::spawn(async move {
            wait_for_shutdown_signal().await;
            eprintln!("portcullis: shutting down; finishing requests in flight");
            let _ = shutdown_tx.send(true);
        });
        let grace = generation.config.request_timeout + Duration::from_secs(1);
        drop(generation);
        server::serve(gateway.clone(), listener, shutdown_rx, grace).await;
        // Async decision records still queued are written and synced before the process
        // ends (bounded wait).
        for log in gateway.shared.decision_logs() {
            log.flush(Duration::from_secs(5)).await;
        }
        // The last alert counts go out after the last request (bounded wait).
        gateway.stop_alerts().await;
        eprintln!("portcullis: stopped");
        Ok(())
    }

    async fn wait_for_shutdown_signal() {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
    }
}
