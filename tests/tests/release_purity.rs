//! The release binaries carry no test code, however `cargo build --release --workspace` is run.
//!
//! Test code lives outside the product: the fuzz bodies and harnesses in `sylkgw-kit`
//! (`tests/kit`), the fault hook behind the core's `fault-injection` feature, which only
//! `tests/`' `[dev-dependencies]` turn on. Cargo's resolver 2 unifies features across the
//! workspace, but leaves dev-dependency features out of builds that build no tests. `cargo tree
//! -e no-dev` resolves features exactly like such a build, without building anything, so these
//! checks are cheap (well under a second).

use std::process::Command;

/// Runs `cargo tree` on this workspace with `args`; returns stdout.
fn cargo_tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--frozen", "--manifest-path", manifest, "--prefix", "none", "-f", "{p} [{f}]"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
}

/// The features of `sylkgw-core` in a `cargo tree` listing (every line of it agrees).
fn core_features(tree: &str) -> Vec<String> {
    let mut lines = tree.lines().filter(|l| l.starts_with("sylkgw-core "));
    let first = lines.next().expect("sylkgw-core is in the tree");
    let features = first.rsplit_once('[').and_then(|(_, f)| f.split_once(']')).map(|(f, _)| f).unwrap_or_default();
    features.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect()
}

/// Features of the core that belong in the product (a new test-only feature is not one).
const PRODUCT_FEATURES: [&str; 1] = ["default"];

/// `cargo build --release --workspace` resolves the core with product features only, never
/// `fault-injection`. The same query with dev-dependencies sees the feature, which shows the
/// check reads feature names right (it is not vacuously green).
#[test]
fn workspace_build_resolves_no_test_feature_in_the_core() {
    let build = core_features(&cargo_tree(&["--workspace", "-e", "no-dev"]));
    assert!(
        build.iter().all(|f| PRODUCT_FEATURES.contains(&f.as_str())),
        "features of sylkgw-core in `cargo build --workspace`: {build:?}"
    );

    let with_tests = core_features(&cargo_tree(&["--workspace"]));
    assert!(with_tests.iter().any(|f| f == "fault-injection"), "with dev-dependencies: {with_tests:?}");
}

/// The binaries do not link the test kit or the test crate: neither is in their dependency
/// tree.
#[test]
fn runtimes_do_not_depend_on_the_test_kit() {
    for runtime in ["sylkgw-mio", "sylkgw-tokio"] {
        let tree = cargo_tree(&["-p", runtime, "-e", "no-dev"]);
        assert!(tree.lines().any(|l| l.starts_with(&format!("{runtime} "))), "{runtime} is missing:\n{tree}");
        for test_crate in ["sylkgw-kit ", "sylkgw-tests "] {
            assert!(!tree.lines().any(|l| l.starts_with(test_crate)), "{runtime} depends on {test_crate}:\n{tree}");
        }
    }
}

/// The served web phone carries no test probe: the harness injects `phone.toneLevels` itself
/// (`tests/src/web/tone_probe.js`), and the page has no trace of it.
#[test]
fn the_served_page_has_no_test_probe() {
    let page = sylkgw_core::web::PHONE_HTML;
    for probe in ["toneLevels", "goertzel", "Audio probe"] {
        assert!(!page.contains(probe), "the shipped page contains {probe:?}");
    }
    assert!(sylkgw_tests::browser::TONE_PROBE.contains("phone.toneLevels = toneLevels"), "the probe is in the kit");
}
