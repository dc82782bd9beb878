//! Switchboard
pub mod engine;
pub mod protocol;
pub use engine::service::RemoteAddr;
