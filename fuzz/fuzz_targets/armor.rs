//! cargo-fuzz target `armor`: see [`licd_fuzz::protocol_entry::armor_text`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    licd_fuzz::protocol_entry::armor_text(data);
});
