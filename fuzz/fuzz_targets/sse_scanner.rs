//! The SSE parser holds its caps on any input split in any way.
#![no_main]
use keygate_gateway::sse::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut p = SseParser::new(1024, 4096);
    for chunk in data.chunks(split) {
        if p.feed(chunk, |e| assert!(e.data.len() <= 4096 + 1024)).is_err() {
            return;
        }
    }
    let _ = p.finish(|_| {});
});
