//! Commands whose result is the reply to one request (`create_user`, the group commands,
//! `list_*`, `stop_share`): their request line, how each reply is shown, and what
//! `leave_group` and `stop_share` change here once the tracker agrees.

use super::App;
use crate::client::console;
use crate::client::report;
use crate::client::shell::Command;
use crate::protocol::tracker::{ErrorCode, FileLine, GroupLine, Reply, Verb, WriteReply};
use std::time::Instant;

/// The request of a command answered by one reply; `None` for the other commands.
pub(super) fn request(cmd: &Command) -> Option<Verb> {
    use Command::*;
    let request = match cmd.clone() {
        CreateGroup { group } => Verb::CreateGroup { group },
        JoinGroup { group } => Verb::JoinGroup { group },
        LeaveGroup { group } => Verb::LeaveGroup { group },
        ListRequests { group } => Verb::ListRequests { group },
        AcceptRequest { group, user } => Verb::AcceptRequest { group, user },
        ListGroups => Verb::ListGroups,
        ListFiles { group } => Verb::ListFiles { group },
        StopShare { group, file } => Verb::StopShare { group, file },
        CreateUser { .. } | Login { .. } | Logout | UploadFile { .. } | DownloadFile { .. } => {
            return None
        }
        ShowDownloads | Help | Exit => return None,
    };
    Some(request)
}

impl App {
    pub(super) fn on_simple_reply(&mut self, cmd: Command, reply: Reply, now: Instant) {
        use Command::*;
        match &reply {
            Reply::List { lines, .. } => self.input.learn(&cmd, Some(lines)),
            Reply::Ok(_) => self.input.learn(&cmd, None),
            Reply::Err { .. } => {}
        }
        let (code, message) = match reply {
            Reply::Err { code, message } => (code, message),
            Reply::Ok(words) => {
                let result = match &cmd {
                    CreateUser { user, .. } => format!("created user {user}"),
                    CreateGroup { group } => format!("created group {group}"),
                    JoinGroup { group } => format!("asked to join group {group}"),
                    LeaveGroup { group } => {
                        self.drop_group_shares(group);
                        let stopped = self.cancel_group_downloads(group, now);
                        if stopped.is_empty() {
                            format!("left group {group}")
                        } else {
                            format!(
                                "left group {group} (stopped downloading {}; the .part is kept)",
                                stopped.join(", ")
                            )
                        }
                    }
                    AcceptRequest { group, user } => {
                        format!("{user} is now a member of group {group}")
                    }
                    StopShare { group, file } => {
                        self.drop_share(group, file);
                        self.unshare_downloads(group, file);
                        if words.first().map(String::as_str)
                            == Some(WriteReply::LastOnlineCopy.words())
                        {
                            console::err(&format!(
                                "warning: yours was the last complete copy of {file} online; \
                                 nobody can finish downloading it until a seeder comes online"
                            ));
                        }
                        format!("stopped sharing {file} in group {group}")
                    }
                    _ => String::new(),
                };
                return self.done(&result);
            }
            Reply::List { lines, .. } => {
                for line in lines {
                    let out = match &cmd {
                        ListGroups => GroupLine::parse(&line).map(|l| {
                            let (g, n, owner) = (l.group, l.members, l.owner);
                            format!("{g}  {n} member{}, owner {owner}", plural(n))
                        }),
                        ListFiles { .. } => FileLine::parse(&line).map(|l| {
                            let size = report::human_bytes(l.size as f64);
                            let (n, c) = (l.seeders, l.copies_tenths);
                            let copies = format!(
                                "{}.{} cop{}",
                                c / 10,
                                c % 10,
                                if c == 10 { "y" } else { "ies" }
                            );
                            format!(
                                "{}  {size}  {n} seeder{}, {copies} online",
                                l.file,
                                plural(n)
                            )
                        }),
                        _ => None,
                    };
                    // A line this client cannot read is shown as the tracker sent it.
                    console::out(&out.unwrap_or(line));
                }
                return self.done("");
            }
        };
        // A stop_share of a share the tracker no longer has still stops it here.
        if let (StopShare { group, file }, ErrorCode::NotSeeder) = (&cmd, code) {
            if self.serves(group, file) {
                self.drop_share(group, file);
            }
            // A download that has not reported a piece yet is not a sharer at the tracker,
            // but would become one: stopping that is what the user asked for.
            if self.unshare_downloads(group, file) {
                self.drop_share(group, file);
                return self.done(&format!("stopped sharing {file} in group {group}"));
            }
        }
        self.fail(&report::tracker_error(&cmd, None, code, &message));
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn only_commands_answered_by_one_reply_have_a_simple_request() {
        let leave = Command::LeaveGroup { group: "g".into() };
        assert_eq!(
            request(&leave),
            Some(Verb::LeaveGroup { group: "g".into() })
        );
        assert_eq!(request(&Command::ListGroups), Some(Verb::ListGroups));
        let others = [
            Command::Logout,
            Command::Login {
                user: "u".into(),
                password: "p".into(),
            },
            Command::UploadFile {
                path: PathBuf::from("x"),
                group: "g".into(),
            },
            Command::ShowDownloads,
            Command::Exit,
        ];
        for cmd in others {
            assert_eq!(request(&cmd), None, "{cmd:?}");
        }
    }
}
