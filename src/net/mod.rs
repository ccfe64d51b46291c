//! What both programs share for networking: line framing and the buffered, non-blocking
//! connection that the poll loops drive.

pub mod conn;
pub mod framer;
