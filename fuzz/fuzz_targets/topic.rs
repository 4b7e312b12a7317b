//! cargo-fuzz target `topic`: see [`licd_fuzz::protocol_entry::topic`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::protocol_entry::topic(data);
});
