//! cargo-fuzz target `envelope`: see [`licd_fuzz::protocol_entry::envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::protocol_entry::envelope(data);
});
