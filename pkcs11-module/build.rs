//! Link flags for the cdylib.

fn main() {
    // The module runs a background runtime whose threads execute code from this library. If an
    // application dlclose()s us while those threads are parked (it skipped C_Finalize, or
    // C_Finalize timed out waiting for them), unmapping the code would crash the process.
    // `-z nodelete` keeps the library mapped until exit, which is what every module with
    // threads needs.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
