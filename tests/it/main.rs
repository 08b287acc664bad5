//! Integration tests: one binary (one link), the real app on port 0, a fresh database per test.
//! Tests marked with `both_backends!` run once on SQLite and once on PostgreSQL (when
//! `COUNTERSIGN_TEST_POSTGRES_URL` is set; under `CI=true` its absence is a failure).

mod common;
mod fixture;

mod api;
mod audit_cli;
mod browser;
mod burst;
mod callback_crash;
mod callbacks;
mod controls;
mod crash_atomicity;
mod decision_plans;
mod demo;
mod deploy_files;
mod directory_cache;
mod doctor;
mod lifecycle;
mod long_poll;
mod oncall;
mod openapi_doc;
mod ops;
mod policy;
mod policy_cli;
mod receiver;
mod redis_limits;
mod redis_support;
mod redis_tls;
mod replicas;
mod reports;
mod sandbox_api;
mod scale_out;
mod sla;
mod slack_client;
mod slack_flow;
mod slack_manifest;
mod slack_outbox;
mod slack_votes;
mod slow_clients;
mod socket_mode;
mod step_up;
mod store_contract;
mod writer;
