//! Editable copies of the shipped manifests and policies.

use std::path::{Path, PathBuf};

use crate::common::{TestDb, manifests_dir, policies_dir, test_config};

/// A copy of the shipped manifests and policies that a test may edit.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&manifests_dir(), &dir.path().join("manifests"));
        copy_dir(&policies_dir(), &dir.path().join("policies"));
        Self { dir }
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Replaces `from` with `to` in a file of the fixture, asserting it was there.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// Adds `text` at the end of a file of the fixture.
    pub fn append(&self, file: &str, text: &str) {
        let path = self.dir.path().join(file);
        let before = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, before + text).unwrap();
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    pub fn config(&self, db: &TestDb) -> countersign::config::Config {
        let mut config = test_config(db);
        config.manifests = self.manifests();
        config.policies = self.policies();
        config
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
