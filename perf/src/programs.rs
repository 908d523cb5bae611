//! The perf harness's XDP programs (`src/bpf/perf.bpf.c`, built by `build.rs`): a generator
//! run through `BPF_PROG_RUN` in live-frames mode, a sink that counts and drops, and a
//! redirector (the XDP ceiling of a path). They are measuring instruments, not part of kxdp:
//! they live here rather than in the I/O crate, whose loader helpers they use.
//!
//! The generator sends a template frame out of a veth as fast as one core can run the program
//! (the kernel turns its `XDP_TX` into a transmit on the run's ingress interface, which on a
//! veth lands in the peer's XDP without an skb). It does not go through AF_XDP or the stack,
//! so it outruns the forwarders it measures on this machine; the harness reports the offered
//! rate beside the forwarded one so that this can be checked.

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, ProgramInput};

use kxdp_xdp::{attach_program, bpf, percpu_sum, Attachment, XdpError};

/// The compiled object.
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/perf.bpf.o"));

/// Path of the compiled object on the build machine (for tests reading its BTF).
pub const OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/perf.bpf.o");

/// Size of `struct gen_cfg` (`flows`, then `seq`), as [`PerfPrograms::set_flows`] writes it.
const GEN_CFG_LEN: usize = 8;

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program sends really go out.
const LIVE_FRAMES: u32 = 1 << 1;

/// The loaded generator and sink.
#[derive(Debug)]
pub struct PerfPrograms {
    obj: Object,
}

impl PerfPrograms {
    /// Load both programs (nothing attached).
    pub fn load() -> Result<PerfPrograms, XdpError> {
        let open = ObjectBuilder::default()
            .open_memory(OBJECT)
            .map_err(bpf("opening the perf object"))?;
        let obj = open.load().map_err(bpf("loading the perf programs"))?;
        Ok(PerfPrograms { obj })
    }

    fn map(&self, name: &'static str) -> Result<libbpf_rs::Map<'_>, XdpError> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .ok_or(XdpError::Missing(name))
    }

    /// Spread generated frames over `flows` UDP source ports (10000 and up).
    pub fn set_flows(&self, flows: u32) -> Result<(), XdpError> {
        let mut value = [0u8; GEN_CFG_LEN];
        value[..4].copy_from_slice(&flows.max(1).to_ne_bytes());
        self.map("gen_cfg")?
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(bpf("setting the generator's flows"))
    }

    /// Send `count` copies of `frame` (an Ethernet/IPv4/UDP frame whose UDP checksum is zero)
    /// out of interface `ifindex` of the calling thread's namespace, in batches of 64.
    pub fn generate(&self, frame: &[u8], ifindex: u32, count: u32) -> Result<(), XdpError> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == "kxdp_gen")
            .ok_or(XdpError::Missing("program kxdp_gen"))?;
        // struct xdp_md as in Steering::test_run: data_end = length, ingress_ifindex.
        let len = u32::try_from(frame.len()).expect("a frame fits in u32");
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let input = ProgramInput {
            data_in: Some(frame),
            context_in: Some(&mut ctx),
            repeat: count,
            flags: LIVE_FRAMES,
            ..Default::default()
        };
        prog.test_run(input)
            .map_err(bpf("generating frames (BPF_PROG_RUN, live frames)"))?;
        Ok(())
    }

    /// Attach the sink to interface `ifindex` of the calling thread's namespace.
    pub fn attach_sink(&self, ifindex: u32) -> Result<Attachment, XdpError> {
        attach_program(&self.obj, "kxdp_sink", ifindex)
    }

    /// Attach the redirector to interface `ifindex`, sending every frame out of `to` (both in
    /// the calling thread's namespace).
    pub fn attach_redirect(&self, ifindex: u32, to: u32) -> Result<Attachment, XdpError> {
        let mut value = [0u8; 4];
        value.copy_from_slice(&to.to_ne_bytes());
        self.map("redirect_cfg")?
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(bpf("setting the redirect target"))?;
        attach_program(&self.obj, "kxdp_redirect", ifindex)
    }

    /// Frames and bytes the sink has counted.
    pub fn sink_counts(&self) -> Result<(u64, u64), XdpError> {
        let m = self.map("sink_stats")?;
        Ok((percpu_sum(&m, 0)?, percpu_sum(&m, 1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::btf::types::{MemberAttr, Struct};
    use libbpf_rs::{Btf, HasSize};

    /// `set_flows` writes `struct gen_cfg` as bytes (`flows` first, `seq` zeroed after it), as
    /// the steering program's loader writes its structs; the object's BTF must agree.
    #[test]
    fn generator_config_layout_matches_the_object_btf() {
        let btf = Btf::from_path(OBJECT_PATH).expect("the object carries BTF");
        let s: Struct<'_> = btf
            .type_by_name("gen_cfg")
            .expect("struct gen_cfg is in the object's BTF");
        let members: Vec<(String, u32)> = s
            .iter()
            .map(|m| {
                let offset = match m.attr {
                    MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => offset,
                };
                let name = m.name.map(|n| n.to_string_lossy().into_owned());
                (name.unwrap_or_default(), offset / 8)
            })
            .collect();
        assert_eq!(s.size(), GEN_CFG_LEN, "size of struct gen_cfg");
        assert_eq!(
            members,
            [("flows".to_owned(), 0), ("seq".to_owned(), 4)],
            "members of struct gen_cfg"
        );
    }
}
