//! Fuzz target: `flotilla_node::fuzzing::client_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flotilla_node::fuzzing::client_request(data);
});
