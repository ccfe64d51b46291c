//! The session: `login` and the resume of the user's remembered shares that completes it,
//! `logout`, and the shares this session serves (paused at logout, dropped by `stop_share` or
//! `leave_group`).

use super::{App, InProgress};
use crate::auth::login as proofs;
use crate::auth::scram::{self, ClientKeys};
use crate::auth::ticket;
use crate::client::console;
use crate::client::report;
use crate::client::shares::{self, FileCheck, Share, ShareStore};
use crate::client::shell::Command;
use crate::client::tracker_link::{LoginReply, Session};
use crate::pieces::{self, to_hex, Hash};
use crate::protocol::tracker::{ErrorCode, Reply, Verb, NONCE_LEN};
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// The logged-in user.
pub(super) struct User {
    pub(super) name: String,
    pub(super) store: ShareStore,
    /// Shares being served for this session, to pause at logout.
    pub(super) active: BTreeSet<(String, String)>,
}

/// The request in flight while remembered shares are resumed after a login.
pub(super) enum ResumeStep {
    Upload {
        tag: u64,
        share: Share,
        hashes: Arc<Vec<Hash>>,
    },
    Stop {
        tag: u64,
    },
}

impl ResumeStep {
    pub(super) fn tag(&self) -> u64 {
        match self {
            ResumeStep::Upload { tag, .. } | ResumeStep::Stop { tag } => *tag,
        }
    }
}

/// Where a `login` command stands: it is two requests, with the key derivation between.
pub(super) enum LoginStep {
    /// `login_begin` sent; the password is held until its answer names salt and count, then
    /// dropped.
    Begin { cnonce: String, password: String },
    /// `login` sent with the proof over `auth_message`.
    Proof {
        keys: Rc<ClientKeys>,
        auth_message: Vec<u8>,
        salt: [u8; scram::SALT_LEN],
        iterations: u32,
    },
}

impl App {
    pub(super) fn start_login(
        &mut self,
        cmd: Command,
        user: String,
        password: String,
        now: Instant,
    ) {
        if let Some(u) = &self.user {
            return self.fail(&format!(
                "you are already logged in as {}; log out first",
                u.name
            ));
        }
        let cnonce = match proofs::random_hex(NONCE_LEN) {
            Ok(n) => n,
            Err(e) => return self.fail(&e),
        };
        let verb = Verb::LoginBegin {
            user: user.clone(),
            cnonce: cnonce.clone(),
        };
        let tag = self.send(&verb, vec![], now);
        let step = LoginStep::Begin { cnonce, password };
        self.set_command(
            InProgress::Login {
                cmd,
                tag,
                user,
                step,
            },
            now,
        );
    }

    pub(super) fn on_login_reply(
        &mut self,
        cmd: Command,
        user: String,
        step: LoginStep,
        reply: Reply,
        now: Instant,
    ) {
        let words = match reply {
            Reply::Ok(words) => words,
            Reply::List { .. } => {
                return self.fail("the tracker sent an unexpected reply to login")
            }
            Reply::Err { code, message } => {
                return self.fail(&report::tracker_error(&cmd, None, code, &message))
            }
        };
        match step {
            LoginStep::Begin { cnonce, password } => {
                self.send_proof(cmd, user, &cnonce, password, &words, now)
            }
            LoginStep::Proof {
                keys,
                auth_message,
                salt,
                iterations,
            } => match LoginReply::parse(&words, &keys, &auth_message) {
                Ok(r) => {
                    let session = Session {
                        user: user.clone(),
                        keys,
                        salt,
                        iterations,
                        token: r.token,
                        secret: r.secret,
                    };
                    self.start_session(user, session, now)
                }
                Err(e) => self.fail(&e),
            },
        }
    }

    /// The answer to `login_begin` (`<salt> <iterations> <snonce>`): derive the keys (the slow
    /// step, on this loop: 0.07 to 0.17 s at 600,000 iterations in a release build here), drop the
    /// password, send the proof.
    fn send_proof(
        &mut self,
        cmd: Command,
        user: String,
        cnonce: &str,
        password: String,
        words: &[String],
        now: Instant,
    ) {
        let [salt, count, snonce] = words else {
            return self.fail("the tracker sent an unexpected reply to login");
        };
        let Some(salt) = scram::lower_hex::<{ scram::SALT_LEN }>(salt) else {
            return self.fail("the tracker sent a malformed salt");
        };
        let Some(iterations) = scram::parse_count(count) else {
            return self.fail(&format!(
                "the tracker asks for {count} key-derivation iterations; this client runs {} to {}",
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            ));
        };
        let started = Instant::now();
        let keys = Rc::new(ClientKeys::derive(&password, &salt, iterations));
        drop(password);
        log::debug!(
            "derived the login keys ({iterations} iterations) in {:?}",
            started.elapsed()
        );
        let cb = self.link.channel_binding();
        let auth_message = proofs::auth_message(&user, cnonce, snonce, &salt, iterations, cb);
        let verb = Verb::Login {
            user: user.clone(),
            proof: to_hex(&keys.proof(&auth_message)),
            addr: self.advertise.to_string(),
        };
        // The derivation took a while: this command's clock starts now.
        let now = now.max(Instant::now());
        let tag = self.send(&verb, vec![], now);
        let step = LoginStep::Proof {
            keys,
            auth_message,
            salt,
            iterations,
        };
        self.set_command(
            InProgress::Login {
                cmd,
                tag,
                user,
                step,
            },
            now,
        );
    }

    /// The tracker proved itself and the session exists: resume the user's shares.
    fn start_session(&mut self, user: String, session: Session, now: Instant) {
        self.link.set_session(Some(session));
        self.sync_tickets();
        // Pieces of another user's downloads, verified while logged out, are not this
        // user's to announce.
        let others: BTreeSet<(String, String)> = self
            .peers
            .records()
            .filter(|d| d.owner != user)
            .map(|d| (d.group().to_string(), d.file().to_string()))
            .collect();
        self.haves
            .discard(|g, f| others.contains(&(g.to_string(), f.to_string())));
        let store = ShareStore::new(&self.config.state_dir, &user);
        let remembered = match store.load() {
            Ok(s) => s,
            Err(e) => {
                console::err(&format!(
                    "warning: your remembered shares cannot be resumed: {e}"
                ));
                Vec::new()
            }
        };
        self.input.logged_in(&self.config.state_dir.join(&user));
        self.user = Some(User {
            name: user,
            store,
            active: BTreeSet::new(),
        });
        self.resume_next(remembered.into(), 0, now);
    }

    /// Resumes the next remembered share, or finishes the login when none is left.
    fn resume_next(&mut self, mut queue: VecDeque<Share>, resumed: usize, now: Instant) {
        let Some(user) = self.user.as_ref() else {
            return;
        };
        let store = user.store.clone();
        if let Some(share) = queue.pop_front() {
            let what = format!("{} in group {}", share.file, share.group);
            let problem = match shares::check_file(&share) {
                FileCheck::Unchanged => match store.load_hashes(&share) {
                    Ok(hashes) => {
                        let verb = Verb::UploadFile {
                            group: share.group.clone(),
                            file: share.file.clone(),
                            size: share.size,
                            npieces: hashes.len() as u64,
                        };
                        let extra: Vec<String> = pieces::hash_lines(&hashes).collect();
                        let tag = self.send(&verb, extra, now);
                        let step = ResumeStep::Upload {
                            tag,
                            share,
                            hashes: Arc::new(hashes),
                        };
                        self.command = Some(InProgress::Resuming {
                            queue,
                            step: Some(step),
                            resumed,
                        });
                        return;
                    }
                    Err(e) => e,
                },
                FileCheck::Changed => {
                    format!("{} changed since it was shared", share.path.display())
                }
                FileCheck::Missing(why) => why,
            };
            console::err(&format!("warning: no longer sharing {what}: {problem}"));
            let _ = store.forget(&share.group, &share.file);
            let verb = Verb::StopShare {
                group: share.group.clone(),
                file: share.file.clone(),
            };
            let tag = self.send(&verb, vec![], now);
            self.command = Some(InProgress::Resuming {
                queue,
                step: Some(ResumeStep::Stop { tag }),
                resumed,
            });
            return;
        }
        let name = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let result = match resumed {
            0 => format!("logged in as {name}"),
            1 => format!("logged in as {name} (resumed 1 share)"),
            n => format!("logged in as {name} (resumed {n} shares)"),
        };
        // Pieces reported while logged out go out now.
        self.flush_haves(now, true);
        self.done(&result);
    }

    pub(super) fn on_resume_reply(
        &mut self,
        queue: VecDeque<Share>,
        step: Option<ResumeStep>,
        mut resumed: usize,
        tag: u64,
        reply: Reply,
        now: Instant,
    ) {
        match step {
            Some(ResumeStep::Upload {
                tag: t,
                share,
                hashes,
            }) if t == tag => match reply {
                Reply::Ok(_) => {
                    self.peers.share(
                        &share.group,
                        &share.file,
                        share.path.clone(),
                        share.size,
                        hashes,
                    );
                    if let Some(u) = self.user.as_mut() {
                        u.active.insert((share.group.clone(), share.file.clone()));
                    }
                    resumed += 1;
                }
                Reply::Err { code, message } => {
                    let cmd = Command::UploadFile {
                        path: share.path.clone(),
                        group: share.group.clone(),
                    };
                    let why = report::tracker_error(&cmd, Some(&share.file), code, &message);
                    console::err(&format!(
                        "warning: could not resume sharing {} in group {}: {why}",
                        share.file, share.group
                    ));
                    if matches!(
                        code,
                        ErrorCode::ContentMismatch
                            | ErrorCode::NoSuchGroup
                            | ErrorCode::NotMember
                            | ErrorCode::InvalidName
                    ) {
                        if let Some(u) = &self.user {
                            let _ = u.store.forget(&share.group, &share.file);
                        }
                    }
                }
                Reply::List { .. } => {}
            },
            Some(ResumeStep::Stop { tag: t }) if t == tag => {}
            other => {
                self.command = Some(InProgress::Resuming {
                    queue,
                    step: other,
                    resumed,
                });
                return;
            }
        }
        self.resume_next(queue, resumed, now);
    }

    /// `create_user`: the verifier is made here (fresh salt, the tracker's count), so the
    /// password never leaves this process. Before the first `hello` the count is not known:
    /// the command waits for the link.
    pub(super) fn start_create_user(&mut self, cmd: Command, now: Instant) {
        let Some(iterations) = self.link.kdf_iterations() else {
            return self.set_command(InProgress::AwaitingTracker { cmd }, now);
        };
        let Command::CreateUser { user, password } = &cmd else {
            return;
        };
        let salt = match proofs::random_array::<{ scram::SALT_LEN }>() {
            Ok(s) => s,
            Err(e) => return self.fail(&e),
        };
        let keys = ClientKeys::derive(password, &salt, iterations);
        let verb = Verb::CreateUser {
            user: user.clone(),
            verifier: keys.verifier(salt, iterations).encode(),
        };
        let now = now.max(Instant::now());
        self.simple(&verb, cmd, now);
    }

    pub(super) fn start_logout(&mut self, cmd: Command, now: Instant) {
        let tag = self.send(&Verb::Logout, vec![], now);
        self.set_command(InProgress::Logout { cmd, tag }, now);
    }

    pub(super) fn on_logout_reply(&mut self, cmd: Command, reply: Reply) {
        match reply {
            Reply::Ok(_) => self.after_logout("logged out"),
            Reply::Err {
                code: ErrorCode::NotLoggedIn,
                ..
            } => self.after_logout("logged out"),
            Reply::Err { code, message } => {
                self.fail(&report::tracker_error(&cmd, None, code, &message))
            }
            Reply::List { .. } => self.fail("the tracker sent an unexpected reply"),
        }
    }

    fn after_logout(&mut self, result: &str) {
        self.end_session();
        self.done(result);
    }

    /// The tracker confirmed the logout (asked for, or at exit): the shares pause until the
    /// next login and the link forgets the credentials.
    pub(super) fn end_session(&mut self) {
        self.input.logged_out();
        self.pause_shares();
        self.user = None;
        self.link.set_session(None);
        self.sync_tickets();
    }

    /// Gives the seeder the ticket key of the current session (none without one) and the
    /// tracker's clock: after a login, a logout, and each (re)connection to a tracker, where a
    /// login after a failover may have made a new secret.
    pub(super) fn sync_tickets(&mut self) {
        let key = self
            .link
            .session()
            .map(|s| ticket::ticket_key_of(&s.secret));
        self.peers.set_tickets(key, self.link.tracker_clock());
    }

    /// Stops serving every share of the session (they resume at the next login).
    pub(super) fn pause_shares(&mut self) {
        if let Some(u) = self.user.as_mut() {
            for (g, f) in std::mem::take(&mut u.active) {
                self.peers.unshare(&g, &f);
            }
        }
    }

    /// Whether this session serves `(group, file)`.
    pub(super) fn serves(&self, group: &str, file: &str) -> bool {
        self.user
            .as_ref()
            .is_some_and(|u| u.active.contains(&(group.to_string(), file.to_string())))
    }

    pub(super) fn drop_share(&mut self, group: &str, file: &str) {
        self.peers.unshare(group, file);
        if let Some(u) = self.user.as_mut() {
            u.active.remove(&(group.to_string(), file.to_string()));
            if let Err(e) = u.store.forget(group, file) {
                console::err(&format!("warning: {e}"));
            }
        }
    }

    pub(super) fn drop_group_shares(&mut self, group: &str) {
        let mine: Vec<String> = match &self.user {
            Some(u) => u
                .active
                .iter()
                .filter(|(g, _)| g == group)
                .map(|(_, f)| f.clone())
                .collect(),
            None => return,
        };
        for f in mine {
            self.drop_share(group, &f);
        }
        // Remembered but paused shares of the group end too.
        if let Some(u) = &self.user {
            if let Ok(all) = u.store.load() {
                for s in all.iter().filter(|s| s.group == group) {
                    let _ = u.store.forget(&s.group, &s.file);
                }
            }
        }
    }
}
