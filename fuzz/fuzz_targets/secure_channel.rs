//! The secure channel: arbitrary bytes, in arbitrary chunks, at any stage of a handshake or
//! after it, never panic, never yield plaintext that was not sent, never buffer past the limits.
#![no_main]
use groupshare::net::identity::Identity;
use groupshare::net::secure::{
    ChannelKeys, Conversation, Role, SecureChannel, MAX_PLAINTEXT_BUFFERED, MAX_RECORD,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (Ok(a), Ok(b)) = (Identity::generate(), Identity::generate()) else {
        return;
    };
    let keys = |id| ChannelKeys {
        identity: id,
        psk: None,
        conversation: Conversation::ClientClient,
    };
    let (Ok(mut i), Ok(mut r)) = (
        SecureChannel::new(Role::Initiator, keys(&a)),
        SecureChannel::new(Role::Responder, keys(&b)),
    ) else {
        return;
    };
    // Stage 0: a fresh responder; 1: a responder that read message 1; 2: an established one.
    let stage = mode % 3;
    for _ in 0..stage {
        let m = i.output().to_vec();
        i.consume_output(m.len());
        assert_eq!(r.receive(&m), Ok(m.len()));
        let m = r.output().to_vec();
        r.consume_output(m.len());
        assert_eq!(i.receive(&m), Ok(m.len()));
    }
    let chunk = usize::from(mode / 3).max(1);
    for piece in rest.chunks(chunk) {
        let Ok(_) = r.receive(piece) else {
            assert!(r.receive(b"x").is_err(), "a failed channel must stay failed");
            return;
        };
        // Garbage cannot authenticate: nothing decrypts.
        assert!(r.plaintext().is_empty());
        assert!(r.plaintext().len() <= MAX_PLAINTEXT_BUFFERED + MAX_RECORD);
    }
});
