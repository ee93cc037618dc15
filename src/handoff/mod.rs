//! What a finished migration hands on to the tools a team already runs: the Terraform file that adopts
//! the new group (`terraform`), written with a small HCL writer (`hcl`).

pub mod hcl;
pub mod terraform;
