//! Where access log bytes end up: stdout, a file, or nowhere. Used only by the
//! log writer thread; every call may block on the disk.
//!
//! Files are opened in append mode (created if missing), so several writes
//! never interleave mid-line and an external rotation is safe:
//! logrotate renames the file, then signals the proxy (SIGUSR1), and the
//! writer calls [`LogSink::reopen`] to continue in a fresh file at the path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The `access_log.target` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

impl FromStr for LogTarget {
    type Err = &'static str;

    /// `"off"`, `"stdout"`, or any other non-empty string as a file path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("expected \"off\", \"stdout\" or a file path"),
            "off" => Ok(LogTarget::Off),
            "stdout" => Ok(LogTarget::Stdout),
            path => Ok(LogTarget::File(PathBuf::from(path))),
        }
    }
}

/// The writer thread's end of the access log.
#[derive(Debug)]
pub struct LogSink {
    target: LogTarget,
    /// Open while the target is a file.
    file: Option<File>,
}

/// Open (creating) a log file to append to; also how a config's target is
/// checked before it is taken.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

impl LogSink {
    /// Open `target`; a file that cannot be opened is an error here, at
    /// startup or reload, rather than lost lines later.
    pub fn open(target: LogTarget) -> io::Result<LogSink> {
        let file = match &target {
            LogTarget::File(path) => Some(open_append(path)?),
            LogTarget::Off | LogTarget::Stdout => None,
        };
        Ok(LogSink { target, file })
    }

    pub fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Write whole buffered lines.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match (&self.target, &mut self.file) {
            (LogTarget::Off, _) => Ok(()),
            (LogTarget::Stdout, _) => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            (LogTarget::File(_), Some(file)) => file.write_all(bytes),
            (LogTarget::File(path), None) => Err(io::Error::other(format!("{} is not open", path.display()))),
        }
    }

    /// Reopen the file at the configured path (after rotation). On failure
    /// the old handle stays in use, so lines keep going to the rotated file
    /// instead of being lost. A no-op for stdout and off.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let LogTarget::File(path) = &self.target {
            self.file = Some(open_append(path)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!("ringway-{tag}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).expect("read log")
    }

    #[test]
    fn targets_parse() {
        assert_eq!("off".parse(), Ok(LogTarget::Off));
        assert_eq!("stdout".parse(), Ok(LogTarget::Stdout));
        assert_eq!(
            "/var/log/ringway.log".parse(),
            Ok(LogTarget::File("/var/log/ringway.log".into()))
        );
        assert!("".parse::<LogTarget>().is_err());
    }

    #[test]
    fn file_appends_and_reopens_after_rotation() {
        let dir = TempDir::new("sink");
        let path = dir.path("access.log");
        fs::write(&path, "old\n").expect("seed file");
        let mut sink = LogSink::open(LogTarget::File(path.clone())).expect("open");
        sink.write(b"one\n").expect("write");
        assert_eq!(read(&path), "old\none\n", "append, not truncate");

        let rotated = dir.path("access.log.1");
        fs::rename(&path, &rotated).expect("rotate");
        sink.write(b"two\n").expect("write to the renamed file");
        sink.reopen().expect("reopen");
        sink.write(b"three\n").expect("write");
        assert_eq!(read(&rotated), "old\none\ntwo\n");
        assert_eq!(read(&path), "three\n");
    }

    #[test]
    fn failed_reopen_keeps_the_old_file() {
        let dir = TempDir::new("sink-fail");
        let sub = dir.path("logs");
        fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("access.log");
        let mut sink = LogSink::open(LogTarget::File(path.clone())).expect("open");
        let moved = dir.path("moved");
        fs::rename(&sub, &moved).expect("move the directory away");
        assert!(sink.reopen().is_err(), "the directory is gone");
        sink.write(b"still logged\n").expect("old handle works");
        assert_eq!(read(&moved.join("access.log")), "still logged\n");
    }

    #[test]
    fn open_fails_early_and_off_discards() {
        let dir = TempDir::new("sink-missing");
        let missing = dir.path("no/such/dir/access.log");
        assert!(LogSink::open(LogTarget::File(missing)).is_err());
        let mut off = LogSink::open(LogTarget::Off).expect("off");
        off.write(b"ignored\n").expect("off accepts writes");
        off.reopen().expect("nothing to reopen");
    }
}
