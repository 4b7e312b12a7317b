//! `licd`: the license-enforcement agent binary.
fn main() {
    println!("licd: not yet");
}
