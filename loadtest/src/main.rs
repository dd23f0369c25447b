//! The `ringway-load` command (the CLI comes in a later change).

fn main() {}
