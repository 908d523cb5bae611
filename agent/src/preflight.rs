//! What the agent needs from the machine, checked before it starts: the capabilities to load
//! and attach XDP programs and bind AF_XDP sockets, enough locked memory for the UMEMs, and
//! the interfaces it is told to drive. Each failure names what is missing and how to run.

use caps::{CapSet, Capability as Cap};
use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

/// A capability the agent needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Its name, as `setcap` and `capsh` spell it.
    pub name: &'static str,
    /// The capability.
    pub cap: Cap,
    /// Why kxdp needs it.
    pub why: &'static str,
}

/// The capabilities the agent needs (CAP_BPF may be replaced by CAP_SYS_ADMIN, as on kernels
/// before 5.8).
pub const NEEDED: [Capability; 3] = [
    Capability {
        name: "cap_net_admin",
        cap: Cap::CAP_NET_ADMIN,
        why: "to attach XDP programs, bind AF_XDP sockets and make the host veth pair",
    },
    Capability {
        name: "cap_net_raw",
        cap: Cap::CAP_NET_RAW,
        why: "to create AF_XDP sockets",
    },
    Capability {
        name: "cap_bpf",
        cap: Cap::CAP_BPF,
        why: "to load the XDP program and create its maps",
    },
];

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    /// A capability is missing.
    #[error(
        "missing capability {name} ({why}): run kxdp as root, or grant it with \
         `setcap cap_net_admin,cap_net_raw,cap_bpf,cap_ipc_lock+ep kxdp`"
    )]
    Capability {
        /// The capability.
        name: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// Locked memory is limited below what the UMEMs need, and CAP_IPC_LOCK is missing.
    #[error(
        "locked memory is limited to {limit} bytes but the UMEMs need {needed}: raise it \
         (`ulimit -l unlimited`, or LimitMEMLOCK=infinity in a systemd unit) or grant cap_ipc_lock"
    )]
    Memlock {
        /// The soft limit.
        limit: u64,
        /// What the workers' UMEMs take.
        needed: u64,
    },
    /// An interface does not exist.
    #[error("interface {0} does not exist (in this network namespace)")]
    NoInterface(String),
}

/// Whether this process has `cap` in its effective set (as capget(2) says; an error reads
/// as no).
fn has(cap: Cap) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// The soft RLIMIT_MEMLOCK, `None` if unlimited (or unreadable: the kernel then has the last
/// word when the UMEMs are allocated).
fn memlock_limit() -> Option<u64> {
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    (soft != RLIM_INFINITY).then_some(soft)
}

/// Check that this process may run the dataplane: `umem_bytes` of locked memory in all, on
/// `interfaces` (names in this network namespace). Returns every problem found.
pub fn check(interfaces: &[String], umem_bytes: u64) -> Vec<PreflightError> {
    let mut problems = Vec::new();
    for c in NEEDED {
        let granted = has(c.cap) || (c.cap == Cap::CAP_BPF && has(Cap::CAP_SYS_ADMIN));
        if !granted {
            problems.push(PreflightError::Capability {
                name: c.name,
                why: c.why,
            });
        }
    }
    if let Some(limit) = memlock_limit() {
        if limit < umem_bytes && !has(Cap::CAP_IPC_LOCK) {
            problems.push(PreflightError::Memlock {
                limit,
                needed: umem_bytes,
            });
        }
    }
    for name in interfaces {
        if kxdp_xdp::ifindex(name).is_err() {
            problems.push(PreflightError::NoInterface(name.clone()));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_named_and_capabilities_are_read() {
        let problems = check(&["lo".into(), "nope0".into()], 0);
        assert!(
            problems.contains(&PreflightError::NoInterface("nope0".into())),
            "{problems:?}"
        );
        assert!(!problems.contains(&PreflightError::NoInterface("lo".into())));
        // Whatever this process holds, the capability checks agree with capget(2).
        let missing_admin = problems.iter().any(
            |p| matches!(p, PreflightError::Capability { name, .. } if *name == "cap_net_admin"),
        );
        assert_eq!(missing_admin, !has(Cap::CAP_NET_ADMIN));
    }
}
