//! Micro-benchmark of the secure channel on one core: what `make bench` reports and what the
//! suite choice in docs/ARCHITECTURE.md rests on. Run it alone with
//! `cargo test --release --lib secure::bench -- --ignored --nocapture`.

use super::{ChannelError, ChannelKeys, Conversation, Role, SecureChannel};
use crate::net::identity::Identity;
use std::time::Instant;

/// One run's results.
#[derive(Clone, Copy, Debug)]
pub struct ChannelCost {
    /// Plaintext megabytes (10^6) per second through `send` (encryption, framing).
    pub encrypt_mb_s: f64,
    /// Plaintext megabytes per second out of `receive` (decryption, reassembly), the rate that
    /// bounds a download on one core together with SHA-1 and the socket copy.
    pub decrypt_mb_s: f64,
    /// One complete XX handshake, both ends' work, in microseconds.
    pub handshake_us: f64,
}

fn pair(a: &Identity, b: &Identity) -> Result<(SecureChannel, SecureChannel), ChannelError> {
    let keys = |id| ChannelKeys {
        identity: id,
        psk: None,
        conversation: Conversation::ClientClient,
    };
    let mut i = SecureChannel::new(Role::Initiator, keys(a))?;
    let mut r = SecureChannel::new(Role::Responder, keys(b))?;
    // XX is three messages: i → r, r → i, i → r.
    for _ in 0..2 {
        let m = i.output().to_vec();
        i.consume_output(m.len());
        r.receive(&m)?;
        let m = r.output().to_vec();
        r.consume_output(m.len());
        i.receive(&m)?;
    }
    if !(i.is_established() && r.is_established()) {
        return Err(ChannelError::UnexpectedMessage("handshake did not finish"));
    }
    Ok((i, r))
}

/// Measures `total` bytes of transfer in 256 KiB writes (one socket read's worth, as the
/// peer side does) and `handshakes` handshakes.
pub fn measure(total: usize, handshakes: usize) -> Result<ChannelCost, ChannelError> {
    let a = Identity::generate().map_err(ChannelError::Setup)?;
    let b = Identity::generate().map_err(ChannelError::Setup)?;

    let started = Instant::now();
    for _ in 0..handshakes.max(1) {
        pair(&a, &b)?;
    }
    let handshake_us = started.elapsed().as_secs_f64() * 1e6 / handshakes.max(1) as f64;

    let (mut i, mut r) = pair(&a, &b)?;
    let chunk = vec![0xa5u8; 256 * 1024];
    let rounds = total.div_ceil(chunk.len()).max(1);
    let mut wire = Vec::with_capacity(rounds);
    let mut enc = 0.0;
    for _ in 0..rounds {
        let t = Instant::now();
        i.send(&chunk)?;
        enc += t.elapsed().as_secs_f64();
        wire.push(i.output().to_vec());
        let n = wire.last().map_or(0, Vec::len);
        i.consume_output(n);
    }
    let mut dec = 0.0;
    let mut received = 0usize;
    for w in &wire {
        let t = Instant::now();
        let mut at = 0;
        while at < w.len() {
            at += r.receive(&w[at..])?;
            received += r.plaintext().len();
            let n = r.plaintext().len();
            r.consume_plaintext(n);
        }
        dec += t.elapsed().as_secs_f64();
    }
    let bytes = (rounds * chunk.len()) as f64;
    if received != rounds * chunk.len() {
        return Err(ChannelError::UnexpectedMessage("benchmark lost bytes"));
    }
    Ok(ChannelCost {
        encrypt_mb_s: bytes / enc / 1e6,
        decrypt_mb_s: bytes / dec / 1e6,
        handshake_us,
    })
}

#[test]
#[ignore = "a measurement, not a check: run with --release --ignored --nocapture"]
fn secure_channel_cost() {
    // Best of three: the machine is shared, and the best run is the closest to the cipher's rate.
    let mut best: Option<ChannelCost> = None;
    for _ in 0..3 {
        let c = measure(512 << 20, 200).unwrap();
        best = Some(match best {
            None => c,
            Some(b) => ChannelCost {
                encrypt_mb_s: b.encrypt_mb_s.max(c.encrypt_mb_s),
                decrypt_mb_s: b.decrypt_mb_s.max(c.decrypt_mb_s),
                handshake_us: b.handshake_us.min(c.handshake_us),
            },
        });
    }
    let b = best.unwrap();
    println!(
        "{}: encrypt {:.0} MB/s, decrypt {:.0} MB/s, handshake {:.0} µs (both ends)",
        super::SUITE,
        b.encrypt_mb_s,
        b.decrypt_mb_s,
        b.handshake_us
    );
}

#[test]
fn measure_moves_every_byte() {
    let c = measure(1 << 20, 2).unwrap();
    assert!(c.encrypt_mb_s > 0.0 && c.decrypt_mb_s > 0.0 && c.handshake_us > 0.0);
}
