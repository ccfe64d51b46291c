//! The terminal's modes: raw (bytes as typed, no echo, no signals from keys) while the
//! client edits lines, and put back as they were on every way out — `Drop`, the loop's end
//! after SIGINT/SIGTERM, and a panic (release builds abort, so the panic hook does it).

use std::io;
use std::os::fd::RawFd;

/// The terminal's modes before the client changed them; restores them on drop.
pub struct RawMode {
    fd: RawFd,
    saved: Option<libc::termios>,
}

/// `saved` with input made raw. Output processing stays on, so `\n` still starts a new line
/// at column 0 and every other writer (log lines, notes) keeps working unchanged.
pub fn raw_of(saved: &libc::termios) -> libc::termios {
    let mut t = *saved;
    t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    // Enter arrives as \r, Ctrl-S/Ctrl-Q reach the editor, bytes keep their 8th bit.
    t.c_iflag &= !(libc::IXON | libc::ICRNL | libc::INLCR | libc::ISTRIP);
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    t
}

impl RawMode {
    /// Makes `fd` raw. The panic hook is extended to restore it.
    pub fn enter(fd: RawFd) -> io::Result<RawMode> {
        // SAFETY: tcgetattr fills the zeroed struct for a valid descriptor, or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = raw_of(&saved);
        // TCSANOW: keys typed before this point are kept, not flushed.
        // SAFETY: sets the modes of a valid descriptor from an initialised struct.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // SAFETY: restores the modes read above.
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
            previous(info);
        }));
        Ok(RawMode {
            fd,
            saved: Some(saved),
        })
    }

    /// Puts the terminal back (once).
    pub fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            // SAFETY: restores the modes read in `enter`.
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &saved) };
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keeps_output_processing_and_drops_line_discipline() {
        // SAFETY: an all-zero termios is a valid value to compute on.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_lflag = libc::ICANON | libc::ECHO | libc::ISIG | libc::ECHOE;
        t.c_iflag = libc::ICRNL | libc::IXON;
        t.c_oflag = libc::OPOST | libc::ONLCR;
        let r = raw_of(&t);
        assert_eq!(r.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert_eq!(r.c_iflag & (libc::ICRNL | libc::IXON), 0);
        assert_eq!(r.c_oflag, libc::OPOST | libc::ONLCR);
        assert_eq!(r.c_cc[libc::VMIN], 1);
    }
}
