//! What the two IOCTL targets share: who opens the device, the lengths a request may have, and
//! what their test programs do to the data they see. Included by those targets as
//! `#[path = "common/ioctl.rs"] mod ioctl;`.

use arbitrary::Arbitrary;
use ebpf_ext_usersim::Caller;

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
