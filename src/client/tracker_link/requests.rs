//! The link's request queue: tags handed out, requests kept until answered (and re-sent
//! after a failover), at most one write on the wire, each reply matched to its request and
//! delivered to the app as `(tag, Reply)`.

use super::*;

impl TrackerLink {
    /// Queues a request (plus data lines: `upload_file`'s hash lines) and returns its tag.
    pub fn send(
        &mut self,
        registry: &Registry,
        verb: &Verb,
        extra: Vec<String>,
        now: Instant,
    ) -> u64 {
        let (class, line) = (RequestClass::of(verb), verb.encode());
        let tag = self.take_tag();
        self.queue.push_back(QueuedRequest {
            tag,
            class,
            line,
            extra,
            retried_session: false,
        });
        self.pump(registry, now);
        tag
    }

    /// Forgets a request that the app no longer waits for (it gave up on it).
    pub fn abandon(&mut self, tag: u64) {
        self.queue.retain(|r| r.tag != tag);
        // An in-flight request keeps its place so replies still line up; its reply is
        // delivered and ignored by the app.
    }

    pub(super) fn take_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    pub(super) fn on_reply(&mut self, registry: &Registry, tag: u64, reply: Reply, now: Instant) {
        if let Reply::Err {
            code: ErrorCode::SessionTakenOver,
            message,
        } = &reply
        {
            if tag == 0 {
                // The tracker closes the connection next; the link reconnects without a
                // session, and the app hears why.
                self.session = None;
                self.events.push(LinkEvent::TakenOver {
                    message: message.clone(),
                });
                return;
            }
        }
        match self.state.clone() {
            LinkState::Hello { tag: t, .. } if t == tag => match reply {
                Reply::Ok(words) => {
                    log::debug!(
                        "tracker {} is tracker {}",
                        self.tracker_addr(),
                        words.join(" ")
                    );
                    // `ok <tracker_no> <kdf_iterations> <unix time>`; an out-of-range count is
                    // not used, and the last word is the tracker's clock (tickets expire by it).
                    self.kdf_iterations = words.get(1).and_then(|w| scram::parse_count(w));
                    if let Some(t) = words.get(1..).and_then(<[String]>::last) {
                        match t.parse::<u64>() {
                            Ok(t) => self.clock = TrackerClock::from_times(t, ticket::unix_now()),
                            Err(_) => log::info!("tracker {} sent no clock", self.tracker_addr()),
                        }
                    }
                    self.after_hello(registry, now);
                }
                Reply::Err { code, message } => {
                    log::info!("tracker {} refused: {code} {message}", self.tracker_addr());
                    self.fail(registry, now, true);
                }
                Reply::List { .. } => self.fail(registry, now, true),
            },
            LinkState::Retrying { tag: t, .. } if t == tag => {
                let not_done =
                    matches!(&reply, Reply::Err { code, .. } if *code == ErrorCode::NotLoggedIn);
                if !not_done {
                    let line = self
                        .in_flight
                        .iter()
                        .find(|r| r.tag == tag)
                        .map(|r| r.line.clone());
                    if matches!(&reply, Reply::Ok(_))
                        && line.as_deref() == Some(Verb::Logout.name())
                    {
                        self.session = None;
                    }
                    if let Some(pos) = self.in_flight.iter().position(|r| r.tag == tag) {
                        self.in_flight.remove(pos);
                    }
                    self.events.push(LinkEvent::Reply { tag, reply });
                }
                self.attach_or_ready(registry, now);
            }
            LinkState::Attaching { tag: t, step, .. } if t == tag => {
                self.on_attach_reply(registry, step, reply, now)
            }
            LinkState::Ready => self.deliver(registry, tag, reply, now),
            _ => log::debug!(
                "unexpected reply {tag} from tracker {}",
                self.tracker_addr()
            ),
        }
    }

    /// Sends queued requests while the link is ready and no write is held back.
    pub(super) fn pump(&mut self, registry: &Registry, now: Instant) {
        if self.state != LinkState::Ready {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while let Some(front) = self.queue.front() {
            if front.class == RequestClass::Write
                && self
                    .in_flight
                    .iter()
                    .any(|r| r.class == RequestClass::Write)
            {
                break;
            }
            let r = self.queue.pop_front().expect("front exists");
            conn.send_line(&request_line(r.tag, &r.line));
            for x in &r.extra {
                conn.send_line(x);
            }
            if self.in_flight.is_empty() {
                self.waiting_since = Some(now);
            }
            self.last_sent = now;
            self.in_flight.push_back(r);
        }
        self.flush(registry, now);
    }

    pub(super) fn deliver(&mut self, registry: &Registry, tag: u64, reply: Reply, now: Instant) {
        let Some(pos) = self.in_flight.iter().position(|r| r.tag == tag) else {
            log::debug!(
                "tracker {} answered unknown request {tag}",
                self.tracker_addr()
            );
            return;
        };
        if pos != 0 {
            log::warn!(
                "tracker {} answered request {tag} out of order",
                self.tracker_addr()
            );
        }
        // A session the link believed attached is unknown on this connection (a login answered
        // from the deduplication record after a failover): attach again and re-send, once.
        if matches!(&reply, Reply::Err { code, .. } if *code == ErrorCode::NotLoggedIn)
            && self.session.is_some()
            && !self.in_flight[pos].retried_session
        {
            for r in self.in_flight.iter_mut() {
                r.retried_session = true;
            }
            log::debug!(
                "session not attached on tracker {}; attaching again",
                self.tracker_addr()
            );
            // Reconnect to the same tracker: hello, attach, then re-send every request.
            if let Some(mut c) = self.conn.take() {
                let _ = registry.deregister(&mut c.stream);
            }
            self.waiting_since = None;
            self.state = LinkState::Waiting { until: now };
            return;
        }
        self.in_flight.remove(pos);
        self.waiting_since = if self.in_flight.is_empty() {
            None
        } else {
            Some(now)
        };
        if self.keepalive == Some(tag) {
            self.keepalive = None; // the link's own: the tracker answers, nothing to tell
        } else {
            self.events.push(LinkEvent::Reply { tag, reply });
        }
        self.pump(registry, now);
    }
}
