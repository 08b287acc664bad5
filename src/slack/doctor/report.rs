//! What `countersign doctor` found: sections of checks, each passed, a warning or failed, and
//! for each one not passed the concrete thing to do. Rendered as plain text, one line per check.

use std::fmt;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Works, but not fully, or could not be checked: does not fail the run.
    Warn,
    Fail,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
        }
    }
}

/// One line of the report, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub text: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(text: impl Into<String>) -> Self {
        Self {
            status: Status::Pass,
            text: text.into(),
            fix: None,
        }
    }

    pub fn warn(text: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            text: text.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(text: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            text: text.into(),
            fix: Some(fix.into()),
        }
    }
}

/// A titled group of checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub title: &'static str,
    pub checks: Vec<Check>,
}

/// Everything checked, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sections: Vec<Section>,
    /// Said once at the end (e.g. why nothing was checked).
    pub note: Option<String>,
}

impl Report {
    pub fn section(&mut self, title: &'static str, checks: Vec<Check>) {
        self.sections.push(Section { title, checks });
    }

    fn count(&self, status: Status) -> usize {
        self.checks().filter(|c| c.status == status).count()
    }

    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.sections.iter().flat_map(|s| &s.checks)
    }

    /// Whether anything failed: the command's exit status is 1 then.
    pub fn failed(&self) -> bool {
        self.count(Status::Fail) > 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for section in &self.sections {
            writeln!(f, "{}", section.title)?;
            for check in &section.checks {
                writeln!(f, "  {} {}", check.status.mark(), check.text)?;
                if let Some(fix) = &check.fix {
                    writeln!(f, "    fix: {fix}")?;
                }
            }
        }
        if let Some(note) = &self.note {
            writeln!(f, "{note}")?;
        }
        let (failed, warned) = (self.count(Status::Fail), self.count(Status::Warn));
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        match (failed, warned) {
            (0, 0) => writeln!(f, "\nall {} checks passed", self.count(Status::Pass)),
            (0, w) => writeln!(f, "\nno failures, {}", plural(w, "warning")),
            (n, w) => writeln!(
                f,
                "\n{} failed, {}: fix the ✗ lines, then run countersign doctor again",
                plural(n, "check"),
                plural(w, "warning")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_check_with_its_fix_and_a_verdict() {
        let mut report = Report::default();
        report.section(
            "Channels",
            vec![
                Check::pass("roles.finance: #finance (C1)"),
                Check::fail("roles.legal: not in C2", "invite @cs to #legal"),
                Check::warn("groups:read missing", "add it"),
            ],
        );
        assert!(report.failed());
        assert_eq!(
            report.to_string(),
            "Channels\n  ✓ roles.finance: #finance (C1)\n  ✗ roles.legal: not in C2\n    fix: invite @cs to #legal\n  ! groups:read missing\n    fix: add it\n\n1 check failed, 1 warning: fix the ✗ lines, then run countersign doctor again\n"
        );
        let mut fine = Report::default();
        fine.section("Token", vec![Check::pass("ok"), Check::warn("w", "x")]);
        assert!(!fine.failed());
        assert!(fine.to_string().ends_with("no failures, 1 warning\n"));
    }
}
