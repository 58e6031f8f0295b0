//! Fuzz target: `flotilla_node::fuzzing::query_selector`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flotilla_node::fuzzing::query_selector(data);
});
