//! A frame in a buffer with head- and tailroom, the unit the pipeline rewrites in place.

/// A frame occupying `buf[head..head + len]`. The bytes before `head` are headroom the pipeline
/// may grow into (VXLAN encapsulation prepends 50 bytes); the bytes after are tailroom (ICMP
/// errors quote the packet they answer). In AF_XDP terms `buf` is one UMEM chunk and `head` is
/// the descriptor's offset within it; the buffer is owned by the caller and only borrowed here.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes at `head` in `buf`, or `None` if that runs past the buffer.
    #[inline]
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Option<Self> {
        let end = head.checked_add(len)?;
        (end <= buf.len()).then_some(Frame { buf, head, len })
    }

    /// Offset of the first byte in the buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Frame length in bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    /// Grow the frame by `n` bytes at the front; false (and no change) without the headroom.
    #[inline]
    pub fn push_head(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }

    /// Remove `n` bytes from the front; false (and no change) if the frame is shorter.
    #[inline]
    pub fn pull_head(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    /// Set the length, growing into tailroom or shrinking; false (and no change) if the buffer
    /// is too small.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.head + len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
