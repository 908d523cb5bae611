//! A frame in a buffer with head- and tailroom, the unit the pipeline rewrites in place.

/// A frame whose first `len` bytes occupy `buf[head..head + len]`. The bytes before `head` are
/// headroom the pipeline may grow into (VXLAN encapsulation prepends 50 bytes); the bytes after
/// are tailroom (ICMP errors quote the packet they answer). In AF_XDP terms `buf` is one UMEM
/// chunk and `head` is the descriptor's offset within it; the buffer is owned by the caller
/// and only borrowed here.
///
/// A frame larger than a buffer (multi-buffer AF_XDP) continues in `tail` more bytes held by
/// the caller, which the pipeline never reads or writes: every header is in this buffer. The
/// pipeline may shorten the tail ([`Frame::set_len`]: cutting padding, or turning the frame
/// into a short ICMP error drops it), and the caller then trims its buffers to match. It may
/// also ask the caller to cut the frame into packets of at most [`Frame::split_at`] bytes on
/// the way out ([`Split`]: TCP segmentation, IPv4 fragmentation), for a frame larger than the
/// link it leaves on.
///
/// A TCP or UDP packet whose checksum is to be left to the way out (a pod's or the node's: see
/// `offload::partial`) is marked so ([`Frame::checksum_offload`]), the mark on its L4 header.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    // u32 rather than usize keeps a frame at 32 bytes (a buffer is a UMEM chunk, a frame at
    // most a few hundred KiB): every stage moves frames, and the batch is an array of them.
    head: u32,
    len: u32,
    tail: u32,
    /// [`Split::mtu`], meaningful with [`SPLIT`].
    split_mtu: u16,
    /// [`SPLIT`], [`SPLIT_VXLAN`].
    flags: u8,
    /// Offset of the L4 header from the frame's start when its checksum is left to the way
    /// out, else 0 (an L4 header is never at the start). Moves with the start
    /// ([`Frame::push_head`]).
    offload_l4: u8,
}

/// [`Frame::flags`]: the frame is to be cut ([`Frame::split`]).
const SPLIT: u8 = 1;
/// [`Frame::flags`]: [`Split::vxlan`].
const SPLIT_VXLAN: u8 = 2;

/// How the caller must cut a frame too big for the link it leaves on: TCP into segments,
/// anything else into IPv4 fragments (`offload::segment`, `offload::fragment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// The largest IP packet the link takes: the outer packet's, when encapsulated.
    pub mtu: u16,
    /// The frame is VXLAN-encapsulated: cut the inner packet, each piece under a copy of the
    /// outer headers.
    pub vxlan: bool,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes at `head` in `buf`, or `None` if that runs past the buffer (or
    /// the buffer is 4 GiB or more).
    #[inline]
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Option<Self> {
        let end = head.checked_add(len)?;
        u32::try_from(buf.len()).ok()?;
        (end <= buf.len()).then_some(Frame {
            buf,
            head: head as u32,
            len: len as u32,
            tail: 0,
            split_mtu: 0,
            flags: 0,
            offload_l4: 0,
        })
    }

    /// The same frame, continuing in `tail` bytes of further buffers (a frame spans a few
    /// hundred KiB at most; a tail of 4 GiB or more would be read as 4 GiB - 1).
    #[inline]
    pub fn with_tail(mut self, tail: usize) -> Self {
        self.tail = u32::try_from(tail).unwrap_or(u32::MAX);
        self
    }

    /// Bytes of the frame in further buffers, after this one's.
    #[inline]
    pub fn tail(&self) -> usize {
        self.tail as usize
    }

    /// The whole frame's length: this buffer's bytes and the tail.
    #[inline]
    pub fn total_len(&self) -> usize {
        self.len as usize + self.tail as usize
    }

    /// How the frame must be cut on the way out, or `None` when it leaves whole: set by the
    /// pipeline for the caller to segment or fragment it.
    #[inline]
    pub fn split(&self) -> Option<Split> {
        (self.flags & SPLIT != 0).then_some(Split {
            mtu: self.split_mtu,
            vxlan: self.flags & SPLIT_VXLAN != 0,
        })
    }

    /// Ask the caller to cut the frame as `split` says on the way out.
    #[inline]
    pub fn set_split(&mut self, split: Split) {
        self.split_mtu = split.mtu;
        self.flags = SPLIT | if split.vxlan { SPLIT_VXLAN } else { 0 };
    }

    /// Where the (innermost) L4 header starts, as an offset from the frame's first byte, when
    /// the packet's TCP or UDP checksum is left to the way out: written there as the
    /// pseudo-header sum of the packet as it leaves and completed downstream
    /// (`offload::partial`), whatever the field held on the way in. `None`: the field is kept,
    /// and kept right through NAT.
    #[inline]
    pub fn checksum_offload(&self) -> Option<usize> {
        (self.offload_l4 != 0).then_some(usize::from(self.offload_l4))
    }

    /// Leave the checksum of the L4 header at `l4` to the way out, or (`None`) keep it. An
    /// offset past 255 bytes, which no header stack kxdp handles reaches, is not recorded.
    #[inline]
    pub fn set_checksum_offload(&mut self, l4: Option<usize>) {
        self.offload_l4 = l4.and_then(|l4| u8::try_from(l4).ok()).unwrap_or(0);
    }

    /// Offset of the first byte in the buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head as usize
    }

    /// Bytes of the frame in this buffer (all of it but the [`Frame::tail`]).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The frame's bytes in this buffer (all its headers).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let head = self.head();
        &self.buf[head..head + self.len()]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let head = self.head();
        let end = head + self.len();
        &mut self.buf[head..end]
    }

    /// Grow the frame by `n` bytes at the front; false (and no change) without the headroom.
    #[inline]
    pub fn push_head(&mut self, n: usize) -> bool {
        if n > self.head() {
            return false;
        }
        // Within the headroom, so below the buffer's length, which fits a u32.
        let n = n as u32;
        self.head -= n;
        self.len += n;
        if self.offload_l4 != 0 {
            self.offload_l4 = u8::try_from(u32::from(self.offload_l4) + n).unwrap_or(0);
        }
        true
    }

    /// Remove `n` bytes from the front; false (and no change) if the frame is shorter.
    #[inline]
    pub fn pull_head(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        let n = n as u32;
        self.head += n;
        self.len -= n;
        if self.offload_l4 != 0 {
            self.offload_l4 = u32::from(self.offload_l4)
                .checked_sub(n)
                .filter(|l4| *l4 > 0)
                .map_or(0, |l4| l4 as u8);
        }
        true
    }

    /// Set the whole frame's length, growing into tailroom or shrinking; false (and no change)
    /// if the buffer is too small. A frame with a tail cannot grow past its end, shrinks its
    /// tail first, and loses the tail when cut to this buffer or less.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.tail > 0 {
            return self.set_len_with_tail(len);
        }
        if self.head() + len > self.buf.len() {
            return false;
        }
        // Within the buffer, so it fits a u32 (`new` refuses larger buffers).
        self.len = len as u32;
        true
    }

    /// [`Frame::set_len`] for a frame with a tail: out of line, as most frames have none.
    #[cold]
    #[inline(never)]
    fn set_len_with_tail(&mut self, len: usize) -> bool {
        if len >= self.len() {
            if len > self.total_len() {
                return false;
            }
            // At most the old tail, so it fits.
            self.tail = (len - self.len()) as u32;
            return true;
        }
        if self.head() + len > self.buf.len() {
            return false;
        }
        self.len = len as u32;
        self.tail = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_stays_four_words() {
        // The batch is an array of frames that every stage walks: a wider frame showed as a
        // few percent per packet in the pipeline benches.
        assert_eq!(std::mem::size_of::<Frame<'_>>(), 32);
    }

    #[test]
    fn head_and_tail_room_are_bounded_by_the_buffer() {
        let mut buf = [0u8; 32];
        assert!(Frame::new(&mut buf, 30, 3).is_none());
        let mut f = Frame::new(&mut buf, 8, 10).unwrap();
        assert!(!f.push_head(9));
        assert!(f.push_head(8));
        assert_eq!((f.head(), f.len()), (0, 18));
        assert!(f.pull_head(4));
        assert!(!f.pull_head(15));
        assert!(f.set_len(28));
        assert!(!f.set_len(29));
        assert_eq!(f.data().len(), 28);
    }

    #[test]
    fn a_tail_shrinks_but_never_grows_and_goes_when_cut_into_the_buffer() {
        let mut buf = [0u8; 32];
        let mut f = Frame::new(&mut buf, 8, 10).unwrap().with_tail(100);
        assert_eq!((f.len(), f.tail(), f.total_len()), (10, 100, 110));
        assert!(!f.set_len(111));
        assert!(f.set_len(60));
        assert_eq!((f.len(), f.tail()), (10, 50));
        assert!(f.set_len(10));
        assert_eq!((f.len(), f.tail()), (10, 0));
        let mut f = Frame::new(&mut buf, 8, 10).unwrap().with_tail(5);
        assert!(f.set_len(4), "into the buffer");
        assert_eq!((f.len(), f.tail(), f.total_len()), (4, 0, 4));
        // A push at the front keeps the tail.
        let mut f = Frame::new(&mut buf, 8, 10).unwrap().with_tail(5);
        assert!(f.push_head(8));
        assert_eq!((f.len(), f.tail()), (18, 5));
    }

    #[test]
    fn the_checksum_mark_moves_with_the_start_and_leaves_with_its_header() {
        let mut buf = [0u8; 400];
        let mut f = Frame::new(&mut buf, 100, 100).unwrap();
        assert_eq!(f.checksum_offload(), None);
        f.set_checksum_offload(Some(34));
        f.set_split(Split {
            mtu: 1500,
            vxlan: true,
        });
        assert!(f.push_head(50), "VXLAN encapsulation");
        assert_eq!(f.checksum_offload(), Some(84));
        assert_eq!(
            f.split(),
            Some(Split {
                mtu: 1500,
                vxlan: true
            })
        );
        assert!(f.pull_head(50));
        assert_eq!(f.checksum_offload(), Some(34));
        assert!(f.pull_head(34), "the L4 header now starts the frame");
        assert_eq!(f.checksum_offload(), None);
        f.set_checksum_offload(Some(300));
        assert_eq!(f.checksum_offload(), None, "past what is recorded");
        f.set_checksum_offload(Some(250));
        assert!(f.push_head(10));
        assert_eq!(f.checksum_offload(), None, "pushed past what is recorded");
    }
}
