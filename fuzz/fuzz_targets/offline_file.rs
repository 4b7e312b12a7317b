//! cargo-fuzz target `offline_file`: see [`licd_fuzz::protocol_entry::offline_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::protocol_entry::offline_file(data);
});
