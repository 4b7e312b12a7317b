//! cargo-fuzz target `x509`: see [`licd_fuzz::agent_entry::x509`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::agent_entry::x509(data);
});
