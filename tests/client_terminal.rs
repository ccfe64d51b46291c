//! The client at a terminal: the real binary on a pseudo-terminal (openpty), driven by the
//! bytes a keyboard sends, its output read from the terminal's other side. Line editing,
//! history, Tab completion and the status line appear there, and never on a pipe.

mod common;

use common::{test_data, Client, Cluster, CLIENT, WAIT};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PIECE: usize = 512 * 1024;

/// A client whose standard input, output and error are one pseudo-terminal.
struct TermClient {
    child: Child,
    master: std::fs::File,
    /// The terminal side, kept open to read its modes after the client exits.
    slave: OwnedFd,
    /// The terminal's local modes before the client started. Read after the spawn instead,
    /// they could already be the client's raw modes: it sets them as it starts, and on a
    /// loaded machine it can get there before the test reads them.
    cooked: libc::tcflag_t,
    /// Every byte the client wrote to the terminal, collected by a reader thread.
    seen: Arc<Mutex<Vec<u8>>>,
}

impl TermClient {
    fn spawn(c: &Cluster, name: &str, extra: &[&str]) -> TermClient {
        Self::spawn_with(c, name, extra, false)
    }

    /// `output_piped`: standard output and error are pipes (read by `piped_output`), only
    /// standard input is the terminal.
    fn spawn_with(c: &Cluster, name: &str, extra: &[&str], output_piped: bool) -> TermClient {
        let (mut master, mut slave) = (-1, -1);
        // Wide enough that no line of these tests wraps.
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let cooked = lflag_of(&slave);
        let state = c.dir.path().join(format!("state-{name}"));
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty"));
        let mut cmd = Command::new(CLIENT);
        cmd.arg("127.0.0.1:0")
            .arg(&c.info)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .stdin(io(&slave));
        if output_piped {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(io(&slave)).stderr(io(&slave));
        }
        let child = cmd.spawn().expect("spawn client");
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every copy of the terminal side is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        TermClient {
            child,
            master,
            slave,
            cooked,
            seen,
        }
    }

    fn keys(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .expect("type into the terminal");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits (bounded) until the output after byte `from` contains `want`; returns the
    /// offset just past it.
    fn wait_for(&self, from: usize, want: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(want)) {
                return from + i + want.len();
            }
            assert!(
                Instant::now() < deadline,
                "no {want:?} on the terminal after byte {from}; it shows:\n{text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `line` and waits for the line to be left on the screen as entered.
    fn enter(&mut self, keys: &str, shown: &str) -> usize {
        let from = self.len();
        self.keys(keys.as_bytes());
        self.wait_for(from, &format!("> {shown}\r\n"))
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The terminal's local modes now.
    fn lflag(&self) -> libc::tcflag_t {
        lflag_of(&self.slave)
    }
}

/// The local modes of the terminal `fd`.
fn lflag_of(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: tcgetattr fills the struct for a terminal descriptor we own.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) },
        0,
        "tcgetattr: {}",
        std::io::Error::last_os_error()
    );
    t.c_lflag
}

impl Drop for TermClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_escape(what: &str, lines: &[String]) {
    for l in lines {
        assert!(
            !l.contains('\x1b'),
            "an escape code reached a pipe ({what}): {l:?}"
        );
    }
}

#[test]
fn completion_history_and_search_at_a_terminal_and_no_password_kept() {
    let c = Cluster::start(1);
    let mut t = TermClient::spawn(&c, "alice", &[]);
    let cooked = t.cooked;
    assert_ne!(cooked & libc::ICANON, 0, "a fresh terminal is in line mode");
    t.wait_for(0, "> ");
    let at = t.enter("create_user alice s3cretpw\r", "create_user alice s3cretpw");
    t.wait_for(at, "created user alice");
    assert_eq!(
        t.lflag() & (libc::ICANON | libc::ECHO),
        0,
        "raw while editing"
    );
    let at = t.enter("login alice s3cretpw\r", "login alice s3cretpw");
    t.wait_for(at, "logged in as alice");
    let at = t.enter("create_group physics\r", "create_group physics");
    t.wait_for(at, "created group physics");

    // Tab completes a command, then a group name.
    let at = t.enter("list_gr\t\r", "list_groups ");
    t.wait_for(at, "physics  1 member");
    let at = t.enter("join_group ph\t\r", "join_group physics ");
    t.wait_for(at, "error: you are already a member of group 'physics'");
    // The hint shows the arguments still to type (dimmed), and goes once they are typed.
    let from = t.len();
    t.keys(b"accept_request");
    t.wait_for(from, "\x1b[2m <group_id> <user_id>\x1b[0m");
    t.keys(b"\x15");

    // Up recalls the previous line.
    let at = t.enter("\x1b[A\r", "join_group physics");
    t.wait_for(at, "error: you are already a member");
    // Ctrl-R finds an earlier one: the create_group, refused the second time.
    let from = t.len();
    t.keys(b"\x12creat");
    t.wait_for(from, "(reverse-i-search)'creat': create_group physics");
    let at = t.enter("\r", "create_group physics");
    t.wait_for(at, "error: a group named 'physics' already exists");
    // Ctrl-C drops the line being typed; nothing runs.
    let from = t.len();
    t.keys(b"leave_group physics\x03");
    t.wait_for(from, "leave_group physics^C\r\n");
    let at = t.enter("list_groups\r", "list_groups");
    t.wait_for(at, "physics  1 member");

    // Ctrl-D on an empty line ends input: the client logs out and exits, the terminal is
    // back in line mode.
    t.keys(b"\x04");
    assert!(t.wait_exit().success());
    assert_eq!(t.lflag(), cooked, "the terminal's modes are restored");

    let history = c.dir.path().join("state-alice/alice/history");
    let text = std::fs::read_to_string(&history).expect("history file");
    assert!(
        !text.contains("s3cretpw"),
        "a password in the history: {text}"
    );
    assert!(text.contains("create_user alice\nlogin alice\n"), "{text}");
    assert!(text.contains("list_groups\n"), "{text}");
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Shares `data` as `name` in `g` from a pipe client.
fn share(c: &Cluster, who: &mut Client, name: &str, data: &[u8]) {
    let path = c.path().join(name);
    std::fs::write(&path, data).unwrap();
    who.run(
        &format!("upload_file {} g", path.display()),
        &format!("to g ({} bytes", data.len()),
    );
}

/// How many status lines for `file` (`downloading <file> <percent>...`) `text` holds.
fn status_lines(text: &str, file: &str) -> usize {
    let mark = format!("downloading {file} ");
    text.match_indices(&mark)
        .filter(|(i, _)| {
            text[i + mark.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .count()
}

#[test]
fn a_download_shows_a_status_line_at_the_terminal_and_nothing_on_pipes() {
    let c = Cluster::start(1);
    let mut a = c.client_with("alice", &["127.0.0.1:0"], &["--upload-limit", "1M"]);
    a.run("create_user alice pw", "created user");
    a.run("login alice pw", "logged in as");
    a.run("create_group g", "created group g");
    share(&c, &mut a, "big.bin", &test_data(6 * PIECE, 5));

    let mut b = TermClient::spawn(&c, "bob", &[]);
    b.wait_for(0, "> ");
    let at = b.enter("create_user bob pw\r", "create_user bob pw");
    b.wait_for(at, "created user bob");
    let at = b.enter("login bob pw\r", "login bob pw");
    b.wait_for(at, "logged in as bob");
    let at = b.enter("join_group g\r", "join_group g");
    b.wait_for(at, "asked to join group g");
    a.run("accept_request g bob", "now a member");

    // A pipe client downloading at the same time: its [D] line gains ETA and peers.
    let mut p = c.client("carol");
    p.run("create_user carol pw", "created user");
    p.run("login carol pw", "logged in as");
    p.run("join_group g", "asked to join");
    a.run("accept_request g carol", "now a member");

    let dest = c.path().join("down");
    std::fs::create_dir_all(&dest).unwrap();
    let dir = dest.display();
    p.run(
        &format!("download_file g big.bin {dir}/carol.bin"),
        "downloading big.bin",
    );
    // Tab completes the file name from a list_files sent in the background.
    let from = b.len();
    b.keys(b"download_file g \t");
    // The first Tab asked the tracker; a later one completes from its answer. Each Tab is
    // sent once the line was redrawn after the previous one (not on any byte of output), so
    // none lands after the completion. At most one Tab per 100 ms until the deadline.
    let deadline = Instant::now() + WAIT;
    while !b.text()[from..].contains("big.bin") {
        assert!(
            Instant::now() < deadline,
            "no file name completed: {:?}",
            b.text()
        );
        std::thread::sleep(Duration::from_millis(100));
        let before = b.len();
        b.keys(b"\t");
        b.wait_for(before, "> download_file g ");
    }
    let at = b.enter(
        &format!("{dir}/bob.bin\r"),
        &format!("download_file g big.bin {dir}/bob.bin"),
    );
    b.wait_for(at, "downloading big.bin from g");
    // The status line: file, percent, rate, ETA, peers.
    let deadline = Instant::now() + WAIT;
    while status_lines(&b.text()[at..], "big.bin") == 0 {
        assert!(Instant::now() < deadline, "no status line: {:?}", b.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown = b.wait_for(at, " ETA ");
    b.wait_for(shown, " peer");

    let line = p
        .show_downloads()
        .into_iter()
        .find(|l| l.starts_with("[D]"))
        .expect("carol's download is still running");
    assert!(line.contains(" ETA "), "{line}");
    assert!(
        line.ends_with(" peer") || line.ends_with(" peers"),
        "{line}"
    );

    let done = b.wait_for(at, "note: download of big.bin complete");
    // The status line is erased once the download is over, and never drawn again.
    let erased = b.wait_for(done, "\r\x1b[J");
    std::thread::sleep(Duration::from_millis(800));
    let at = b.enter("show_downloads\r", "show_downloads");
    b.wait_for(at, "[C] [g] big.bin");
    let after = b.text()[erased..].to_string();
    assert_eq!(status_lines(&after, "big.bin"), 0, "still shown: {after:?}");
    assert_eq!(
        std::fs::read(format!("{dir}/bob.bin")).unwrap(),
        test_data(6 * PIECE, 5)
    );

    p.expect_err("note: download of big.bin complete");
    p.run("show_downloads", "[C] [g] big.bin");
    a.run("help", "show_downloads");
    for who in [&mut a, &mut p] {
        who.sync();
        no_escape(&who.name.clone(), &who.out_seen.clone());
        no_escape(&who.name.clone(), &who.err_seen.clone());
    }
}

#[test]
fn with_output_to_a_pipe_the_terminal_is_not_edited() {
    let c = Cluster::start(1);
    let mut t = TermClient::spawn_with(&c, "pat", &[], true);
    let cooked = t.cooked;
    let mut out = t.child.stdout.take().expect("stdout");
    let mut err = t.child.stderr.take().expect("stderr");
    t.keys(b"list_gr\t\x1b[A\n");
    t.keys(b"help\n");
    t.keys(b"\x04");
    assert!(t.wait_exit().success());
    assert_eq!(t.lflag(), cooked, "the terminal's modes were never changed");
    let (mut o, mut e) = (String::new(), String::new());
    out.read_to_string(&mut o).unwrap();
    err.read_to_string(&mut e).unwrap();
    // The prompt is the plain `> ` of a terminal's standard input, the keys arrive as the
    // line discipline passed them: an unknown command, then help.
    assert!(o.starts_with("> "), "{o:?}");
    assert!(o.contains("list_groups"), "{o:?}");
    assert!(e.contains("error: unknown command"), "{e:?}");
    no_escape("stdout", &[o]);
    no_escape("stderr", &[e]);
}

#[test]
fn with_serve_a_terminal_is_not_edited() {
    let c = Cluster::start(1);
    let mut t = TermClient::spawn(&c, "sam", &["--serve"]);
    let cooked = t.cooked;
    t.keys(b"help\n");
    t.wait_for(0, "list_groups");
    assert_eq!(
        t.lflag(),
        cooked,
        "--serve leaves the terminal's modes alone"
    );
    assert!(!t.text().contains('\x1b'), "{:?}", t.text());
}
