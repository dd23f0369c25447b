#![deny(unsafe_code)]
pub mod cluster;
pub mod config;
pub mod http;
pub mod router;
