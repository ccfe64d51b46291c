//! Proofs made with keys, apart from the sockets that carry them: the password login
//! (`scram`) and the bytes the login and attach proofs cover (`login`). Pure, but for
//! `login`'s two helpers that draw from the kernel's CSPRNG.
pub mod login;
pub mod scram;
