//! Proofs made with keys, apart from the sockets that carry them: the password login
//! (`scram`), the bytes the login and attach proofs cover (`login`), and the group tickets a
//! seeder checks before serving (`ticket`). Pure, but for `login`'s two helpers that draw from
//! the kernel's CSPRNG; clocks come from the caller.
pub mod login;
pub mod scram;
pub mod ticket;
