//! What the agent needs from the machine, checked before it starts: the capabilities to load
//! and attach XDP programs and bind AF_XDP sockets, enough locked memory for the UMEMs, and
//! the interfaces it is told to drive. Each failure names what is missing and how to run.

use std::ffi::CString;

/// A capability, by its number in `linux/capability.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Its name, as `setcap` and `capsh` spell it.
    pub name: &'static str,
    /// Its bit.
    pub bit: u32,
    /// Why kxdp needs it.
    pub why: &'static str,
}

/// The capabilities the agent needs (CAP_BPF may be replaced by CAP_SYS_ADMIN, as on kernels
/// before 5.8).
pub const NEEDED: [Capability; 3] = [
    Capability {
        name: "cap_net_admin",
        bit: 12,
        why: "to attach XDP programs and bind AF_XDP sockets",
    },
    Capability {
        name: "cap_net_raw",
        bit: 13,
        why: "to create AF_XDP sockets",
    },
    Capability {
        name: "cap_bpf",
        bit: 39,
        why: "to load the XDP program and create its maps",
    },
];

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

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

/// The effective capability set of this process.
fn effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// The soft RLIMIT_MEMLOCK, `None` if unlimited.
fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// Check that this process may run the dataplane: `umem_bytes` of locked memory in all, on
/// `interfaces` (names in this network namespace). Returns every problem found.
pub fn check(interfaces: &[String], umem_bytes: u64) -> Vec<PreflightError> {
    let caps = effective();
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    let mut problems = Vec::new();
    for c in NEEDED {
        let granted = has(c.bit) || (c.name == "cap_bpf" && has(CAP_SYS_ADMIN));
        if !granted {
            problems.push(PreflightError::Capability {
                name: c.name,
                why: c.why,
            });
        }
    }
    if let Some(limit) = memlock_limit() {
        if limit < umem_bytes && !has(CAP_IPC_LOCK) {
            problems.push(PreflightError::Memlock {
                limit,
                needed: umem_bytes,
            });
        }
    }
    for name in interfaces {
        let exists = CString::new(name.as_str()).is_ok_and(|c| {
            // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
            unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
        });
        if !exists {
            problems.push(PreflightError::NoInterface(name.clone()));
        }
    }
    problems
}
