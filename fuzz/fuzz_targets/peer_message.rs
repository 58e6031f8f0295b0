//! Fuzz target: `flotilla_node::fuzzing::peer_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flotilla_node::fuzzing::peer_message(data);
});
