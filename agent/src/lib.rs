//! `kxdp agent`, the node agent, and `kxdp`, the command an operator runs.
//!
//! The agent joins kxdp's pure control side (`kxdp_control`: model, sources, compiler) to its
//! I/O crate (`kxdp_xdp`: the XDP program, AF_XDP sockets, workers) on one node:
//!
//! - [`settings`]: flags, environment and config file into one checked configuration;
//! - [`preflight`]: capabilities, locked memory and interfaces, checked before anything starts;
//! - [`nodefacts`]: what the node's kernel says about its interfaces, routes and neighbours;
//! - [`host_interface`]: the node's host veth pair, created, adopted and removed;
//! - [`run`]: start-up in order, then the loop that feeds changes to the reconciler;
//! - [`reconcile`]: the compiler and the dataplane kept in step with the cluster and the node;
//! - [`subnet_file`]: the node's pod network, written for the CNI plugin;
//! - [`healthcheck`]: the health-check node ports of LoadBalancer services with the Local
//!   external traffic policy;
//! - [`admin`]: the admin API (health, metrics, JSON views) and the client the CLI reads it with;
//! - [`cli`]: the `kxdp` command and its tables;
//! - [`uninstall`]: `kxdp uninstall`, which removes what kxdp put on the node;
//! - [`logs`]: `tracing` lines on stderr.

pub mod admin;
pub mod cli;
mod declared;
pub mod healthcheck;
pub mod host_interface;
pub mod logs;
pub mod nodefacts;
pub mod preflight;
pub mod reconcile;
pub mod run;
pub mod settings;
pub mod subnet_file;
pub mod uninstall;
