//! The user's terminal: its size, raw mode while a container's tty is
//! attached (restored on drop), and docker's detach keys.

use std::os::fd::BorrowedFd;

use nix::sys::termios::{self, SetArg, Termios};

/// Rows and columns of the terminal on `fd`, if it is one.
pub fn size(fd: i32) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, exclusively
    // borrowed struct given; a bad fd is an error return, not UB.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Raw mode on a terminal, put back as it was when dropped.
pub struct RawMode {
    fd: i32,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode.
    pub fn enable(fd: i32) -> nix::Result<RawMode> {
        // SAFETY: fd is one of the process's standard descriptors, open for
        // the life of the process.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let saved = termios::tcgetattr(borrowed)?;
        let mut raw = saved.clone();
        // As moby/term's MakeRaw: output processing off too, the
        // container's tty already turned "\n" into "\r\n".
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(borrowed, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: as in enable: a standard descriptor, open for the process's life.
        let borrowed = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(borrowed, SetArg::TCSANOW, &self.saved);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetachKeysError {
    #[error("Invalid detach keys ({0}) provided")]
    Invalid(String),
}

/// Docker's detach keys ("ctrl-p,ctrl-q", "a,ctrl-@") as bytes.
pub fn detach_keys(spec: &str) -> Result<Vec<u8>, DetachKeysError> {
    let bad = || DetachKeysError::Invalid(spec.to_string());
    spec.split(',')
        .map(|key| {
            let key = key.trim();
            if let Some(c) = key.strip_prefix("ctrl-") {
                let b = match c.as_bytes() {
                    [b @ b'a'..=b'z'] => b - b'a' + 1,
                    [b'@'] => 0,
                    [b'['] => 27,
                    [b'\\'] => 28,
                    [b']'] => 29,
                    [b'^'] => 30,
                    [b'_'] => 31,
                    _ => return Err(bad()),
                };
                Ok(b)
            } else if key.len() == 1 {
                Ok(key.as_bytes()[0])
            } else {
                Err(bad())
            }
        })
        .collect()
}

/// The default detach keys, ctrl-p ctrl-q.
pub const DEFAULT_DETACH_KEYS: [u8; 2] = [16, 17];

/// Finds the detach sequence in typed input, across reads.
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    /// What of `input` to pass on, and whether the sequence was typed
    /// (the keys themselves are held back while they may be the sequence,
    /// and passed on when they turn out not to be).
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_reads_them() {
        assert_eq!(detach_keys("ctrl-p,ctrl-q").unwrap(), DEFAULT_DETACH_KEYS);
        assert_eq!(detach_keys("a,ctrl-@").unwrap(), vec![b'a', 0]);
        assert!(detach_keys("ctrl-1").is_err());
        assert!(detach_keys("ab").is_err());
    }

    #[test]
    fn the_sequence_is_found_across_reads_and_kept_back() {
        let mut s = DetachScanner::new(DEFAULT_DETACH_KEYS.to_vec());
        assert_eq!(s.scan(b"ls\x10"), (b"ls".to_vec(), false));
        assert_eq!(s.scan(b"\x11rest"), (Vec::new(), true));
        let mut s = DetachScanner::new(DEFAULT_DETACH_KEYS.to_vec());
        assert_eq!(s.scan(b"\x10x"), (b"\x10x".to_vec(), false));
    }
}
