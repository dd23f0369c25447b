#![deny(unsafe_code)]
pub mod cluster;
pub mod http;
pub mod router;
