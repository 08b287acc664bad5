//! On-call schedules from the outside: `countersign oncall who`, and the manifests' checks.

use countersign::registry::Registry;

use crate::common::{manifests_dir, policies_dir};
use crate::fixture::Fixture;

fn who(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["oncall", "who"])
        .args(args)
        .env("COUNTERSIGN_MANIFESTS", manifests_dir())
        .env("COUNTERSIGN_POLICIES", policies_dir())
        .output()
        .unwrap()
}

#[test]
fn who_is_on_call_follows_the_shipped_schedules() {
    let cases = [
        // Weekly from Monday 5 January 2026 09:00 London: the second week is U0FIN002's.
        (["finance-primary", "--at", "2026-01-05T08:59:00Z"], ""),
        (
            ["finance-primary", "--at", "2026-01-05T09:00:00Z"],
            "U0FIN001",
        ),
        (
            ["finance-primary", "--at", "2026-01-12T09:00:00Z"],
            "U0FIN002",
        ),
        // The Christmas override.
        (
            ["finance-primary", "--at", "2026-12-25T12:00:00Z"],
            "U0MGR001",
        ),
        // Security's 12-hour shifts from 08:00 UTC.
        (["security", "--at", "2026-01-05T19:59:00Z"], "U0SEC001"),
        (["security", "--at", "2026-01-05T20:00:00Z"], "U0SEC002"),
    ];
    for (args, expected) in cases {
        let output = who(&args);
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert_eq!(printed, expected, "{args:?}");
        assert_eq!(output.status.success(), !expected.is_empty(), "{args:?}");
    }
    let unknown = who(&["treasury"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no schedule named \"treasury\""));
}

#[test]
fn a_role_must_name_a_schedule_that_exists() {
    let fixture = Fixture::new();
    fixture.edit(
        "manifests/roles.yaml",
        "oncall: legal",
        "oncall: legal-team",
    );
    let error = Registry::load(&fixture.manifests(), &fixture.policies())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("roles.legal.oncall") && error.contains("no schedule named \"legal-team\""),
        "{error}"
    );
}
