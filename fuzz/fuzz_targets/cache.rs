//! cargo-fuzz target `cache`: see [`licd_fuzz::agent_entry::cache`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::agent_entry::cache(data);
});
