//! Integration tests: the real `ecmigrate` binary against real `redis-server` processes of the embedded
//! sandbox, each test in its own temp folder, every process stopped when the test ends.

mod aws_moto;
mod bulk_lane;
mod cutover;
mod harness;
mod invalid_plans;
mod ledger;
mod sandbox_lifecycle;
mod sandbox_migration;
mod streaming;
mod verifier;
mod wizard;
