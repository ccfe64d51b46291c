use super::*;
use proptest::prelude::*;

fn keys<'a>(id: &'a Identity, psk: Option<&'a [u8; 32]>) -> ChannelKeys<'a> {
    ChannelKeys {
        identity: id,
        psk,
        conversation: Conversation::ClientTracker,
    }
}

/// Moves everything `from` has to send into `to`, cut at the given sizes (cycled), taking
/// `to`'s plaintext into `sink` whenever it stops consuming.
fn deliver(
    from: &mut SecureChannel,
    to: &mut SecureChannel,
    cuts: &[usize],
    sink: &mut Vec<u8>,
) -> Result<(), ChannelError> {
    let wire = from.output().to_vec();
    from.consume_output(wire.len());
    let mut rest = &wire[..];
    // Each round consumes at least one byte or drains the plaintext, so this ends.
    for i in 0..(wire.len() * 4 + 16) {
        if rest.is_empty() {
            break;
        }
        let size = cuts
            .get(i % cuts.len().max(1))
            .copied()
            .unwrap_or(rest.len());
        let size = size.clamp(1, rest.len());
        let n = to.receive(&rest[..size])?;
        rest = &rest[n..];
        sink.extend_from_slice(to.plaintext());
        let taken = to.plaintext().len();
        to.consume_plaintext(taken);
    }
    assert!(rest.is_empty(), "delivery stalled");
    Ok(())
}

/// Runs the handshake to the end with the given fragmentation.
fn pair_with(
    a: &Identity,
    b: &Identity,
    psk_a: Option<&[u8; 32]>,
    psk_b: Option<&[u8; 32]>,
    cuts: &[usize],
) -> Result<(SecureChannel, SecureChannel), ChannelError> {
    let mut i = SecureChannel::new(Role::Initiator, keys(a, psk_a))?;
    let mut r = SecureChannel::new(Role::Responder, keys(b, psk_b))?;
    let mut sink = Vec::new();
    // XX: three messages; a fourth round would be a bug.
    for _ in 0..3 {
        deliver(&mut i, &mut r, cuts, &mut sink)?;
        deliver(&mut r, &mut i, cuts, &mut sink)?;
    }
    assert!(sink.is_empty());
    Ok((i, r))
}

fn pair() -> (SecureChannel, SecureChannel, Identity, Identity) {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let (i, r) = pair_with(&a, &b, None, None, &[usize::MAX]).unwrap();
    (i, r, a, b)
}

#[test]
fn handshake_proves_each_sides_static_key_and_agrees_on_the_hash() {
    let (i, r, a, b) = pair();
    assert!(i.is_established() && r.is_established());
    assert_eq!(i.remote_static(), Some(b.public()));
    assert_eq!(r.remote_static(), Some(a.public()));
    assert!(i.remote_fingerprint().unwrap().ct_eq(&b.fingerprint()));
    assert_eq!(i.handshake_hash().unwrap(), r.handshake_hash().unwrap());
    assert!(i.output().is_empty() && r.output().is_empty());
}

#[test]
fn data_flows_both_ways_and_lines_frame_unchanged_on_the_plaintext() {
    let (mut i, mut r, _, _) = pair();
    i.send(b"login alice\nwant g f\n").unwrap();
    let mut got = Vec::new();
    deliver(&mut i, &mut r, &[3], &mut got).unwrap();
    assert_eq!(got, b"login alice\nwant g f\n");

    r.send(b"1 ok\n2 ok").unwrap();
    let wire = r.output().to_vec();
    r.consume_output(wire.len());
    i.receive(&wire).unwrap();
    let mut framer = crate::net::framer::LineFramer::new(1024);
    assert_eq!(framer.read_from(&mut i, 1024).unwrap(), Some(9));
    assert_eq!(framer.next_line(), crate::net::framer::Frame::Line(b"1 ok"));
    assert_eq!(framer.next_line(), crate::net::framer::Frame::NeedMore);
    // Nothing buffered: the channel reads like a drained non-blocking socket.
    assert_eq!(framer.read_from(&mut i, 1024).unwrap(), None);
}

#[test]
fn data_sent_before_the_handshake_ends_is_delivered_after_it() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let mut i = SecureChannel::new(Role::Initiator, keys(&a, None)).unwrap();
    let mut r = SecureChannel::new(Role::Responder, keys(&b, None)).unwrap();
    i.send(b"early\n").unwrap();
    let mut got = Vec::new();
    deliver(&mut i, &mut r, &[usize::MAX], &mut got).unwrap();
    deliver(&mut r, &mut i, &[usize::MAX], &mut got).unwrap();
    assert!(got.is_empty());
    // Message 3 and the early data go out together and arrive in one read.
    deliver(&mut i, &mut r, &[usize::MAX], &mut got).unwrap();
    assert_eq!(got, b"early\n");
    let too_much = vec![0u8; MAX_EARLY_PLAINTEXT + 1];
    let mut fresh = SecureChannel::new(Role::Initiator, keys(&a, None)).unwrap();
    assert!(matches!(
        fresh.send(&too_much),
        Err(ChannelError::BufferFull { .. })
    ));
}

#[test]
fn large_transfer_round_trips_in_records_no_longer_than_noise_allows() {
    let (mut i, mut r, _, _) = pair();
    let data: Vec<u8> = (0..5_000_003u32)
        .map(|x| (x.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    i.send(&data).unwrap();
    // Walk the records: every one within the limit, the last one short.
    let wire = i.output().to_vec();
    let mut at = 0;
    let mut records = 0;
    while at < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
        assert!(len <= MAX_RECORD && len > TAG_LEN);
        at += HEADER_LEN + len;
        records += 1;
    }
    assert_eq!(at, wire.len());
    assert_eq!(records, data.len().div_ceil(MAX_RECORD_PLAINTEXT));
    let mut got = Vec::new();
    deliver(&mut i, &mut r, &[200_000, 7, 65_537], &mut got).unwrap();
    assert!(got == data, "payload differs");
}

#[test]
fn receive_stops_when_the_plaintext_buffer_is_full_and_resumes_when_taken() {
    let (mut i, mut r, _, _) = pair();
    let data = vec![0x5au8; 3 * MAX_PLAINTEXT_BUFFERED];
    i.send(&data).unwrap();
    let wire = i.output().to_vec();
    let n = r.receive(&wire).unwrap();
    assert!(n < wire.len());
    assert!(r.plaintext().len() <= MAX_PLAINTEXT_BUFFERED);
    let mut total = r.plaintext().len();
    r.consume_plaintext(total);
    let mut at = n;
    for _ in 0..100 {
        if at == wire.len() {
            break;
        }
        at += r.receive(&wire[at..]).unwrap();
        assert!(r.plaintext().len() <= MAX_PLAINTEXT_BUFFERED);
        total += r.plaintext().len();
        let taken = r.plaintext().len();
        r.consume_plaintext(taken);
    }
    assert_eq!(total, data.len());
}

#[test]
fn a_tampered_byte_is_refused_in_transport_and_the_channel_stays_closed() {
    let (mut i, mut r, _, _) = pair();
    i.send(b"get g f 0\n").unwrap();
    let mut wire = i.output().to_vec();
    for pos in [0usize, 1, 2, 5, wire.len() - 1] {
        let (_, mut r2, _, _) = pair();
        let mut w = wire.clone();
        w[pos] ^= 0x01;
        // A flipped length byte may leave the record incomplete (no error yet) or make it
        // short; either way no plaintext comes out, and a complete altered record is an error.
        let res = r2.receive(&w);
        assert!(r2.plaintext().is_empty());
        if pos >= HEADER_LEN {
            assert_eq!(
                res,
                Err(ChannelError::Authentication {
                    during_handshake: false
                })
            );
        }
    }
    wire[HEADER_LEN + 3] ^= 0x80;
    assert_eq!(
        r.receive(&wire),
        Err(ChannelError::Authentication {
            during_handshake: false
        })
    );
    assert_eq!(r.receive(b"\x00\x00"), Err(ChannelError::Closed));
    // Even a byte too few to start a record, or none at all.
    assert_eq!(r.receive(b"\x00"), Err(ChannelError::Closed));
    assert_eq!(r.receive(b""), Err(ChannelError::Closed));
    assert_eq!(r.send(b"x"), Err(ChannelError::Closed));
}

#[test]
fn a_tampered_handshake_message_is_refused() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let mut i = SecureChannel::new(Role::Initiator, keys(&a, None)).unwrap();
    let mut r = SecureChannel::new(Role::Responder, keys(&b, None)).unwrap();
    let m1 = i.output().to_vec();
    i.consume_output(m1.len());
    r.receive(&m1).unwrap();
    let mut m2 = r.output().to_vec();
    m2[HEADER_LEN + 40] ^= 0x04; // inside the encrypted static key
    assert_eq!(
        i.receive(&m2),
        Err(ChannelError::Authentication {
            during_handshake: true
        })
    );
    assert!(!i.is_established() && i.remote_static().is_none());
}

#[test]
fn a_replayed_or_reordered_record_is_refused() {
    let (mut i, mut r, _, _) = pair();
    i.send(b"one\n").unwrap();
    let first = i.output().to_vec();
    i.consume_output(first.len());
    r.receive(&first).unwrap();
    assert_eq!(r.plaintext(), b"one\n");
    assert_eq!(
        r.receive(&first),
        Err(ChannelError::Authentication {
            during_handshake: false
        })
    );

    let (mut i, mut r, _, _) = pair();
    i.send(b"a").unwrap();
    let a = i.output().to_vec();
    i.consume_output(a.len());
    i.send(b"b").unwrap();
    let b = i.output().to_vec();
    assert_eq!(
        r.receive(&b),
        Err(ChannelError::Authentication {
            during_handshake: false
        })
    );
}

#[test]
fn a_wrong_or_missing_psk_fails_the_handshake_and_the_right_one_works() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let k1 = psk_from_cluster_key(b"one cluster key");
    let k2 = psk_from_cluster_key(b"another cluster key");
    let (i, r) = pair_with(&a, &b, Some(&k1), Some(&k1), &[5]).unwrap();
    assert_eq!(i.remote_static(), Some(b.public()));
    assert_eq!(r.remote_static(), Some(a.public()));
    // psk0: the responder refuses the very first message.
    assert_eq!(
        pair_with(&a, &b, Some(&k1), Some(&k2), &[usize::MAX]).err(),
        Some(ChannelError::Authentication {
            during_handshake: true
        })
    );
    assert!(pair_with(&a, &b, None, Some(&k1), &[usize::MAX]).is_err());
    assert!(pair_with(&a, &b, Some(&k1), None, &[usize::MAX]).is_err());
}

#[test]
fn a_handshake_for_another_conversation_fails() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let mut i = SecureChannel::new(Role::Initiator, keys(&a, None)).unwrap();
    let mut r = SecureChannel::new(
        Role::Responder,
        ChannelKeys {
            identity: &b,
            psk: None,
            conversation: Conversation::ClientClient,
        },
    )
    .unwrap();
    let mut sink = Vec::new();
    deliver(&mut i, &mut r, &[usize::MAX], &mut sink).unwrap();
    assert_eq!(
        deliver(&mut r, &mut i, &[usize::MAX], &mut sink),
        Err(ChannelError::Authentication {
            during_handshake: true
        })
    );
}

#[test]
fn out_of_order_and_oversized_handshake_messages_are_errors() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let new = |role, id| SecureChannel::new(role, keys(id, None)).unwrap();

    // An initiator is waiting for message 2: its own message 1 echoed back is not one.
    let mut i = new(Role::Initiator, &a);
    let m1 = i.output().to_vec();
    assert!(i.receive(&m1).is_err());

    // A responder given message 1 twice reads the second as message 3, which fails.
    let mut r = new(Role::Responder, &b);
    let i = new(Role::Initiator, &a);
    let m1 = i.output().to_vec();
    r.receive(&m1).unwrap();
    assert!(r.receive(&m1).is_err());

    // A transport-sized record before any handshake: refused from its header alone.
    let mut r = new(Role::Responder, &b);
    assert_eq!(
        r.receive(&[0xff, 0xff]),
        Err(ChannelError::RecordTooLarge {
            len: 0xffff,
            limit: MAX_HANDSHAKE_RECORD
        })
    );
    // An empty record where message 1 should be.
    let mut r = new(Role::Responder, &b);
    assert!(r.receive(&[0, 0]).is_err());
    // Plain text (someone speaking the old protocol) is refused, not buffered.
    let mut r = new(Role::Responder, &b);
    assert!(matches!(
        r.receive(b"want g f\n"),
        Err(ChannelError::RecordTooLarge { .. })
    ));
}

#[test]
fn an_empty_send_sends_nothing_and_empty_records_are_refused() {
    let (mut i, mut r, _, _) = pair();
    i.send(b"").unwrap();
    assert!(i.output().is_empty());
    assert_eq!(
        r.receive(&[0, 0]),
        Err(ChannelError::Authentication {
            during_handshake: false
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the fragmentation, handshake and transport both ways deliver the bytes intact.
    #[test]
    fn fragmented_delivery_both_ways(
        cuts in proptest::collection::vec(1usize..200_000, 1..8),
        small_cuts in proptest::collection::vec(1usize..40, 1..8),
        to_r in proptest::collection::vec(any::<u8>(), 0..150_000),
        to_i in proptest::collection::vec(any::<u8>(), 0..3_000),
        psk in any::<bool>(),
    ) {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let k = psk_from_cluster_key(b"k");
        let psk = psk.then_some(&k);
        let (mut i, mut r) = pair_with(&a, &b, psk, psk, &small_cuts).unwrap();
        i.send(&to_r).unwrap();
        r.send(&to_i).unwrap();
        let (mut at_r, mut at_i) = (Vec::new(), Vec::new());
        deliver(&mut i, &mut r, &cuts, &mut at_r).unwrap();
        deliver(&mut r, &mut i, &small_cuts, &mut at_i).unwrap();
        prop_assert!(at_r == to_r);
        prop_assert!(at_i == to_i);
    }

    /// Random bytes thrown at a responder never panic and never yield plaintext.
    #[test]
    fn garbage_never_panics_or_yields_plaintext(junk in proptest::collection::vec(any::<u8>(), 0..600)) {
        let b = Identity::generate().unwrap();
        let mut r = SecureChannel::new(Role::Responder, keys(&b, None)).unwrap();
        let _ = r.receive(&junk);
        prop_assert!(r.plaintext().is_empty());
        prop_assert!(!r.is_established());
    }
}

#[test]
fn a_low_order_ephemeral_key_is_refused() {
    // The all-zero point would make the shared secret all zeros, known to anyone.
    let b = Identity::generate().unwrap();
    let mut r = SecureChannel::new(Role::Responder, keys(&b, None)).unwrap();
    let mut m1 = vec![0u8, 32];
    m1.extend_from_slice(&[0u8; 32]);
    assert!(r.receive(&m1).is_err());
    assert!(r.output().is_empty());
}

#[test]
fn the_cluster_psk_ignores_surrounding_whitespace_and_depends_on_the_key() {
    assert_eq!(
        psk_from_cluster_key(b"abc"),
        psk_from_cluster_key(b" abc\n")
    );
    assert_ne!(psk_from_cluster_key(b"abc"), psk_from_cluster_key(b"abd"));
    assert_ne!(psk_from_cluster_key(b"abc"), [0u8; 32]);
}
