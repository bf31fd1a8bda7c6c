//! Any text as a JSON frame: decoding never panics, and whatever decodes
//! encodes and decodes to the same messages again, through JSON and
//! through the binary codec.
#![no_main]

use gitmind_schema::message::Envelope;
use gitmind_schema::{binary, json, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(all) = json::decode(text, &Limits::default()) else {
        return;
    };
    let good: Vec<Envelope> = all.into_iter().filter_map(Result::ok).collect();
    let roomy = Limits {
        max_frame_bytes: 1 << 28,
        max_envelopes: 1 << 20,
        max_depth: 64,
    };

    let again = json::encode_batch(&good);
    let again: Vec<Envelope> =
        json::decode(std::str::from_utf8(&again).expect("JSON is UTF-8"), &roomy)
            .expect("a re-encoded JSON frame decodes")
            .into_iter()
            .map(|r| r.expect("a re-encoded JSON message decodes"))
            .collect();
    assert_eq!(again, good);

    let frame = binary::encode_batch(&good);
    let back: Vec<Envelope> = binary::decode(&frame, &roomy)
        .expect("the binary form decodes")
        .into_iter()
        .map(|r| r.expect("the binary form of a JSON message decodes"))
        .collect();
    assert_eq!(back, good);
});
