//! On Windows with the WDK (`--features wdk`), `wdk-build` configures the link the
//! windows-drivers-rs way. Every other build (the host tests, the Linux `cargo xtask
//! build-drivers`) needs nothing here.

fn main() {
    #[cfg(feature = "wdk")]
    if let Err(e) = wdk_build::configure_wdk_binary_build() {
        panic!("configuring the WDK build failed: {e:?}");
    }
}
