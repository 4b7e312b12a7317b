//! `include/licd.h` is generated from the crate by cbindgen; this test regenerates it and
//! fails when the committed header differs. `LICD_UPDATE_HEADER=1` rewrites it instead.

use std::path::Path;

#[test]
fn the_committed_header_matches_the_code() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../../include/licd.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .unwrap();
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).unwrap();
    if std::env::var_os("LICD_UPDATE_HEADER").is_some() {
        std::fs::write(&header, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/licd.h is out of date with client/ffi/src/lib.rs; regenerate it with\n\
         LICD_UPDATE_HEADER=1 cargo test -p licd-client-ffi --test header"
    );
}
