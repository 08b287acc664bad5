//! The core on a temporary SQLite file with its clock in hand, for the core's unit tests: a
//! real store, no Slack, no HTTP.

use std::sync::Arc;

use super::Engine;
use crate::clock::ManualClock;
use crate::store::prelude::*;
use crate::store::{PoolSettings, SqliteStore, Store};

pub(super) struct TestCore {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub clock: ManualClock,
    _dir: tempfile::TempDir,
}

/// A migrated store in a fresh temporary directory and an engine on it, at 2026-12-02 09:00 UTC.
pub(super) async fn core() -> TestCore {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("cs.db"), &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let clock = ManualClock::new(crate::clock::parse_timestamp("2026-12-02T09:00:00Z").unwrap());
    let engine = Engine::start(store.clone(), Arc::new(clock.clone()));
    TestCore {
        engine,
        store,
        clock,
        _dir: dir,
    }
}
