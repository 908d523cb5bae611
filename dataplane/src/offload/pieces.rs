//! Reading a frame's payload across its pieces.

use crate::wire::checksum::{add_at, copy_and_sum};

/// A read position in a frame given as pieces.
#[derive(Debug, Clone)]
pub(super) struct Cursor<'a> {
    pieces: &'a [&'a [u8]],
    /// Index of the current piece.
    piece: usize,
    /// Offset in the current piece.
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at byte `offset` of the frame (or at its end, if it is shorter).
    pub(super) fn new(pieces: &'a [&'a [u8]], mut offset: usize) -> Self {
        let mut piece = 0;
        while let Some(p) = pieces.get(piece) {
            if offset < p.len() {
                break;
            }
            offset -= p.len();
            piece += 1;
        }
        Cursor {
            pieces,
            piece,
            at: offset,
        }
    }

    /// Copies the next `dst.len()` bytes into `dst` and returns their one's complement sum, as
    /// if `dst` were summed on its own (from an even offset). Bytes past the frame's end are
    /// left as they are in `dst`; the plans check the frame's length first.
    pub(super) fn copy_and_sum(&mut self, dst: &mut [u8]) -> u32 {
        let mut acc = 0;
        let mut done = 0;
        while done < dst.len() {
            let Some(piece) = self.pieces.get(self.piece) else {
                break;
            };
            let src = &piece[self.at..];
            let n = src.len().min(dst.len() - done);
            let part = copy_and_sum(&mut dst[done..done + n], &src[..n]);
            acc = add_at(acc, part, done);
            done += n;
            self.advance(n);
        }
        acc
    }

    /// Copies the next `dst.len()` bytes into `dst`, as [`Cursor::copy_and_sum`] without the sum.
    pub(super) fn copy(&mut self, dst: &mut [u8]) {
        let mut done = 0;
        while done < dst.len() {
            let Some(piece) = self.pieces.get(self.piece) else {
                break;
            };
            let src = &piece[self.at..];
            let n = src.len().min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&src[..n]);
            done += n;
            self.advance(n);
        }
    }

    /// Moves `n` bytes on within the current piece, to the next non-empty piece at its end.
    fn advance(&mut self, n: usize) {
        self.at += n;
        while self
            .pieces
            .get(self.piece)
            .is_some_and(|p| self.at >= p.len())
        {
            self.at = 0;
            self.piece += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{fold, sum};
    use fastrand::Rng;

    #[test]
    fn copies_and_sums_across_pieces_of_any_length() {
        let mut rng = Rng::with_seed(0x9ec3);
        for _ in 0..2000 {
            let len = rng.usize(1..3000);
            let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            // Cut into pieces of random (odd, even, empty) lengths.
            let mut cuts = vec![0, len];
            for _ in 0..rng.usize(0..6) {
                cuts.push(rng.usize(0..=len));
            }
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
            let start = rng.usize(0..len);
            let take = rng.usize(0..=len - start);
            let mut cursor = Cursor::new(&pieces, start);
            let mut out = vec![0u8; take];
            let s = cursor.copy_and_sum(&mut out);
            assert_eq!(out, &data[start..start + take]);
            assert_eq!(
                fold(s),
                fold(sum(&out, 0)),
                "len {len} start {start} take {take}"
            );
            // And the cursor continues where it stopped.
            let mut rest = vec![0u8; len - start - take];
            cursor.copy(&mut rest);
            assert_eq!(rest, &data[start + take..]);
        }
    }
}
