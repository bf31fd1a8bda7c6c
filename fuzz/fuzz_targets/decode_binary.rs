//! Any bytes as a binary frame: decoding never panics, and whatever
//! decodes encodes (with and without zstd) and decodes to the same
//! messages again.
#![no_main]

use gitmind_schema::binary::{self, Compression};
use gitmind_schema::message::Envelope;
use gitmind_schema::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(all) = binary::decode(data, &Limits::default()) else {
        return;
    };
    let good: Vec<Envelope> = all.into_iter().filter_map(Result::ok).collect();
    // The canonical form of what was read may be larger than the input
    // (shared strings are written out), so read it back with room.
    let roomy = Limits {
        max_frame_bytes: 1 << 28,
        max_envelopes: 1 << 20,
        max_depth: 64,
    };
    for compression in [Compression::Never, Compression::Always] {
        let frame = binary::encode_with(&good, compression);
        let again: Vec<Envelope> = binary::decode(&frame, &roomy)
            .expect("a re-encoded frame decodes")
            .into_iter()
            .map(|r| r.expect("a re-encoded message decodes"))
            .collect();
        assert_eq!(again, good);
    }
});
