//! The protobuf wire format, as far as the rate-limit service's messages need it: varints,
//! length-delimited fields, and skipping every field this reader does not know (new fields
//! of the service's API are ignored, as protobuf intends).

/// Wire types (protobuf encoding guide).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

/// Appends field `number` as a varint.
pub fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3 | u64::from(VARINT));
    put_varint(out, value);
}

/// Appends field `number` as length-delimited bytes (a string or an embedded message).
pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, u64::from(number) << 3 | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A field's value as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed 32- or 64-bit values: no field read here has one.
    Fixed,
}

/// The fields of one message, in order: `(number, value)`.
pub struct Fields<'a> {
    rest: &'a [u8],
}

pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.read_field();
        if field.is_err() {
            // Nothing after a malformed field can be trusted.
            self.rest = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read_field(&mut self) -> Result<(u32, Value<'a>), DecodeError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| DecodeError)?;
        if number == 0 {
            return Err(DecodeError);
        }
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError)?;
                Value::Bytes(self.take(len)?)
            }
            FIXED64 => self.take(8).map(|_| Value::Fixed)?,
            FIXED32 => self.take(4).map(|_| Value::Fixed)?,
            // Groups (3, 4) are deprecated and never used by this API; 6 and 7 do not exist.
            _ => return Err(DecodeError),
        };
        Ok((number, value))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(DecodeError)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.rest.len() {
            return Err(DecodeError);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_varints_and_bytes() {
        let mut out = Vec::new();
        put_varint_field(&mut out, 1, 300);
        put_bytes_field(&mut out, 2, b"tokengate");
        put_varint_field(&mut out, 3, u64::MAX);
        // The encoding guide's example: field 1 = 150 is 08 96 01.
        let mut example = Vec::new();
        put_varint_field(&mut example, 1, 150);
        assert_eq!(example, [0x08, 0x96, 0x01]);
        let read: Vec<_> = fields(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            read,
            [(1, Value::Varint(300)), (2, Value::Bytes(b"tokengate")), (3, Value::Varint(u64::MAX))]
        );
    }

    #[test]
    fn skips_fixed_width_fields() {
        let bytes = [0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x15, 1, 2, 3, 4, 0x18, 7];
        let read: Vec<_> = fields(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, [(1, Value::Fixed), (2, Value::Fixed), (3, Value::Varint(7))]);
    }

    #[test]
    fn refuses_truncated_and_malformed_input() {
        for bad in [&[0x0a, 5, b'a'][..], &[0x08], &[0x08, 0xff], &[0x0b], &[0x00, 1], &[0xff; 11]] {
            assert!(fields(bad).any(|f| f.is_err()), "{bad:?}");
        }
    }
}
