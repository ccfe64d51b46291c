//! Tab completion and the argument hint. Pure: what the tracker last said is passed in as
//! `Known`, and local directories are listed through a function the caller supplies.

use crate::client::shell::{Command, USAGE};
use crate::protocol::tracker::{FileLine, GroupLine};
use std::collections::HashMap;
use std::path::Path;

/// Names the tracker told this client, by the command that told them.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// From the last `list_groups` (and groups created or joined since).
    pub groups: Vec<String>,
    /// From the last `list_files <group>`, by group.
    pub files: HashMap<String, Vec<String>>,
    /// From the last `list_requests <group>`, by group.
    pub requests: HashMap<String, Vec<String>>,
}

impl Known {
    /// Takes in the tracker's answer to `cmd`: a listing (`Some`, the tracker's lines, name
    /// first) or a plain success (`None`). Returns the source refreshed, if one was.
    pub fn learn(&mut self, cmd: &Command, list: Option<&[String]>) -> Option<Source> {
        match (cmd, list) {
            (Command::ListGroups, Some(lines)) => {
                self.groups = lines
                    .iter()
                    .filter_map(|l| GroupLine::parse(l))
                    .map(|g| g.group)
                    .collect();
                return Some(Source::Groups);
            }
            (Command::ListFiles { group }, Some(lines)) => {
                let files = lines
                    .iter()
                    .filter_map(|l| FileLine::parse(l))
                    .map(|f| f.file);
                self.files.insert(group.clone(), files.collect());
                return Some(Source::Files(group.clone()));
            }
            (Command::ListRequests { group }, Some(lines)) => {
                // `list_requests` lines are bare user ids.
                self.requests.insert(group.clone(), lines.to_vec());
            }
            (Command::CreateGroup { group }, None) if !self.groups.contains(group) => {
                self.groups.push(group.clone());
            }
            (Command::AcceptRequest { group, user }, None) => {
                if let Some(users) = self.requests.get_mut(group) {
                    users.retain(|u| u != user);
                }
            }
            _ => {}
        }
        None
    }
}

/// A directory entry: name, and whether it is a directory.
pub type Entry = (String, bool);

/// The word before the cursor and what it may become.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    /// Where the word starts, in characters.
    pub start: usize,
    /// Whole replacement words, sorted.
    pub candidates: Vec<String>,
}

/// What Tab does with a `Completion`.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Replace the word (from `start`) with this text.
    Insert(String),
    /// Nothing to add: show these choices.
    Show(Vec<String>),
    Nothing,
}

impl Completion {
    /// One candidate: it, plus a space unless it is a directory to go into. Several: their
    /// longest common prefix if that adds something, else the list.
    pub fn outcome(&self, word: &str) -> Outcome {
        match self.candidates.as_slice() {
            [] => Outcome::Nothing,
            [one] if one.ends_with('/') => Outcome::Insert(one.clone()),
            [one] => Outcome::Insert(format!("{one} ")),
            many => {
                let common = common_prefix(many);
                if common.chars().count() > word.chars().count() {
                    Outcome::Insert(common)
                } else {
                    Outcome::Show(many.to_vec())
                }
            }
        }
    }
}

fn common_prefix(words: &[String]) -> String {
    let first = &words[0];
    let mut end = first.len();
    for w in &words[1..] {
        end = first
            .char_indices()
            .zip(w.chars())
            .find(|((_, a), b)| a != b)
            .map_or(end.min(w.len()), |((i, _), _)| i.min(end));
    }
    first[..end].to_string()
}

/// The placeholders of `command`'s arguments (`<group_id>`...), if it is a command.
fn arguments(command: &str) -> Option<Vec<&'static str>> {
    USAGE
        .iter()
        .find(|(n, _, _)| *n == command)
        .map(|(_, args, _)| args.split_whitespace().collect())
}

/// Words of `text` and where the last one (possibly empty) starts, in characters. A word
/// opened with `"` runs to the end (a quoted path being typed).
fn words(text: &str) -> (Vec<String>, usize) {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in text.chars().enumerate() {
        if c == '"' {
            quoted = !quoted;
            current.push(c);
        } else if c == ' ' && !quoted {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            start = i + 1;
        } else {
            current.push(c);
        }
    }
    words.push(current);
    (words, start)
}

/// Completes the word before `cursor` (in characters) of `line`.
pub fn complete(
    line: &str,
    cursor: usize,
    known: &Known,
    list_dir: &dyn Fn(&Path) -> Vec<Entry>,
) -> Completion {
    let before: String = line.chars().take(cursor).collect();
    let (words, start) = words(&before);
    let word = words.last().map(String::as_str).unwrap_or("");
    let mut candidates: Vec<String> = if words.len() == 1 {
        USAGE
            .iter()
            .map(|(n, _, _)| *n)
            .chain(["quit"])
            .filter(|n| n.starts_with(word))
            .map(str::to_string)
            .collect()
    } else {
        let args = arguments(&words[0]).unwrap_or_default();
        let arg_of = |name: &str| {
            args.iter()
                .position(|a| *a == name)
                .and_then(|i| words.get(i + 1))
                .filter(|_| words.len() > 2)
                .cloned()
        };
        let names = |list: Option<&Vec<String>>| -> Vec<String> {
            list.map(|l| l.iter().filter(|n| n.starts_with(word)).cloned().collect())
                .unwrap_or_default()
        };
        match args.get(words.len() - 2).copied() {
            Some("<group_id>") => names(Some(&known.groups)),
            Some("<file_name>") => names(arg_of("<group_id>").and_then(|g| known.files.get(&g))),
            Some("<user_id>") if words[0] == "accept_request" => {
                names(arg_of("<group_id>").and_then(|g| known.requests.get(&g)))
            }
            Some("<file_path>" | "<destination_path>") => paths(word, list_dir),
            _ => Vec::new(),
        }
    };
    candidates.sort();
    candidates.dedup();
    Completion { start, candidates }
}

/// Local paths that start with `word` (which may open with `"`); directories end with `/`,
/// names with a space are quoted.
fn paths(word: &str, list_dir: &dyn Fn(&Path) -> Vec<Entry>) -> Vec<String> {
    let bare = word.trim_start_matches('"');
    let (dir, prefix) = match bare.rfind('/') {
        Some(i) => (&bare[..=i], &bare[i + 1..]),
        None => ("", bare),
    };
    let listed = list_dir(Path::new(if dir.is_empty() { "." } else { dir }));
    listed
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with(prefix) && (prefix.starts_with('.') || !name.starts_with('.'))
        })
        .map(|(name, is_dir)| {
            let path = format!("{dir}{name}");
            let quote = word.starts_with('"') || path.contains(' ');
            match (quote, is_dir) {
                (false, true) => format!("{path}/"),
                (false, false) => path,
                (true, true) => format!("\"{path}/"),
                (true, false) => format!("\"{path}\""),
            }
        })
        .collect()
}

/// The arguments still to type after `line` (cursor at its end), as redis-cli shows them:
/// `login al` → ` <password>`. `None` for an unknown command or when nothing is left.
pub fn hint(line: &str) -> Option<String> {
    let (words, _) = words(line);
    let args = arguments(&words[0])?;
    // The last word is the one being typed; empty after a space.
    let trailing = words.len() > 1 && words.last().is_some_and(|w| w.is_empty());
    let next = if trailing {
        words.len() - 2
    } else {
        words.len() - 1
    };
    let rest = args.get(next..).filter(|r| !r.is_empty())?;
    let sep = if trailing { "" } else { " " };
    Some(format!("{sep}{}", rest.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        let mut k = Known {
            groups: vec!["physics".into(), "photos".into(), "music".into()],
            ..Known::default()
        };
        k.files.insert(
            "physics".into(),
            vec!["report.pdf".into(), "data.csv".into()],
        );
        k.requests.insert("physics".into(), vec!["bob".into()]);
        k
    }

    fn no_dir(_: &Path) -> Vec<Entry> {
        Vec::new()
    }

    fn at_end(line: &str) -> Vec<String> {
        complete(line, line.chars().count(), &known(), &no_dir).candidates
    }

    #[test]
    fn commands_complete_first() {
        assert_eq!(at_end("list_f"), ["list_files"]);
        assert_eq!(at_end("lo"), ["login", "logout"]);
        assert_eq!(at_end("q"), ["quit"]);
        let c = complete("lo", 2, &known(), &no_dir);
        assert_eq!(c.outcome("lo"), Outcome::Insert("log".into()));
        let c = complete("list_f", 6, &known(), &no_dir);
        assert_eq!(c.outcome("list_f"), Outcome::Insert("list_files ".into()));
    }

    #[test]
    fn arguments_complete_from_what_the_tracker_said() {
        assert_eq!(at_end("list_files ph"), ["photos", "physics"]);
        assert_eq!(at_end("download_file physics r"), ["report.pdf"]);
        assert_eq!(at_end("stop_share physics "), ["data.csv", "report.pdf"]);
        assert_eq!(at_end("download_file music r"), Vec::<String>::new());
        assert_eq!(at_end("accept_request physics b"), ["bob"]);
        assert_eq!(at_end("upload_file /x mu"), ["music"]);
        assert_eq!(at_end("login a"), Vec::<String>::new());
        assert_eq!(at_end("list_groups x"), Vec::<String>::new());
        let c = complete("join_group phys x", 15, &known(), &no_dir);
        assert_eq!((c.start, c.candidates), (11, vec!["physics".to_string()]));
        let c = complete("list_files p", 12, &known(), &no_dir);
        assert_eq!(
            c.outcome("p"),
            Outcome::Insert("ph".into()),
            "the common prefix first"
        );
        let c = complete("list_files ph", 13, &known(), &no_dir);
        assert_eq!(
            c.outcome("ph"),
            Outcome::Show(vec!["photos".into(), "physics".into()])
        );
    }

    #[test]
    fn local_paths_for_uploads_and_destinations() {
        let dir = |p: &Path| -> Vec<Entry> {
            match p.to_str() {
                Some(".") => vec![
                    ("docs".into(), true),
                    ("data.bin".into(), false),
                    (".hidden".into(), false),
                    ("my file".into(), false),
                ],
                Some("docs/") => vec![("a.txt".into(), false)],
                _ => vec![],
            }
        };
        let c = |line: &str| complete(line, line.chars().count(), &known(), &dir).candidates;
        assert_eq!(c("upload_file d"), ["data.bin", "docs/"]);
        assert_eq!(c("upload_file docs/"), ["docs/a.txt"]);
        assert_eq!(c("upload_file m"), ["\"my file\""]);
        assert_eq!(c("upload_file \"m"), ["\"my file\""]);
        assert_eq!(c("upload_file ."), [".hidden"]);
        assert_eq!(c("download_file physics report.pdf do"), ["docs/"]);
        let docs = complete("upload_file do", 14, &known(), &dir);
        assert_eq!(docs.outcome("do"), Outcome::Insert("docs/".into()));
    }

    #[test]
    fn replies_teach_names() {
        let mut k = Known::default();
        let lines = vec!["physics 2 alice".to_string(), "music 1 bob".to_string()];
        assert_eq!(
            k.learn(&Command::ListGroups, Some(&lines)),
            Some(Source::Groups)
        );
        assert_eq!(k.groups, ["physics", "music"]);
        k.learn(
            &Command::CreateGroup {
                group: "art".into(),
            },
            None,
        );
        assert_eq!(k.groups, ["physics", "music", "art"]);
        let files = vec!["report.pdf 3000000 1 1.0".to_string()];
        let cmd = Command::ListFiles {
            group: "physics".into(),
        };
        assert_eq!(
            k.learn(&cmd, Some(&files)),
            Some(Source::Files("physics".into()))
        );
        assert_eq!(k.files["physics"], ["report.pdf"]);
        let reqs = vec!["bob".to_string(), "carol".to_string()];
        let cmd = Command::ListRequests {
            group: "physics".into(),
        };
        assert_eq!(k.learn(&cmd, Some(&reqs)), None);
        let accept = Command::AcceptRequest {
            group: "physics".into(),
            user: "bob".into(),
        };
        k.learn(&accept, None);
        assert_eq!(k.requests["physics"], ["carol"]);
    }

    #[test]
    fn hints_show_the_arguments_left() {
        assert_eq!(hint("login").as_deref(), Some(" <user_id> <password>"));
        assert_eq!(hint("login ").as_deref(), Some("<user_id> <password>"));
        assert_eq!(hint("login al").as_deref(), Some(" <password>"));
        assert_eq!(hint("login al ").as_deref(), Some("<password>"));
        assert_eq!(hint("login al pw"), None);
        assert_eq!(hint("list_groups"), None);
        assert_eq!(hint("nonsense"), None);
        assert_eq!(
            hint("download_file g").as_deref(),
            Some(" <file_name> <destination_path>")
        );
    }
}

/// Names a Tab at `cursor` would complete from the tracker, for a refresh when they are stale.
#[derive(Debug, PartialEq, Eq, Clone, Hash)]
pub enum Source {
    Groups,
    Files(String),
}

/// What `complete` would read from `Known` for the word before `cursor`, if anything the
/// tracker can refresh.
pub fn source(line: &str, cursor: usize) -> Option<Source> {
    let before: String = line.chars().take(cursor).collect();
    let (words, _) = words(&before);
    let args = arguments(&words[0])?;
    match *args.get(words.len().checked_sub(2)?)? {
        "<group_id>" => Some(Source::Groups),
        "<file_name>" => {
            let g = args.iter().position(|a| *a == "<group_id>")?;
            Some(Source::Files(words.get(g + 1)?.clone()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn the_source_of_a_word_is_its_argument() {
        assert_eq!(source("list_files p", 12), Some(Source::Groups));
        assert_eq!(
            source("download_file g f", 17),
            Some(Source::Files("g".into()))
        );
        assert_eq!(source("list_f", 6), None);
        assert_eq!(source("upload_file x", 13), None);
    }
}
