//! The HTTP request-head parser (`gitmind_server::http::parse_head`) and
//! every handshake step that reads what it parsed: no input may panic
//! them, what follows a head is kept whole, and header names come out
//! lowercased.
#![no_main]

use gitmind_server::http::{self, HeadError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match http::parse_head(data) {
        Ok(Some(request)) => {
            assert!(data.ends_with(&request.rest), "the bytes after the head");
            assert!(request
                .headers
                .iter()
                .all(|(name, _)| !name.bytes().any(|b| b.is_ascii_uppercase())));
            let _ = http::graph_of(&request.path);
            let _ = http::negotiate(&request);
            let _ = http::resume_point(&request);
            let _ = http::accept(&request, None);
            let _ = request.is_upgrade();
        }
        Ok(None) => assert!(data.len() < 8 * 1024, "a partial head is under the limit"),
        Err(HeadError::Bad(_)) => {}
        Err(HeadError::Closed) => panic!("parsing never says the connection closed"),
    }
});
