//! Configuration problems: each with its path in the file and its line, all reported
//! together.

use super::raw::Text;
use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `routes[2].upstream`.
    pub path: String,
    /// The line in the file, where known.
    pub line: Option<u64>,
    /// What is wrong, as one sentence.
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (p.line, p.path.is_empty()) {
                (Some(line), false) => write!(f, "{file}:{line}: {}: {}", p.path, p.message)?,
                (Some(line), true) => write!(f, "{file}:{line}: {}", p.message)?,
                (None, false) => write!(f, "{file}: {}: {}", p.path, p.message)?,
                (None, true) => write!(f, "{file}: {}", p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while compiling.
#[derive(Debug, Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(
        &mut self,
        path: impl Into<String>,
        line: Option<u64>,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            path: path.into(),
            line,
            message: message.into(),
        });
    }

    pub(super) fn at(&mut self, path: impl Into<String>, text: &Text, message: impl Into<String>) {
        self.add(path, line_of(&text.referenced), message);
    }
}

pub(super) fn line_of(location: &serde_saphyr::Location) -> Option<u64> {
    Some(location.line()).filter(|l| *l > 0)
}

/// The parser's message without its multi-line source excerpt.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with('|') && !l.starts_with("-->"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits the parser's `error: line L column C: message` into the line and the message.
pub(super) fn split_location(message: &str) -> (Option<u64>, String) {
    let rest = message.strip_prefix("error: ").unwrap_or(message);
    let parsed = rest.strip_prefix("line ").and_then(|r| {
        let (line, r) = r.split_once(' ')?;
        let (_, r) = r.strip_prefix("column ")?.split_once(": ")?;
        Some((line.parse().ok()?, r.to_string()))
    });
    match parsed {
        Some((line, message)) => (Some(line), message),
        None => (None, rest.to_string()),
    }
}
