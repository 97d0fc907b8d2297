//! The byte layout of every record in shared data, written by [`Writer`] and read by
//! [`Reader`]: a format version, then fixed-width little-endian integers, fixed-size byte
//! arrays and length-prefixed bytes. Plain bytes, not JSON: no parsing on the hot path, and
//! no serde code in the .wasm for them. A record of another version reads as absent.

/// Builds a record front to back, led by its format version.
pub struct Writer(Vec<u8>);

impl Writer {
    /// `capacity`: the bytes expected after the version.
    pub fn new(version: u8, capacity: usize) -> Writer {
        let mut out = Vec::with_capacity(capacity + 1);
        out.push(version);
        Writer(out)
    }

    pub fn u8(&mut self, value: u8) -> &mut Writer {
        self.0.push(value);
        self
    }

    pub fn u16(&mut self, value: u16) -> &mut Writer {
        self.raw(&value.to_le_bytes())
    }

    pub fn u64(&mut self, value: u64) -> &mut Writer {
        self.raw(&value.to_le_bytes())
    }

    /// Bytes as they are: a fixed-size field, or the record's tail.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Writer {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Bytes with a `u32` length before them (longer inputs are cut at `u32::MAX`).
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Writer {
        let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
        self.raw(&(bytes.len() as u32).to_le_bytes()).raw(bytes)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads a record front to back; every read is `None` past the end.
pub struct Reader<'b>(pub &'b [u8]);

impl<'b> Reader<'b> {
    /// A reader after the format version, when it is `version`.
    pub fn open(bytes: &'b [u8], version: u8) -> Option<Reader<'b>> {
        let (&first, rest) = bytes.split_first()?;
        (first == version).then_some(Reader(rest))
    }

    /// A fixed-size field.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Everything left: the record's tail.
    pub fn rest(&mut self) -> &'b [u8] {
        std::mem::take(&mut self.0)
    }

    pub fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// Bytes written by [`Writer::bytes`], as UTF-8 text.
    pub fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// Nothing left: a record must be read to its end.
    pub fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_and_stops_at_the_end() {
        let out = Writer::new(3, 0).u8(7).u16(513).u64(9).bytes("héllo".as_bytes()).raw(b"ab").finish();
        assert_eq!(Reader::open(&out, 4).map(|_| ()), None, "another version");
        let mut r = Reader::open(&out, 3).unwrap();
        assert_eq!((r.u8(), r.u16(), r.u64()), (Some(7), Some(513), Some(9)));
        assert_eq!(r.string().as_deref(), Some("héllo"));
        assert_eq!(r.array::<2>(), Some(*b"ab"));
        assert!(r.is_done());
        let out = Writer::new(1, 0).u8(7).u16(513).u64(9).bytes("héllo".as_bytes()).finish();
        let mut r = Reader::open(&out, 1).unwrap();
        assert_eq!((r.u8(), r.u16(), r.u64()), (Some(7), Some(513), Some(9)));
        assert_eq!(r.string().as_deref(), Some("héllo"));
        assert!(r.is_done());
        assert_eq!(r.u8(), None);
        assert_eq!(Reader(&[5, 0, 0, 0, b'a']).string(), None);
        assert_eq!(Reader(&[2, 0, 0, 0, 0xff, 0xfe]).string(), None);
    }
}
