//! Proofs made with keys, apart from the sockets that carry them: the password login
//! (`scram`) and the group tickets a seeder checks before serving (`ticket`). Pure; randomness
//! and clocks come from the caller.
pub mod scram;
pub mod ticket;
