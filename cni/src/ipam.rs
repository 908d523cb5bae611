//! Pod addresses from the node's podCIDR, kept as host-local keeps them: a folder per network
//! (`<dataDir>/<name>`, by default under `/var/lib/kxdp/ipam`), one file per address taken,
//! named by the address and holding its owner: the attachment (`CNI_CONTAINERID`,
//! `CNI_IFNAME`) and the node's end of its veth.
//!
//! The contract:
//! - Every change happens under an exclusive `flock(2)` on the folder's `lock` file, so
//!   concurrent plugins (one process per `ADD`) never hand out one address twice.
//! - An address file is written whole or not at all: the owner goes to a temporary file,
//!   which is synced and renamed to the address, and the folder is synced, so a crash leaves
//!   either no file or a complete one (a leftover temporary file is removed by the next
//!   change) and an allocation survives a reboot.
//! - The subnet's network and broadcast addresses and the pods' gateway are never handed out.
//!   Addresses are handed out round-robin after the last one taken (`last_reserved_ip`), as
//!   host-local does, so a freed address is not reused at once while stale conntrack entries
//!   or neighbour caches elsewhere may still name it.
//! - An attachment holds at most one address: asking again returns the one it has.
//! - Files outside the current subnet (the node's podCIDR changed) stay until `DEL` or `GC`
//!   frees them; a file whose owner cannot be read holds its address until `GC`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Who holds an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The node's end of the pod's veth.
    #[serde(rename = "hostInterface")]
    pub host_ifname: String,
}

impl Owner {
    fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every address of the subnet is taken.
    #[error("every address of {subnet} is taken ({taken} pods; the gateway {gateway}, network and broadcast addresses are never handed out)")]
    Exhausted {
        /// The subnet.
        subnet: Ipv4Net,
        /// The gateway.
        gateway: Ipv4Addr,
        /// How many addresses are taken.
        taken: usize,
    },
    /// A file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One network's allocations.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

/// The store, locked: every method runs under the lock, which is released when this is
/// dropped.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _lock: Flock<File>,
}

const LOCK: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip";
const TMP_SUFFIX: &str = ".tmp";

impl Store {
    /// The store of network `name` under `data_dir`; the folder is made when first locked.
    pub fn new(data_dir: &Path, name: &str) -> Store {
        Store {
            dir: data_dir.join(name),
        }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take the lock, waiting for whoever holds it.
    pub fn lock(&self) -> Result<Locked<'_>, IpamError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| IpamError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(Locked {
            store: self,
            _lock: lock,
        })
    }
}

impl Locked<'_> {
    /// Every address taken, with its owner (`None` where the file cannot be read).
    pub fn allocations(&self) -> Result<BTreeMap<Ipv4Addr, Option<Owner>>, IpamError> {
        let dir = &self.store.dir;
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                // Left by a plugin that died mid-write: never a complete allocation.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            let owner = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            out.insert(ip, owner);
        }
        Ok(out)
    }

    /// The address `container_id`/`ifname` holds, if any.
    pub fn find(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<(Ipv4Addr, Owner)>, IpamError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find_map(|(ip, o)| o.filter(|o| o.is(container_id, ifname)).map(|o| (ip, o))))
    }

    /// An address of `subnet` for `owner`: the one its attachment already holds there, else
    /// the next free one after the last handed out, never the network, broadcast or `gateway`
    /// address.
    pub fn allocate(
        &self,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        owner: &Owner,
    ) -> Result<Ipv4Addr, IpamError> {
        let taken = self.allocations()?;
        if let Some(ip) = taken.iter().find_map(|(ip, o)| {
            o.as_ref()
                .filter(|o| o.is(&owner.container_id, &owner.ifname) && subnet.contains(ip))
                .map(|_| *ip)
        }) {
            return Ok(ip);
        }
        let first = u32::from(subnet.network()) + 1;
        let last = u32::from(subnet.broadcast()) - 1;
        let hosts = last - first + 1;
        let last_reserved = std::fs::read_to_string(self.store.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|t| t.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip));
        let start = last_reserved.map_or(0, |ip| ip - first + 1);
        let free = (0..hosts)
            .map(|i| Ipv4Addr::from(first + (start + i) % hosts))
            .find(|ip| *ip != gateway && !taken.contains_key(ip));
        let Some(ip) = free else {
            return Err(IpamError::Exhausted {
                subnet,
                gateway,
                taken: taken.keys().filter(|ip| subnet.contains(*ip)).count(),
            });
        };
        let text = serde_json::to_vec(owner).expect("an owner serializes");
        self.write(&ip.to_string(), &text)?;
        self.write(LAST_RESERVED, ip.to_string().as_bytes())?;
        Ok(ip)
    }

    /// Free every address `container_id`/`ifname` holds (one, but two when the podCIDR
    /// changed between its ADDs); the first, if any.
    pub fn release(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<(Ipv4Addr, Owner)>, IpamError> {
        let mut first = None;
        for (ip, owner) in self.allocations()? {
            let Some(owner) = owner.filter(|o| o.is(container_id, ifname)) else {
                continue;
            };
            self.remove(ip)?;
            first.get_or_insert((ip, owner));
        }
        Ok(first)
    }

    /// Free every address whose attachment is not in `valid` (and every one whose owner
    /// cannot be read), going on past an address that cannot be freed: what was freed, and
    /// what failed.
    #[allow(clippy::type_complexity)]
    pub fn retain(
        &self,
        valid: &BTreeSet<(String, String)>,
    ) -> Result<(Vec<(Ipv4Addr, Option<Owner>)>, Vec<IpamError>), IpamError> {
        let (mut freed, mut failed) = (Vec::new(), Vec::new());
        for (ip, owner) in self.allocations()? {
            let keep = owner
                .as_ref()
                .is_some_and(|o| valid.contains(&(o.container_id.clone(), o.ifname.clone())));
            if !keep {
                match self.remove(ip) {
                    Ok(()) => freed.push((ip, owner)),
                    Err(e) => failed.push(e),
                }
            }
        }
        Ok((freed, failed))
    }

    fn remove(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.store.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Replace file `name` with `bytes`: a synced temporary file renamed over it, then the
    /// folder synced, so the name and its content reach the disk together.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), IpamError> {
        let path = self.store.dir.join(name);
        let tmp = self.store.dir.join(format!("{name}{TMP_SUFFIX}"));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&path)(e));
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), IpamError> {
        let dir = &self.store.dir;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!("kxdp-ipam-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn owner(n: usize) -> Owner {
        Owner {
            container_id: format!("c{n}"),
            ifname: "eth0".into(),
            host_ifname: format!("kx{n:012x}"),
        }
    }

    const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast_and_runs_out_cleanly() {
        let d = TempDir::new("exhaust");
        let store = Store::new(&d.0, "kxdp");
        let subnet = net("10.244.1.0/29");
        let l = store.lock().unwrap();
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|n| l.allocate(subnet, GW, &owner(n)).unwrap())
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 244, 1, h)).collect();
        assert_eq!(got, want);
        assert_eq!(l.allocations().unwrap().len(), 5);
        match l.allocate(subnet, GW, &owner(9)) {
            Err(IpamError::Exhausted { taken: 5, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Asking again for an attachment that holds one returns it.
        assert_eq!(l.allocate(subnet, GW, &owner(3)).unwrap(), want[3]);
    }

    #[test]
    fn round_robin_after_the_last_taken_and_release_frees() {
        let d = TempDir::new("rr");
        let store = Store::new(&d.0, "kxdp");
        let subnet = net("10.244.1.0/24");
        let l = store.lock().unwrap();
        let a = l.allocate(subnet, GW, &owner(1)).unwrap();
        let b = l.allocate(subnet, GW, &owner(2)).unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3))
        );
        assert_eq!(l.release("c1", "eth0").unwrap().map(|(ip, _)| ip), Some(a));
        assert_eq!(
            l.release("c1", "eth0").unwrap(),
            None,
            "a second release finds nothing"
        );
        // Not reused at once.
        assert_eq!(
            l.allocate(subnet, GW, &owner(3)).unwrap(),
            Ipv4Addr::new(10, 244, 1, 4)
        );
        assert_eq!(l.find("c2", "eth0").unwrap().unwrap().1, owner(2));
    }

    #[test]
    fn allocations_survive_a_new_process_and_crash_leftovers_are_swept() {
        let d = TempDir::new("persist");
        let subnet = net("10.244.1.0/24");
        {
            let store = Store::new(&d.0, "kxdp");
            store
                .lock()
                .unwrap()
                .allocate(subnet, GW, &owner(1))
                .unwrap();
        }
        // A crash between writing and renaming leaves only a temporary file.
        std::fs::write(d.0.join("kxdp/10.244.1.3.tmp"), b"{\"contain").unwrap();
        let store = Store::new(&d.0, "kxdp");
        let l = store.lock().unwrap();
        let all = l.allocations().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[&Ipv4Addr::new(10, 244, 1, 2)], Some(owner(1)));
        assert!(!d.0.join("kxdp/10.244.1.3.tmp").exists());
        assert_eq!(
            l.allocate(subnet, GW, &owner(2)).unwrap(),
            Ipv4Addr::new(10, 244, 1, 3)
        );
    }

    #[test]
    fn retain_frees_all_but_the_valid_and_unreadable_owners() {
        let d = TempDir::new("gc");
        let store = Store::new(&d.0, "kxdp");
        let subnet = net("10.244.1.0/24");
        let l = store.lock().unwrap();
        for n in 0..4 {
            l.allocate(subnet, GW, &owner(n)).unwrap();
        }
        std::fs::write(d.0.join("kxdp/10.244.1.200"), b"garbage").unwrap();
        let valid: BTreeSet<_> = [("c1".to_string(), "eth0".to_string())].into();
        let (freed, failed) = l.retain(&valid).unwrap();
        assert_eq!(freed.len(), 4);
        assert!(failed.is_empty(), "{failed:?}");
        let left = l.allocations().unwrap();
        assert_eq!(
            left.keys().copied().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 244, 1, 3)]
        );
    }

    #[test]
    fn release_frees_every_address_of_an_attachment() {
        // The podCIDR changed between two ADDs of one attachment: it holds one address in
        // each, and its DEL frees both.
        let d = TempDir::new("release");
        let store = Store::new(&d.0, "kxdp");
        let l = store.lock().unwrap();
        let a = l.allocate(net("10.244.1.0/24"), GW, &owner(0)).unwrap();
        let b = l
            .allocate(
                net("10.244.2.0/24"),
                Ipv4Addr::new(10, 244, 2, 1),
                &owner(0),
            )
            .unwrap();
        assert_ne!(a, b);
        let (c0, i0) = (owner(0).container_id, owner(0).ifname);
        assert!(l.release(&c0, &i0).unwrap().is_some());
        assert!(l.allocations().unwrap().is_empty(), "both freed");
        assert!(l.release(&c0, &i0).unwrap().is_none());
    }

    #[test]
    fn concurrent_lockers_never_share_an_address() {
        let d = TempDir::new("threads");
        let subnet = net("10.244.1.0/24");
        let dir = d.0.clone();
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    // A store (and lock file descriptor) of its own, as a separate process has.
                    let store = Store::new(&dir, "kxdp");
                    let l = store.lock().unwrap();
                    l.allocate(subnet, GW, &owner(n)).unwrap()
                })
            })
            .collect();
        let got: BTreeSet<Ipv4Addr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got.len(), 16);
    }
}
