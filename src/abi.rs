//! Host calls made without the SDK's wrappers, which panic on any status they do not
//! expect (Envoy refuses a request-header change once the headers callback has returned,
//! a local reply on a stream already answered, a resume of a stream gone): the same calls of
//! the proxy-wasm ABI, with the status as a value.

use proxy_wasm::types::{MapType, Status, StreamType};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(map_type: MapType, key_data: *const u8, key_size: usize) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_continue_stream(stream_type: StreamType) -> Status;
}

// SAFETY (every call below): each pointer and length pair is a live slice for the whole
// call, and the host only reads it.

pub fn replace_header(map: MapType, name: &str, value: &str) -> Status {
    unsafe { proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len()) }
}

pub fn remove_header(map: MapType, name: &str) -> Status {
    unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) }
}

/// A local reply on the current stream (no gRPC status).
pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Status {
    let headers = serialized(headers);
    unsafe {
        proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    }
}

/// Lets the current stream's request go on.
pub fn continue_request() -> Status {
    unsafe { proxy_continue_stream(StreamType::HttpRequest) }
}

/// The ABI's map encoding: the count, each name's and value's length (little-endian `u32`),
/// then each name and value followed by a NUL.
fn serialized(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map.iter().map(|(n, v)| n.len() + v.len() + 10).sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (name, value) in map {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in map {
        for part in [name, value] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0);
        }
    }
    bytes
}
