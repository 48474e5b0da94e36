//! sagactl against running sagas: each test starts its own system (its own broker and
//! databases), drives real saga traffic through the API, and runs the sagactl binary as an
//! operator would.

mod harness;

mod discovery;
mod dlq;
mod errors;
mod group;
mod lag;
mod load;
mod rebuild;
mod replay;
mod trace;
