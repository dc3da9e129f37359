//! `portcullis policy eval` and `portcullis audit verify`.

use crate::config;
use anyhow::Context;
use portcullis::authz::decision_log::{Verification, rotated_name, verify_files};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Prints the configured policy's decision on one input.
pub async fn policy_eval(config_path: &Path, input: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let authorizer = config
        .authorizer
        .context("the configuration has no `policy` section")?;
    let text = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let input = portcullis::json::parse_strict(&text, portcullis::json::JsonLimits::default())
        .with_context(|| format!("{} is not valid JSON", input.display()))?;
    match authorizer.engine.decide(&input).await {
        Ok(decision) => {
            let verdict = if decision.allow { "allow" } else { "deny" };
            println!(
                "{}",
                serde_json::json!({ "decision": verdict, "engine": authorizer.engine.name(), "reasons": decision.reasons })
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => anyhow::bail!("the policy engine could not decide: {error}"),
    }
}

/// Verifies decision log files; exit 0 if the chain is intact.
pub fn verify(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let files = match files {
        [single] => with_rotated(single),
        many => many.to_vec(),
    };
    match verify_files(&files).context("cannot read the decision log")? {
        Verification::Intact { records } => {
            println!("intact: {records} records in {} file(s)", files.len());
            Ok(ExitCode::SUCCESS)
        }
        Verification::Broken { file, line, reason } => {
            eprintln!("{}:{line}: broken: {reason}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `decisions.log` preceded by `decisions.log.1`, `.2`, ... when they exist.
fn with_rotated(current: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| rotated_name(current, n))
        .take_while(|p| p.exists())
        .collect();
    files.push(current.to_path_buf());
    files
}
