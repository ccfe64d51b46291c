//! The tracker's client protocol spoken by hand over a blocking socket: tagged request lines
//! out, whole replies in. `LineConn` returns errors (bench, demo); `Conn` panics on anything
//! unexpected (tests, where a panic is the failure report). Both read a reply the same way.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A reply's first line without its tag (`"7 ok pong"` → `"ok pong"`).
fn untagged(first: &str) -> &str {
    first.split_once(' ').map(|x| x.1).unwrap_or("")
}

/// How many data lines follow a reply whose first line (untagged) is `rest`: `n` for
/// `list <n> ...`, none otherwise.
fn data_lines(rest: &str) -> usize {
    rest.strip_prefix("list ")
        .and_then(|n| n.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A blocking line connection for set-up and control requests, with errors as text.
pub struct LineConn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The last tag sent; the next request gets `tag + 1`.
    pub tag: u64,
}

impl LineConn {
    pub fn connect(addr: SocketAddr) -> Result<LineConn, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(
            stream
                .try_clone()
                .map_err(|e| format!("cannot clone a socket: {e}"))?,
        );
        Ok(LineConn {
            stream,
            reader,
            tag: 0,
        })
    }

    pub fn read_line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err("the server closed the connection".to_string()),
            Ok(_) => Ok(l.trim_end().to_string()),
            Err(e) => Err(format!("reading a reply: {e}")),
        }
    }

    /// Reads one tracker reply; returns its first line without the tag (data lines skipped).
    pub fn read_reply(&mut self) -> Result<String, String> {
        let first = self.read_line()?;
        let rest = untagged(&first).to_string();
        for _ in 0..data_lines(&rest) {
            self.read_line()?;
        }
        Ok(rest)
    }

    pub fn send(&mut self, line: &str) -> Result<(), String> {
        self.tag += 1;
        let l = format!("{} {line}\n", self.tag);
        self.stream
            .write_all(l.as_bytes())
            .map_err(|e| format!("sending {line:?}: {e}"))
    }

    pub fn req(&mut self, line: &str) -> Result<String, String> {
        self.send(line)?;
        self.read_reply()
    }

    /// A request that must succeed.
    pub fn ok(&mut self, line: &str) -> Result<String, String> {
        let r = self.req(line)?;
        if r.starts_with("ok") || r.starts_with("list") {
            Ok(r)
        } else {
            Err(format!("{line:?} was refused: {r}"))
        }
    }

    /// The std stream, for handing to the load generator; Err if replies are still buffered.
    pub fn into_stream(self) -> Result<TcpStream, String> {
        if !self.reader.buffer().is_empty() {
            return Err("unexpected extra data from the server after set-up".to_string());
        }
        Ok(self.stream)
    }
}

/// A raw protocol connection for tests: tags requests, reads whole replies, and panics (which
/// fails the test) when a request cannot be sent or a reply is not what the test requires.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    tag: u64,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn {
            stream,
            reader,
            tag: 0,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        let n = self.reader.read_line(&mut l)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Reads one reply: its first line (tag removed) and, for `list`, its data lines.
    pub fn read_reply(&mut self) -> std::io::Result<Vec<String>> {
        let first = self.read_line()?;
        let rest = untagged(&first).to_string();
        let n = data_lines(&rest);
        let mut out = vec![rest];
        for _ in 0..n {
            out.push(self.read_line()?);
        }
        Ok(out)
    }

    pub fn try_req(&mut self, line: &str) -> std::io::Result<Vec<String>> {
        self.tag += 1;
        let l = format!("{} {line}\n", self.tag);
        self.stream.write_all(l.as_bytes())?;
        self.read_reply()
    }

    /// Sends a request and returns the reply: `[first line without tag, data lines...]`.
    pub fn req(&mut self, line: &str) -> Vec<String> {
        self.try_req(line)
            .unwrap_or_else(|e| panic!("request '{line}' failed: {e}"))
    }

    /// Asserts the reply is `ok...` and returns its first line.
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.req(line);
        assert!(r[0].starts_with("ok"), "'{line}' → {r:?}");
        r[0].clone()
    }

    /// Asserts the reply is an error with this code.
    pub fn err(&mut self, line: &str, code: &str) {
        let r = self.req(line);
        assert!(
            r[0].starts_with(&format!("err {code} ")),
            "'{line}' → {r:?}, expected err {code}"
        );
    }

    pub fn login(&mut self, user: &str) {
        self.ok(&format!("login {user} pw-{user} 127.0.0.1:1"));
    }

    pub fn user(&mut self, user: &str) {
        self.ok(&format!("create_user {user} pw-{user}"));
        self.login(user);
    }

    /// `upload_file` with made-up hashes for a file of `size` bytes.
    pub fn upload(&mut self, group: &str, file: &str, size: u64, seed: u8) -> Vec<String> {
        let n = size.div_ceil(512 * 1024);
        self.tag += 1;
        let mut text = format!("{} upload_file {group} {file} {size} {n}\n", self.tag);
        let hashes: String = (0..n)
            .map(|i| format!("{:02x}", (i as u8) ^ seed).repeat(20))
            .collect();
        for chunk in hashes.as_bytes().chunks(40 * 1024) {
            text.push_str(std::str::from_utf8(chunk).expect("hex"));
            text.push('\n');
        }
        self.stream.write_all(text.as_bytes()).expect("send upload");
        self.read_reply().expect("upload reply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_its_first_line_untagged_and_a_list_counts_its_data_lines() {
        assert_eq!(untagged("7 ok pong"), "ok pong");
        assert_eq!(untagged("7"), "");
        assert_eq!(data_lines("list 3 groups"), 3);
        assert_eq!(data_lines("list 0"), 0);
        assert_eq!(data_lines("ok 3"), 0);
        assert_eq!(data_lines("list x"), 0);
    }
}
