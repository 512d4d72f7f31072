//! Cutting a streamed outboard into fixed-size rows.

use std::io;

use super::layout::OUTBOARD_PIECE_BYTES;

/// A `Write` that cuts what it receives into [`OUTBOARD_PIECE_BYTES`]-sized pieces and hands
/// each, with its index, to `emit` (the last one, possibly shorter, on [`finish`]).
///
/// [`finish`]: PieceWriter::finish
pub(super) struct PieceWriter<F> {
    piece: Vec<u8>,
    index: u64,
    emit: F,
}

impl<F: FnMut(u64, Vec<u8>) -> io::Result<()>> PieceWriter<F> {
    pub(super) fn new(emit: F) -> Self {
        Self {
            piece: Vec::new(),
            index: 0,
            emit,
        }
    }

    fn emit_piece(&mut self) -> io::Result<()> {
        let piece = std::mem::take(&mut self.piece);
        (self.emit)(self.index, piece)?;
        self.index += 1;
        Ok(())
    }

    /// Emits the last, partial piece.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        if !self.piece.is_empty() {
            self.emit_piece()?;
        }
        Ok(())
    }
}

impl<F: FnMut(u64, Vec<u8>) -> io::Result<()>> io::Write for PieceWriter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = OUTBOARD_PIECE_BYTES as usize - self.piece.len();
        let n = room.min(buf.len());
        self.piece.extend_from_slice(&buf[..n]);
        if self.piece.len() == OUTBOARD_PIECE_BYTES as usize {
            self.emit_piece()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn cuts_into_full_pieces_and_a_short_last_one() {
        let mut got = Vec::new();
        let mut w = PieceWriter::new(|i, p: Vec<u8>| {
            got.push((i, p.len()));
            Ok(())
        });
        let total = 2 * OUTBOARD_PIECE_BYTES as usize + 64;
        w.write_all(&vec![7u8; total]).expect("write");
        w.finish().expect("finish");
        drop(w);
        let full = OUTBOARD_PIECE_BYTES as usize;
        assert_eq!(got, vec![(0, full), (1, full), (2, 64)]);
    }
}
