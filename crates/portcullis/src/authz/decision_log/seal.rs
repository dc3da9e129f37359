//! Sealing a decision record: its members serialized once by the request task, closed by the
//! writer with `prev_hash` and `hash`, and the same hash recomputed from a parsed line.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

/// One record's members, serialized once, in the record's order, each followed by a comma:
/// the writer closes the object with `prev_hash` (and `hash`) without parsing or
/// serializing again.
#[derive(Debug, Default)]
pub(super) struct Sealable {
    members: Vec<u8>,
}

impl Sealable {
    pub(super) fn of(record: &Map<String, Value>) -> Sealable {
        let mut members = Vec::with_capacity(256);
        for (key, value) in record {
            if key == "hash" || key == "prev_hash" {
                continue;
            }
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut members, key);
            members.push(b':');
            let _ = serde_json::to_writer(&mut members, value);
            members.push(b',');
        }
        Sealable { members }
    }

    /// The members of an entry that serializes as a JSON object, in its field order.
    pub(super) fn of_entry(entry: &super::DecisionEntry<'_>) -> Sealable {
        let mut members = Vec::with_capacity(256);
        // Writing JSON into a Vec cannot fail; a struct always writes `{...}`.
        let _ = serde_json::to_writer(&mut members, entry);
        if members.last() == Some(&b'}') {
            members.pop();
        }
        if members.first() == Some(&b'{') {
            members.remove(0);
        }
        if !members.is_empty() {
            members.push(b',');
        }
        Sealable { members }
    }

    /// Appends the record's line to `out` and returns its hash: SHA-256 over `prev_hash` and
    /// the record's JSON with `prev_hash` as its last member; the line adds `hash` after it.
    pub(super) fn seal_into(&self, prev_hash: &[u8; 64], out: &mut Vec<u8>) -> [u8; 64] {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(prev_hash);
        context.update(b"{");
        context.update(&self.members);
        context.update(b"\"prev_hash\":\"");
        context.update(prev_hash);
        context.update(b"\"}");
        let hash = hex(context.finish().as_ref());
        out.push(b'{');
        out.extend_from_slice(&self.members);
        out.extend_from_slice(b"\"prev_hash\":\"");
        out.extend_from_slice(prev_hash);
        out.extend_from_slice(b"\",\"hash\":\"");
        out.extend_from_slice(&hash);
        out.extend_from_slice(b"\"}\n");
        hash
    }
}

/// Lower-case hex of a SHA-256 digest.
fn hex(digest: &[u8]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        if let [hi, lo] = pair {
            let digit = |nibble: u8| DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
            *hi = digit(byte >> 4);
            *lo = digit(byte & 0x0f);
        }
    }
    out
}

/// SHA-256 over the previous hash and the record's JSON as written, without `hash` (the
/// map keeps the line's member order), as the writer computes it.
pub(super) fn hash_of(record: &Map<String, Value>, prev_hash: &str) -> String {
    let mut with_prev = record.clone();
    with_prev.remove("hash");
    with_prev.insert("prev_hash".into(), Value::String(prev_hash.to_string()));
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(prev_hash.as_bytes());
    context.update(Value::Object(with_prev).to_string().as_bytes());
    String::from_utf8_lossy(&hex(context.finish().as_ref())).into_owned()
}
