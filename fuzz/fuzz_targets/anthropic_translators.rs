//! The request and response translators and the stream translator never panic.
#![no_main]
use keygate_gateway::hubs::anthropic::{chat_to_messages, error_to_openai, messages_to_chat, StreamTranslator};
use keygate_gateway::sse::SseEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = chat_to_messages(&v, "m", 1024);
        let _ = messages_to_chat(&v, "m");
        let _ = error_to_openai(&v);
    }
    let text = String::from_utf8_lossy(data);
    let mut t = StreamTranslator::new("m", "id", 0, true);
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let event = ["message_start", "content_block_delta", "message_delta", "error", "ping"][i % 5];
        t.on_event(&SseEvent { event: Some(event.into()), data: line.to_string() }, &mut out);
    }
    t.finish(&mut out);
});
