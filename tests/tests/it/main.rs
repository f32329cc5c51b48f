//! Turnstone's integration tests: one binary, real PostgreSQL (a fresh database
//! per test), real HTTP, the real simulator; some tests run the real binaries.

mod cancel;
mod cli;
mod console;
mod contract;
mod conversation;
mod durability;
mod e2e;
mod errors;
mod fuzz;
mod keys;
mod leaks;
mod listen;
mod openapi;
mod ops;
mod outage;
mod pooler;
mod queue;
mod quotas;
mod readme;
mod rotation;
mod routines;
mod sdk;
mod security;
mod sse;
mod starts;
mod storage;
mod taskqueue;
mod tenancy;
mod waiting;
