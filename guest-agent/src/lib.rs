//! boxbuild's guest side: the wire protocol shared with the host, and the agent's pieces.

pub mod protocol;
