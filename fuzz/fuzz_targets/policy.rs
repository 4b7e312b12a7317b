//! cargo-fuzz target `policy`: see [`licd_fuzz::protocol_entry::policy`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::protocol_entry::policy(data);
});
