#![deny(unsafe_code)]
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod listener;
pub mod proxy;
pub mod router;
pub mod upstream;
pub mod worker;
