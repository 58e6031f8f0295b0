//! Fuzz target: `flotilla_node::fuzzing::store_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flotilla_node::fuzzing::store_record(data);
});
