//! `${env:NAME}` and `${file:PATH}` references, and the rule that secret-bearing fields
//! hold only references, never literals.

use super::Problems;
use super::raw::Text;
use portcullis::secret::Secret;
use std::path::{Path, PathBuf};

/// Largest file a `${file:...}` reference may name.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Resolves references, relative to the configuration file's directory.
pub(super) struct Resolver {
    base_dir: PathBuf,
    /// Every file a `${file:...}` reference named: watched for reload, so that a rotated
    /// secret (Vault Agent, the Secrets Store CSI driver, a Kubernetes secret) takes effect.
    read: std::cell::RefCell<Vec<PathBuf>>,
}

impl Resolver {
    pub(super) fn new(base_dir: &Path) -> Self {
        Resolver {
            base_dir: base_dir.to_path_buf(),
            read: std::cell::RefCell::default(),
        }
    }

    /// The files references named so far.
    pub(super) fn files(&self) -> Vec<PathBuf> {
        self.read.borrow().clone()
    }

    /// A string value with every reference in it replaced.
    pub(super) fn text(&self, path: &str, text: &Text, problems: &mut Problems) -> Option<String> {
        let mut out = String::with_capacity(text.value.len());
        let mut rest = text.value.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(rest.get(..start).unwrap_or_default());
            let after = rest.get(start + 2..).unwrap_or_default();
            let Some(end) = after.find('}') else {
                problems.at(path, text, "a `${` reference is not closed with `}`");
                return None;
            };
            let reference = after.get(..end).unwrap_or_default();
            out.push_str(&self.lookup(path, text, reference, problems)?);
            rest = after.get(end + 1..).unwrap_or_default();
        }
        out.push_str(rest);
        Some(out)
    }

    /// A secret: the value must be exactly one reference.
    pub(super) fn secret(
        &self,
        path: &str,
        text: &Text,
        problems: &mut Problems,
    ) -> Option<Secret> {
        let value = text.value.trim();
        let is_reference =
            value.starts_with("${") && value.ends_with('}') && value.matches("${").count() == 1;
        if !is_reference {
            problems.at(
                path,
                text,
                "holds a literal secret; write it as a reference, ${env:NAME} or ${file:/path/to/file}",
            );
            return None;
        }
        let value = self.text(path, text, problems)?;
        if value.is_empty() {
            problems.at(path, text, "the referenced secret is empty");
            return None;
        }
        Some(Secret::new(value))
    }

    fn lookup(
        &self,
        path: &str,
        text: &Text,
        reference: &str,
        problems: &mut Problems,
    ) -> Option<String> {
        match reference.split_once(':') {
            Some(("env", name)) => match std::env::var(name) {
                Ok(value) => Some(value),
                Err(_) => {
                    problems.at(
                        path,
                        text,
                        format!("environment variable `{name}` is not set"),
                    );
                    None
                }
            },
            Some(("file", file)) => {
                let full = self.base_dir.join(file);
                self.read.borrow_mut().push(full.clone());
                let read = std::fs::metadata(&full).and_then(|meta| {
                    if meta.len() > MAX_SECRET_FILE_BYTES {
                        Err(std::io::Error::other("file is too large"))
                    } else {
                        std::fs::read_to_string(&full)
                    }
                });
                match read {
                    Ok(value) => Some(value.trim_end_matches(['\n', '\r']).to_string()),
                    Err(e) => {
                        problems.at(path, text, format!("cannot read `{}`: {e}", full.display()));
                        None
                    }
                }
            }
            _ => {
                problems.at(
                    path,
                    text,
                    format!("`${{{reference}}}` is not a reference (use ${{env:NAME}} or ${{file:PATH}})"),
                );
                None
            }
        }
    }
}
