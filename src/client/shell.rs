//! The command language of the client: one line in, one `Command` out. Pure: no I/O, no
//! state. Names are checked here (with the same rules as the tracker) so that a mistyped name
//! is refused before anything crosses the wire.

use crate::names::{self, NameKind};
use crate::protocol::tracker::MAX_PASSWORD;
use std::path::PathBuf;

/// One command of the contract, arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateUser {
        user: String,
        password: String,
    },
    Login {
        user: String,
        password: String,
    },
    CreateGroup {
        group: String,
    },
    JoinGroup {
        group: String,
    },
    LeaveGroup {
        group: String,
    },
    ListRequests {
        group: String,
    },
    AcceptRequest {
        group: String,
        user: String,
    },
    ListGroups,
    ListFiles {
        group: String,
    },
    UploadFile {
        path: PathBuf,
        group: String,
    },
    DownloadFile {
        group: String,
        file: String,
        dest: PathBuf,
    },
    ShowDownloads,
    StopShare {
        group: String,
        file: String,
    },
    Logout,
    Help,
    Exit,
}

/// Every command with its arguments and what it does: the source of `help` and of the usage
/// shown for a wrong argument count.
pub const USAGE: &[(&str, &str, &str)] = &[
    ("create_user", "<user_id> <password>", "register a user"),
    (
        "login",
        "<user_id> <password>",
        "start a session (resumes your earlier shares)",
    ),
    ("create_group", "<group_id>", "create a group that you own"),
    ("join_group", "<group_id>", "ask to join a group"),
    (
        "leave_group",
        "<group_id>",
        "leave a group (your shares in it end)",
    ),
    (
        "list_requests",
        "<group_id>",
        "pending join requests of a group you own",
    ),
    (
        "accept_request",
        "<group_id> <user_id>",
        "admit a user who asked to join",
    ),
    ("list_groups", "", "every group"),
    ("list_files", "<group_id>", "files shared in a group"),
    (
        "upload_file",
        "<file_path> <group_id>",
        "share a file in a group",
    ),
    (
        "download_file",
        "<group_id> <file_name> <destination_path>",
        "download a file in the background",
    ),
    ("show_downloads", "", "progress of every download"),
    (
        "stop_share",
        "<group_id> <file_name>",
        "stop sharing a file",
    ),
    (
        "logout",
        "",
        "end the session (shares pause until the next login)",
    ),
    ("help", "", "this list"),
    ("exit", "", "log out and exit (also: quit)"),
];

/// `usage: <command> <args>` for one command.
pub fn usage(command: &str) -> String {
    let name = if command == "quit" { "exit" } else { command };
    match USAGE.iter().find(|(n, _, _)| *n == name) {
        Some((n, "", _)) => format!("usage: {n}"),
        Some((n, args, _)) => format!("usage: {n} {args}"),
        None => String::new(),
    }
}

/// The text `help` prints: one command a line, name first.
pub fn help_text() -> String {
    let width = USAGE
        .iter()
        .map(|(n, a, _)| n.len() + a.len() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (n, a, what) in USAGE {
        let left = if a.is_empty() {
            n.to_string()
        } else {
            format!("{n} {a}")
        };
        out.push_str(&format!("{left:width$}  {what}\n"));
    }
    out
}

/// Splits a line into words: runs of whitespace separate words; a double-quoted part may hold
/// spaces (`"my file.txt"`), and inside quotes `\"` and `\\` stand for `"` and `\`.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("a double quote is not closed".to_string()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => return Err("a double quote is not closed".to_string()),
                        },
                        Some(other) => cur.push(other),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn name(kind: NameKind, s: &str) -> Result<String, String> {
    names::check(kind, s)?;
    Ok(s.to_string())
}

fn password(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the password must not be empty".to_string());
    }
    if s.len() > MAX_PASSWORD {
        return Err(format!(
            "the password is {} bytes long; at most {MAX_PASSWORD} are allowed",
            s.len()
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the password must not contain spaces or control characters".to_string());
    }
    Ok(s.to_string())
}

fn path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the path must not be empty".to_string());
    }
    Ok(PathBuf::from(s))
}

/// Parses one input line. `Ok(None)` for a blank line; errors are sentences for the user (an
/// unknown command names it; a wrong argument count shows the right usage).
pub fn parse_line(line: &str) -> Result<Option<Command>, String> {
    let words = split_words(line)?;
    let Some((verb, args)) = words.split_first() else {
        return Ok(None);
    };
    let verb = verb.as_str();
    let want = match USAGE
        .iter()
        .find(|(n, _, _)| *n == verb || (verb == "quit" && *n == "exit"))
    {
        Some((_, a, _)) => a.split_whitespace().count(),
        None => {
            return Err(format!(
                "unknown command '{}' (type 'help' for the list of commands)",
                verb.escape_debug()
            ))
        }
    };
    if args.len() != want {
        return Err(format!(
            "{verb} takes {want} argument{}, {} given; {}",
            if want == 1 { "" } else { "s" },
            args.len(),
            usage(verb)
        ));
    }
    let a = |i: usize| args[i].as_str();
    use NameKind::{File, Group, User};
    let cmd = match verb {
        "create_user" => Command::CreateUser {
            user: name(User, a(0))?,
            password: password(a(1))?,
        },
        "login" => Command::Login {
            user: name(User, a(0))?,
            password: password(a(1))?,
        },
        "create_group" => Command::CreateGroup {
            group: name(Group, a(0))?,
        },
        "join_group" => Command::JoinGroup {
            group: name(Group, a(0))?,
        },
        "leave_group" => Command::LeaveGroup {
            group: name(Group, a(0))?,
        },
        "list_requests" => Command::ListRequests {
            group: name(Group, a(0))?,
        },
        "accept_request" => Command::AcceptRequest {
            group: name(Group, a(0))?,
            user: name(User, a(1))?,
        },
        "list_groups" => Command::ListGroups,
        "list_files" => Command::ListFiles {
            group: name(Group, a(0))?,
        },
        "upload_file" => Command::UploadFile {
            path: path(a(0))?,
            group: name(Group, a(1))?,
        },
        "download_file" => Command::DownloadFile {
            group: name(Group, a(0))?,
            file: name(File, a(1))?,
            dest: path(a(2))?,
        },
        "show_downloads" => Command::ShowDownloads,
        "stop_share" => Command::StopShare {
            group: name(Group, a(0))?,
            file: name(File, a(1))?,
        },
        "logout" => Command::Logout,
        "help" => Command::Help,
        "exit" | "quit" => Command::Exit,
        _ => unreachable!("every verb of USAGE is matched"),
    };
    Ok(Some(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_line(line).unwrap().unwrap()
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   \t ").unwrap(), None);
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            ok("create_user alice pw"),
            Command::CreateUser {
                user: "alice".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            ok("login alice pw"),
            Command::Login {
                user: "alice".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            ok("create_group g"),
            Command::CreateGroup { group: "g".into() }
        );
        assert_eq!(ok("join_group g"), Command::JoinGroup { group: "g".into() });
        assert_eq!(
            ok("leave_group g"),
            Command::LeaveGroup { group: "g".into() }
        );
        assert_eq!(
            ok("list_requests g"),
            Command::ListRequests { group: "g".into() }
        );
        assert_eq!(
            ok("accept_request g bob"),
            Command::AcceptRequest {
                group: "g".into(),
                user: "bob".into()
            }
        );
        assert_eq!(ok("list_groups"), Command::ListGroups);
        assert_eq!(ok("list_files g"), Command::ListFiles { group: "g".into() });
        assert_eq!(
            ok("upload_file /tmp/a.txt g"),
            Command::UploadFile {
                path: "/tmp/a.txt".into(),
                group: "g".into()
            }
        );
        assert_eq!(
            ok("download_file g a.txt /tmp"),
            Command::DownloadFile {
                group: "g".into(),
                file: "a.txt".into(),
                dest: "/tmp".into()
            }
        );
        assert_eq!(ok("show_downloads"), Command::ShowDownloads);
        assert_eq!(
            ok("stop_share g a.txt"),
            Command::StopShare {
                group: "g".into(),
                file: "a.txt".into()
            }
        );
        assert_eq!(ok("logout"), Command::Logout);
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("exit"), Command::Exit);
        assert_eq!(ok("quit"), Command::Exit);
        assert_eq!(ok("  list_groups  \r"), Command::ListGroups);
    }

    #[test]
    fn quoted_paths_may_hold_spaces() {
        assert_eq!(
            ok(r#"upload_file "/tmp/my file.txt" g"#),
            Command::UploadFile {
                path: "/tmp/my file.txt".into(),
                group: "g".into()
            }
        );
        assert_eq!(
            ok(r#"download_file g f "/tmp/a \"b\" \\c""#),
            Command::DownloadFile {
                group: "g".into(),
                file: "f".into(),
                dest: r#"/tmp/a "b" \c"#.into()
            }
        );
        assert_eq!(split_words(r#"a"b c"d e"#).unwrap(), ["ab cd", "e"]);
        assert_eq!(split_words(r#"x """#).unwrap(), ["x", ""]);
        let e = parse_line(r#"upload_file "/tmp/x g"#).unwrap_err();
        assert!(e.contains("quote"), "{e}");
    }

    #[test]
    fn an_unknown_command_is_named() {
        let e = parse_line("frobnicate a b").unwrap_err();
        assert!(e.contains("'frobnicate'"), "{e}");
    }

    #[test]
    fn a_wrong_argument_count_shows_the_usage() {
        let e = parse_line("login alice").unwrap_err();
        assert!(e.contains("usage: login <user_id> <password>"), "{e}");
        let e = parse_line("list_groups x").unwrap_err();
        assert!(e.contains("usage: list_groups"), "{e}");
        let e = parse_line("quit now").unwrap_err();
        assert!(e.contains("usage: exit"), "{e}");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        let e = parse_line("create_group a/b").unwrap_err();
        assert!(e.contains("group id") && e.contains("'/'"), "{e}");
        let e = parse_line("download_file g .. /tmp").unwrap_err();
        assert!(e.contains("file name"), "{e}");
        let e = parse_line(r#"login alice "p w""#).unwrap_err();
        assert!(e.contains("password"), "{e}");
        assert!(parse_line(r#"upload_file "" g"#).is_err());
    }

    #[test]
    fn help_lists_every_command_name_first() {
        let h = help_text();
        for (n, _, _) in USAGE {
            assert!(h.lines().any(|l| l.starts_with(n)), "{n} missing");
        }
    }
}
