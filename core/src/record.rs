//! The byte layout of records in shared data: fixed-width little-endian integers and
//! length-prefixed bytes, each record led by a format version. Plain bytes, not JSON: no
//! parsing on the hot path, and no serde code in the .wasm for them.

/// Appends `bytes` with a `u32` length before them (longer inputs are cut at `u32::MAX`).
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a record front to back; every read is `None` past the end.
pub struct Reader<'b>(pub &'b [u8]);

impl<'b> Reader<'b> {
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

    /// Bytes written by [`put_bytes`], as UTF-8 text.
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
        let mut out = vec![7];
        out.extend_from_slice(&513u16.to_le_bytes());
        out.extend_from_slice(&9u64.to_le_bytes());
        put_bytes(&mut out, "héllo".as_bytes());
        let mut r = Reader(&out);
        assert_eq!((r.u8(), r.u16(), r.u64()), (Some(7), Some(513), Some(9)));
        assert_eq!(r.string().as_deref(), Some("héllo"));
        assert!(r.is_done());
        assert_eq!(r.u8(), None);
        assert_eq!(Reader(&[5, 0, 0, 0, b'a']).string(), None);
        assert_eq!(Reader(&[2, 0, 0, 0, 0xff, 0xfe]).string(), None);
    }
}
