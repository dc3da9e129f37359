//! Reading an OpenAPI document and the files its `$ref`s name, and following those
//! references. Only local files are read: a reference to a URL is a load problem, never a
//! fetch, so loading a document cannot reach the network.

use crate::json::{JsonLimits, parse_strict};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest document file read.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most files one document may pull in through `$ref`s.
const MAX_FILES: usize = 64;
/// Longest chain of references to references.
const MAX_REF_HOPS: usize = 32;

/// Why a document could not be loaded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{}: {message}", file.display(), if pointer.is_empty() { "" } else { "#" }, pointer)]
pub struct LoadProblem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The JSON pointer of the offending value inside the file (empty for the whole file).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Identifies one loaded file.
pub(crate) type FileId = usize;

/// A place in the loaded documents: a file and a JSON pointer into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Place {
    pub file: FileId,
    pub pointer: String,
}

impl Place {
    /// The place of a child value.
    pub fn child(&self, key: &str) -> Place {
        Place {
            file: self.file,
            pointer: format!("{}/{}", self.pointer, escape_token(key)),
        }
    }
}

/// The root document and every file it references, read once.
#[derive(Debug, Default)]
pub(crate) struct Documents {
    files: Vec<(PathBuf, Value)>,
    by_path: HashMap<PathBuf, FileId>,
}

impl Documents {
    /// Reads the root document.
    pub fn open(path: &Path) -> Result<(Documents, Place), LoadProblem> {
        let mut docs = Documents::default();
        let file = docs.load(path)?;
        Ok((
            docs,
            Place {
                file,
                pointer: String::new(),
            },
        ))
    }

    /// The path of a loaded file.
    pub fn path(&self, file: FileId) -> PathBuf {
        self.files
            .get(file)
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }

    /// Every file read, the root first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }

    /// A problem at a place.
    pub fn problem(&self, place: &Place, message: impl Into<String>) -> LoadProblem {
        LoadProblem {
            file: self.path(place.file),
            pointer: place.pointer.clone(),
            message: message.into(),
        }
    }

    /// The value at a place.
    pub fn get(&self, place: &Place) -> Option<&Value> {
        let (_, root) = self.files.get(place.file)?;
        if place.pointer.is_empty() {
            return Some(root);
        }
        root.pointer(&place.pointer)
    }

    fn load(&mut self, path: &Path) -> Result<FileId, LoadProblem> {
        let fail = |message: String| LoadProblem {
            file: path.to_path_buf(),
            pointer: String::new(),
            message,
        };
        let canonical = path
            .canonicalize()
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if let Some(id) = self.by_path.get(&canonical) {
            return Ok(*id);
        }
        if self.files.len() >= MAX_FILES {
            return Err(fail(format!("more than {MAX_FILES} files are referenced")));
        }
        let meta = std::fs::metadata(&canonical).map_err(|e| fail(format!("cannot read: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text =
            std::fs::read_to_string(&canonical).map_err(|e| fail(format!("cannot read: {e}")))?;
        let value = parse_document(&text).map_err(|e| fail(e.to_string()))?;
        let id = self.files.len();
        self.files.push((path.to_path_buf(), value));
        self.by_path.insert(canonical, id);
        Ok(id)
    }

    /// Follows the `$ref` of the value at `place`, if it has one, to the value it names
    /// (through chains of references); otherwise returns `place` itself.
    pub fn resolve(&mut self, place: &Place) -> Result<Place, LoadProblem> {
        let mut current = place.clone();
        for _ in 0..MAX_REF_HOPS {
            let reference = match self.get(&current) {
                None => return Err(self.problem(&current, "nothing is at this place")),
                Some(value) => match value.get("$ref") {
                    None => return Ok(current),
                    Some(Value::String(r)) => r.clone(),
                    Some(_) => return Err(self.problem(&current, "`$ref` must be a string")),
                },
            };
            current = self.target(&current, &reference)?;
        }
        Err(self.problem(place, "a chain of more than 32 `$ref`s (or a cycle)"))
    }

    /// The place a reference written at `from` names; reads its file when needed.
    pub fn target(&mut self, from: &Place, reference: &str) -> Result<Place, LoadProblem> {
        let (file_part, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        if file_part.contains(':') || file_part.starts_with("//") {
            return Err(self.problem(
                from,
                format!("`{reference}` is not a local reference (only files beside the document are read)"),
            ));
        }
        let file = if file_part.is_empty() {
            from.file
        } else {
            let base = self.path(from.file);
            let dir = base.parent().map(Path::to_path_buf).unwrap_or_default();
            let decoded = percent_encoding::percent_decode_str(file_part)
                .decode_utf8()
                .map_err(|_| self.problem(from, format!("`{reference}` is not valid UTF-8")))?;
            self.load(&dir.join(decoded.as_ref()))
                .map_err(|p| LoadProblem {
                    message: format!("`{reference}`: {}", p.message),
                    ..self.problem(from, "")
                })?
        };
        let pointer = percent_encoding::percent_decode_str(fragment)
            .decode_utf8()
            .map_err(|_| self.problem(from, format!("`{reference}` is not valid UTF-8")))?
            .into_owned();
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(self.problem(
                from,
                format!("`{reference}`: only JSON-pointer fragments are supported"),
            ));
        }
        let place = Place { file, pointer };
        if self.get(&place).is_none() {
            return Err(self.problem(from, format!("`{reference}` points at nothing")));
        }
        Ok(place)
    }
}

/// Parses a document as JSON when it looks like JSON, otherwise as YAML. Duplicate keys
/// are refused in both, so that no two readers of the document can disagree.
fn parse_document(text: &str) -> Result<Value, DocumentError> {
    if text.trim_start().starts_with('{') {
        let limits = JsonLimits {
            max_depth: 256,
            max_string_bytes: 1024 * 1024,
        };
        return parse_strict(text.as_bytes(), limits).map_err(DocumentError::Json);
    }
    // The parser's first line says where and what; the rest is a source excerpt.
    serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        DocumentError::Yaml(
            message
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    })
}

/// Why a document's text is not a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum DocumentError {
    /// Not strict JSON (duplicate keys included).
    #[error("{0}")]
    Json(crate::json::JsonError),
    /// Not YAML (duplicate keys included); the parser's first line.
    #[error("{0}")]
    Yaml(String),
}

/// Escapes one JSON-pointer reference token (RFC 6901).
pub(crate) fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_numeric_keys_become_strings_and_duplicates_are_refused() {
        let value = parse_document("responses:\n  200:\n    description: ok\n").unwrap();
        assert!(value.pointer("/responses/200").is_some());
        let duplicate = parse_document("a: 1\na: 2\n").unwrap_err().to_string();
        assert!(
            duplicate.contains("uplicate") && !duplicate.contains('\n'),
            "{duplicate}"
        );
        assert!(parse_document("{\"a\":1,\"a\":2}").is_err());
    }

    #[test]
    fn references_are_followed_across_files_and_urls_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("api.yaml");
        std::fs::write(
            &root,
            "a: {$ref: '#/b'}\nb: {$ref: 'other.yaml#/c'}\nweb: {$ref: 'https://example.com/x'}\nloop: {$ref: '#/loop'}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("other.yaml"), "c: {type: string}\n").unwrap();
        let (mut docs, root_place) = Documents::open(&root).unwrap();
        let target = docs.resolve(&root_place.child("a")).unwrap();
        assert_eq!(
            docs.get(&target),
            Some(&serde_json::json!({"type": "string"}))
        );
        let web = docs.resolve(&root_place.child("web")).unwrap_err();
        assert!(web.message.contains("not a local reference"), "{web}");
        assert!(docs.resolve(&root_place.child("loop")).is_err());
    }
}
