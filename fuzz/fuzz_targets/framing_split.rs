//! The HTTP/1 framing scanner gives the same verdicts however the bytes are split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::framing::FramingScanner;

fn verdicts(chunks: impl Iterator<Item = Vec<u8>>) -> Vec<Option<&'static str>> {
    let mut scanner = FramingScanner::default();
    for chunk in chunks {
        scanner.feed(&chunk);
    }
    std::iter::from_fn(|| scanner.next_verdict()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = verdicts(std::iter::once(stream.to_vec()));
    // Split sizes from the seed: 1..=16 bytes, varying as the stream goes.
    let mut pieces = Vec::new();
    let (mut at, mut step) = (0usize, usize::from(seed));
    while at < stream.len() {
        step = step.wrapping_mul(31).wrapping_add(7);
        let len = (step % 16 + 1).min(stream.len() - at);
        pieces.push(stream[at..at + len].to_vec());
        at += len;
    }
    assert_eq!(verdicts(pieces.into_iter()), whole);
});
