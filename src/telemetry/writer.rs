//! The access log writer thread: workers hand it batches of finished lines
//! over a bounded channel (never blocking; a full channel drops the batch and
//! counts it), and it does the blocking writes, reopens (SIGUSR1, logrotate)
//! and target changes (reloads).

use super::{LogSink, LogTarget};
use std::io;
use std::thread::JoinHandle;

/// Batches the writer may hold before workers start dropping.
const QUEUE: usize = 256;

pub enum LogMessage {
    Lines(Vec<u8>),
    /// Reopen the file (after logrotate moved it).
    Reopen,
    /// Write somewhere else from now on (a reload changed `access_log.target`).
    Retarget(LogTarget),
    /// Everything before this is written; end the thread.
    Stop,
}

/// Start the writer for `target`; it ends when every sender is dropped.
pub fn spawn_log_writer(target: LogTarget) -> io::Result<(flume::Sender<LogMessage>, JoinHandle<()>)> {
    let mut sink = LogSink::open(target)?;
    let (tx, rx) = flume::bounded(QUEUE);
    let thread = std::thread::Builder::new().name("ringway-log".into()).spawn(move || {
        for message in rx.iter() {
            let result = match message {
                LogMessage::Lines(lines) => sink.write(&lines),
                LogMessage::Reopen => sink.reopen(),
                LogMessage::Retarget(target) => LogSink::open(target).map(|s| sink = s),
                LogMessage::Stop => break,
            };
            if let Err(e) = result {
                eprintln!("ringway: access log: {e}");
            }
        }
    })?;
    Ok((tx, thread))
}
