//! cargo-fuzz target `config`: see [`licd_fuzz::agent_entry::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::agent_entry::config(data);
});
