//! Proxying: `http` is the HTTP/1.1 request pipeline (with `choose` deciding
//! where each request goes), `tcp` the L4 copy.

mod body;
mod choose;
mod dial;
mod exchange;
pub mod http;
mod io;
pub use io::Inbound;
mod local;
mod mirror;
mod record;
pub mod tcp;
