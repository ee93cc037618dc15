//! Integration tests: the real `ecmigrate` binary against real `redis-server` processes of the embedded
//! sandbox, each test in its own temp folder, every process stopped when the test ends.

mod app_writer;
mod aws_moto;
mod backend;
mod bulk_lane;
mod client_certs;
mod cluster_copy;
mod cluster_create;
mod cluster_cutover;
mod cluster_restore;
mod cluster_stream;
mod conventions;
mod cutover;
mod fleet;
mod fleet_plan;
mod harness;
mod hostile_files;
mod iam_policy;
mod in_place_rotation;
mod in_place_transit;
mod invalid_plans;
mod ledger;
mod moto;
mod plan_files;
mod rbac;
#[cfg(feature = "test-hooks")]
mod resume_points;
mod run_log;
mod sandbox_cluster;
mod sandbox_lifecycle;
mod sandbox_migration;
mod scenarios;
mod stream_health;
mod streaming;
mod terraform;
mod verifier;
mod wizard;
