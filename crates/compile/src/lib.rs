//! palisade's compiler: from the validated policy to what the kernel runs.
//!
//! [`build::compile`] gives the [`ir::Ruleset`], the one model of what is
//! enforced; [`nft`] renders it for nftables; [`trace`] evaluates it for a
//! single packet. Other targets plug in behind [`Target`].

pub mod build;
pub mod ir;
pub mod nft;
pub mod resolve;
pub mod selfcheck;
pub mod trace;

pub use build::compile;
pub use ir::Ruleset;
pub use resolve::{Resolution, ResolvedService};
pub use selfcheck::{selfcheck, Mismatch};
