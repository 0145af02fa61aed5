//! palisade's analysis: the host's real firewall state, read into one model.
//!
//! [`iptables`] parses `iptables-save` and `ip6tables-save` output (nft and
//! legacy backends print the same format). The packet-path model that
//! evaluates it builds on these types.

pub mod audit;
pub mod compose;
pub mod eval;
pub mod findings;
pub mod host;
pub mod init;
pub mod iptables;
pub mod nftjson;
pub mod runtime;
pub mod sarif;
pub mod verify;
