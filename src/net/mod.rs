//! What both programs share for networking: line framing, the buffered, non-blocking
//! connection that the poll loops drive, and the secure channel with the identities it proves.

pub mod conn;
pub mod framer;
pub mod identity;
pub mod secure;
pub mod secure_stream;
