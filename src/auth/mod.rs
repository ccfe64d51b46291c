//! Proofs made with keys, apart from the sockets that carry them: the password login
//! (`scram`). Pure; randomness and clocks come from the caller.
pub mod scram;
