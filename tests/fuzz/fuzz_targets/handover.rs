//! Any sequence of messages, with any number of descriptors each, as a successor receives
//! them from the agent it replaces ([`kxdp_xdp::handover::Receiving`]): each is taken or
//! refused with an error, never a panic, and every descriptor that came is either in what
//! was handed over or closed, none left open. The input is messages of `[length, descriptors,
//! bytes...]` (length 0 to 255; 0 to 3 descriptors, each a fresh `/dev/null`).
#![no_main]

use std::os::fd::OwnedFd;

use kxdp_xdp::handover::Receiving;
use libfuzzer_sys::fuzz_target;

/// Descriptors open in this process now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fuzz_target!(|data: &[u8]| {
    let before = open_fds();
    {
        let mut receiving = Receiving::default();
        let mut rest = data;
        while let [len, n_fds, tail @ ..] = rest {
            let len = usize::from(*len).min(tail.len());
            let (msg, next) = tail.split_at(len);
            rest = next;
            let fds: Vec<OwnedFd> = (0..n_fds % 4)
                .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null")))
                .collect();
            match receiving.take(msg, fds) {
                Ok(Some(umems)) => {
                    for (_, u) in &umems {
                        assert_eq!(u.owner.len(), u.frames as usize);
                    }
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    break;
                }
            }
        }
    }
    assert_eq!(open_fds(), before, "every descriptor handed in was closed");
});
