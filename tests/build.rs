//! Marks the build when the suite is pointed at external servers, so the
//! fault tests that must start (and kill) servers of their own are
//! compiled as `#[ignore]`d: the test runner then reports them as ignored
//! rather than `ok`. (`cargo test` builds and runs with the same
//! environment; a change of these variables rebuilds.)

fn main() {
    for (var, cfg) in [
        ("FF_TEST_VALKEY_URL", "ff_external_valkey"),
        ("FF_TEST_POSTGRES_URL", "ff_external_postgres"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={var}");
        if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
