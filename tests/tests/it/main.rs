//! Turnstone's integration tests: one binary, real PostgreSQL (a fresh database
//! per test), real HTTP, the real simulator; some tests run the real binaries.

mod cancel;
mod durability;
mod e2e;
mod keys;
mod leaks;
mod errors;
mod fuzz;
mod openapi;
mod outage;
mod queue;
mod rotation;
mod quotas;
mod security;
mod sse;
mod tenancy;
