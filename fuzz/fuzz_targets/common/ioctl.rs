//! What the two IOCTL targets share: who opens the device, the lengths a request may have,
//! which of the SDK's requests are well formed, and what their test programs do to the data
//! they see. Included by those targets as
//! `#[path = "common/ioctl.rs"] mod ioctl;`.

use arbitrary::Arbitrary;
use ebpf_ext_usersim::Caller;
use ebpf_extension_common::profile::{
    MAX_ITERATIONS, PROFILE_AT_DISPATCH, ProfileReply, ProfileRequest,
};

/// What an input longer than the request is filled with (not usersim's `STALE_BYTE`, so bytes
/// the driver echoes are told from stale ones).
pub const INPUT_FILL: u8 = 0x5C;

/// Who opens the control device.
#[derive(Arbitrary, Debug)]
pub enum Who {
    System,
    Administrator,
    User,
}

impl Who {
    /// usersim's caller.
    pub fn caller(&self) -> Caller {
        match self {
            Who::System => Caller::System,
            Who::Administrator => Caller::Administrator,
            Who::User => Caller::User,
        }
    }
}

/// An input or output length.
#[derive(Arbitrary, Debug)]
pub enum Length {
    /// What the request needs (input: header + data; output: the reply, and the data where
    /// the reply carries it).
    Exact,
    Any(u16),
}

impl Length {
    /// The length: `exact`, or the one the input chose.
    pub fn or_exact(&self, exact: usize) -> usize {
        match self {
            Length::Exact => exact,
            Length::Any(n) => usize::from(*n),
        }
    }
}

/// What one run of a target's test program does to the data it sees: adds the data's byte
/// sum (with bit 0 set) to its first byte.
pub fn touch(data: &mut [u8]) {
    if let Some(&first) = data.first() {
        let sum = data.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        data[0] = first.wrapping_add(sum | 1);
    }
}

/// `data` as `runs` runs of the test program leave it.
pub fn touched(data: &[u8], runs: u32) -> Vec<u8> {
    let mut data = data.to_vec();
    for _ in 0..runs {
        touch(&mut data);
    }
    data
}

/// The payload length of a request of `bytes` whose header is `header` bytes and announces
/// `data_len` payload bytes: `Some` when the input is exactly the header and the payload, and
/// the payload is at most `max` bytes (what the SDK checks of every typed request).
pub fn payload_len(bytes: &[u8], header: usize, data_len: u32, max: usize) -> Option<usize> {
    let len = usize::try_from(data_len).ok()?;
    (bytes.len() == header + len && len <= max).then_some(len)
}

/// The parameter of an SDK profile request in `bytes` that the SDK accepts with `output_len`
/// bytes of room: the `version`, an exact input with a payload up to `max`, iterations in
/// range, known flags and room for the reply; `None` for any it refuses.
pub fn well_formed_profile(
    bytes: &[u8],
    output_len: usize,
    version: u32,
    max: usize,
) -> Option<u32> {
    let request = ProfileRequest::from_bytes(bytes)?;
    payload_len(bytes, ProfileRequest::SIZE, request.data_len, max)?;
    (request.version == version
        && (1..=MAX_ITERATIONS).contains(&request.iterations)
        && request.flags & !PROFILE_AT_DISPATCH == 0
        && output_len >= ProfileReply::SIZE)
        .then_some(request.parameter)
}
