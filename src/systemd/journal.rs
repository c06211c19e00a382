//! Whether stderr goes to the journal.

use std::os::fd::AsRawFd;

/// True when `$JOURNAL_STREAM` names the device and inode of our stderr,
/// which is how systemd says "your stderr is a journal stream". A child that
/// inherited the variable but has its stderr redirected gets false.
pub(crate) fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}
