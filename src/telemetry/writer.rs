//! The access log writer thread: workers hand it batches of finished lines
//! over a bounded channel (never blocking; a full channel drops the batch and
//! counts it), and it does the blocking writes, reopens (SIGUSR1, logrotate)
//! and target changes (reloads). Those come over a channel of their own,
//! which never blocks either: a sink that stalls (a hung disk, a FIFO no
//! one reads) must not hold up a signal, a reload or the shutdown.

use super::{LogSink, LogTarget};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

/// The writer's two inputs.
pub struct LogWriter {
    /// Batches of lines: bounded, for `try_send`.
    pub lines: flume::Sender<LogMessage>,
    /// Reopen, retarget, stop: unbounded, so a send never waits.
    pub control: flume::Sender<LogMessage>,
    /// Lines lost to failed writes, counted with those dropped.
    pub lost: Arc<AtomicU64>,
}

/// Start the writer for `target`; it ends on `Stop`, or when both of its
/// channels are dropped.
pub fn spawn_log_writer(target: LogTarget) -> io::Result<(LogWriter, JoinHandle<()>)> {
    let mut sink = LogSink::open(target)?;
    let (lines_tx, lines_rx) = flume::bounded(QUEUE);
    let (control_tx, control_rx) = flume::unbounded();
    let lost = Arc::new(AtomicU64::new(0));
    let counted = lost.clone();
    let write = move |sink: &mut LogSink, lines: &[u8]| {
        if let Err(e) = sink.write(lines) {
            let count = lines.iter().filter(|&&b| b == b'\n').count();
            counted.fetch_add(count as u64, Ordering::Relaxed);
            crate::stderr_line!("ringway: access log: {count} lines lost: {e}");
        }
    };
    let thread = std::thread::Builder::new()
        .name("ringway-log".into())
        .spawn(move || loop {
            let message = flume::Selector::new()
                .recv(&control_rx, |m| m)
                .recv(&lines_rx, |m| m)
                .wait();
            let result = match message {
                Ok(LogMessage::Lines(lines)) => {
                    write(&mut sink, &lines);
                    Ok(())
                }
                Ok(LogMessage::Reopen) => sink.reopen(),
                Ok(LogMessage::Retarget(target)) => LogSink::open(target).map(|s| sink = s),
                Ok(LogMessage::Stop) | Err(_) => {
                    // What was handed over before the stop still goes out.
                    for message in lines_rx.try_iter() {
                        if let LogMessage::Lines(lines) = message {
                            write(&mut sink, &lines);
                        }
                    }
                    break;
                }
            };
            if let Err(e) = result {
                crate::stderr_line!("ringway: access log: {e}");
            }
        })?;
    let writer = LogWriter {
        lines: lines_tx,
        control: control_tx,
        lost,
    };
    Ok((writer, thread))
}
