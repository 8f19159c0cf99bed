//! A profile control code: user mode has the driver fire its hook a number of times over one
//! payload and learns, from the performance counter read in the driver, how long that took.
//! Upstream's sample extension has one (`IOCTL_SAMPLE_EBPF_EXT_CTL_PROFILE`); with this module
//! an extension declares its own in one line and writes only how to fire the hook once.
//!
//! The layouts ([`ProfileRequest`], [`ProfileReply`]) and the checks are the SDK's; the
//! extension chooses the control code, the version its requests start with and the most
//! payload ([`Profile`]), and what [`ProfileRequest::parameter`] means to it:
//!
//! ```ignore
//! pub type Profile = profile::Profile<IOCTL_MY_PROFILE, REQUEST_VERSION, MAX_PACKET>;
//! // In `ExtensionDriver::device_control`:
//! Profile::CODE => request.handle::<Profile>(|call| {
//!     call.profile(TAG, |request, packet| {
//!         let context = MyContext { interface_id: request.parameter, ..MyContext::default() };
//!         let mut context = ProgramContext::with_data(context, packet);
//!         self.hook.invoke_until(&request.parameter, &mut context, |_| false)
//!     })
//! }),
//! ```

use ebpf_ext_hook::Invocation;
use ebpf_ext_pool::PoolTag;
use ebpf_ext_sys::ntdef::KIRQL;
use ebpf_ext_sys::wdm::DISPATCH_LEVEL;

use crate::ioctl::{Call, Completion, Ioctl, Refusal};
use crate::irql::{Stopwatch, repeat};

/// [`ProfileRequest::flags`]: fire the hook at DISPATCH_LEVEL, as a network stack runs its
/// hooks, in stretches of [`DISPATCH_STRETCH`] with the IRQL lowered in between. Refused by a
/// [`Profile`] whose `MAX_IRQL` is below DISPATCH_LEVEL.
pub const PROFILE_AT_DISPATCH: u32 = 0x1;
/// Most iterations one request may ask for.
pub const MAX_ITERATIONS: u64 = 10_000_000;
/// Iterations a request with [`PROFILE_AT_DISPATCH`] runs at DISPATCH_LEVEL before the IRQL
/// is lowered again, so that a long run cannot hold the processor until the DPC watchdog
/// bug-checks.
pub const DISPATCH_STRETCH: u64 = 64;

crate::wire! {
    /// A profile request's header (24 bytes); `data_len` payload bytes follow.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ProfileRequest {
        /// The extension's request version ([`Profile`]'s `VERSION`).
        pub version: u32,
        /// For the extension's fire function: what selects the programs (an attach
        /// parameter, an interface id), as the extension documents.
        pub parameter: u32,
        /// Times to fire the hook, 1..=[`MAX_ITERATIONS`].
        pub iterations: u64,
        /// [`PROFILE_AT_DISPATCH`] or 0.
        pub flags: u32,
        /// Payload length: the input is exactly this header and `data_len` bytes.
        pub data_len: u32,
    }

    /// A profile reply (32 bytes).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ProfileReply {
        /// Performance-counter ticks the iterations took, the IRQL changes included.
        pub duration: u64,
        /// Performance-counter ticks per second.
        pub frequency: u64,
        /// Iterations run.
        pub iterations: u64,
        /// The last iteration's result ([`Invocation::result`]).
        pub result: u32,
        /// Programs the last iteration ran ([`Invocation::programs_run`]).
        pub programs_run: u32,
    }
}

/// A profile control code: requests are [`ProfileRequest`]s that start with `VERSION` and
/// carry at most `MAX_PAYLOAD` bytes; replies are [`ProfileReply`]s. The SDK refuses, with
/// `STATUS_INVALID_PARAMETER` and a trace event, `iterations` outside
/// 1..=[`MAX_ITERATIONS`] and any flag but [`PROFILE_AT_DISPATCH`], besides what
/// [`Request::handle`](crate::ioctl::Request::handle) refuses for every code. `CODE` is a
/// `METHOD_BUFFERED` control code.
///
/// `MAX_IRQL` is the highest IRQL the hook's programs and helpers may run at: the program
/// type's `required_irql` (`ProgramData::with_required_irql`). Below DISPATCH_LEVEL, requests
/// with [`PROFILE_AT_DISPATCH`] are refused as well, so that user mode cannot make a helper
/// that needs PASSIVE_LEVEL run at DISPATCH_LEVEL (a bug check on Windows). The default,
/// DISPATCH_LEVEL, suits hooks a network stack fires; a program type that runs at
/// PASSIVE_LEVEL, as a process hook's, names `PASSIVE_LEVEL`.
#[derive(Debug)]
pub enum Profile<
    const CODE: u32,
    const VERSION: u32,
    const MAX_PAYLOAD: usize,
    const MAX_IRQL: KIRQL = DISPATCH_LEVEL,
> {}

impl<const CODE: u32, const VERSION: u32, const MAX_PAYLOAD: usize, const MAX_IRQL: KIRQL> Ioctl
    for Profile<CODE, VERSION, MAX_PAYLOAD, MAX_IRQL>
{
    const CODE: u32 = CODE;
    type Request = ProfileRequest;
    type Reply = ProfileReply;
    const VERSION: Option<u32> = Some(VERSION);
    const MAX_PAYLOAD: usize = MAX_PAYLOAD;

    fn payload_len(request: &ProfileRequest) -> Option<usize> {
        Some(usize::try_from(request.data_len).unwrap_or(usize::MAX))
    }

    fn check_fields(request: &ProfileRequest) -> Result<(), &'static str> {
        if !(1..=MAX_ITERATIONS).contains(&request.iterations) {
            return Err("`iterations` out of range");
        }
        if request.flags & !PROFILE_AT_DISPATCH != 0 {
            return Err("`flags` out of range");
        }
        if request.flags & PROFILE_AT_DISPATCH != 0 && MAX_IRQL < DISPATCH_LEVEL {
            return Err(
                "`flags`: PROFILE_AT_DISPATCH, but the hook's programs run below DISPATCH_LEVEL",
            );
        }
        Ok(())
    }
}

impl<const CODE: u32, const VERSION: u32, const MAX_PAYLOAD: usize, const MAX_IRQL: KIRQL>
    Call<'_, Profile<CODE, VERSION, MAX_PAYLOAD, MAX_IRQL>>
{
    /// Runs the request: calls `fire` `iterations` times with the request and one copy of the
    /// payload in non-paged pool (tagged `tag`; the programs may change it, and each
    /// iteration sees what the last left), at DISPATCH_LEVEL in stretches of
    /// [`DISPATCH_STRETCH`] with [`PROFILE_AT_DISPATCH`], and replies with the time it took
    /// and the last iteration's [`Invocation`]. The payload does not go back to user mode.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` if the payload cannot be copied; the first failure of
    /// `fire`, as [`Refusal::from_invocation`] maps it (no program attached:
    /// `STATUS_NOT_FOUND`).
    ///
    /// # IRQL
    /// Below DISPATCH_LEVEL (a dispatch routine runs at PASSIVE_LEVEL): up to
    /// [`MAX_ITERATIONS`] calls, as many as user mode asks for, must give the processor back
    /// between stretches, and called at DISPATCH_LEVEL they could not. `fire` runs at
    /// DISPATCH_LEVEL with [`PROFILE_AT_DISPATCH`], else at the caller's IRQL.
    pub fn profile(
        self,
        tag: PoolTag,
        mut fire: impl FnMut(&ProfileRequest, &mut [u8]) -> ebpf_ext_sys::Result<Invocation>,
    ) -> Result<Completion, Refusal> {
        let request = *self.request();
        // The reply overwrites the input, so the payload gets its own copy.
        let mut payload = self.payload_copy(tag)?;
        let stretch = (request.flags & PROFILE_AT_DISPATCH != 0).then_some(DISPATCH_STRETCH);
        let mut last = Invocation {
            result: 0,
            programs_run: 0,
        };
        let watch = Stopwatch::start();
        repeat(request.iterations, stretch, || {
            last = fire(&request, &mut payload)?;
            Ok(())
        })
        .map_err(Refusal::from_invocation)?;
        Ok(self.reply(&ProfileReply {
            duration: watch.elapsed_ticks(),
            frequency: watch.frequency(),
            iterations: request.iterations,
            result: last.result,
            programs_run: last.programs_run,
        }))
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::vec::Vec;

    use ebpf_ext_sys::Error;
    use ebpf_ext_sys::intrin::KeGetCurrentIrql;
    use ebpf_ext_sys::ntstatus::{
        STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
        STATUS_UNSUCCESSFUL,
    };
    use ebpf_ext_sys::wdm::{DISPATCH_LEVEL, PASSIVE_LEVEL};
    use ebpf_ext_usersim::Kernel;

    use super::*;
    use crate::ioctl::Request;

    /// The tests' profile code, for programs that may run at up to `MAX_IRQL`.
    type TestAt<const MAX_IRQL: KIRQL> = Profile<0x22_2010, 0x5052_4F46, 16, MAX_IRQL>;
    const NONE: Invocation = Invocation {
        result: 0,
        programs_run: 0,
    };
    const TAG: PoolTag = PoolTag::new(*b"Prof");

    fn input(iterations: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
        let header = ProfileRequest {
            version: 0x5052_4F46,
            parameter: 9,
            iterations,
            flags,
            data_len: u32::try_from(payload.len()).expect("short"),
        };
        [&header.to_bytes()[..], payload].concat()
    }

    /// Runs a request through `profile` over an 8-aligned buffer; the completion and the
    /// reply's bytes.
    fn send(
        input: &[u8],
        fire: impl FnMut(&ProfileRequest, &mut [u8]) -> ebpf_ext_sys::Result<Invocation>,
    ) -> (Completion, Option<ProfileReply>) {
        send_at::<DISPATCH_LEVEL>(input, fire)
    }

    /// [`send`] to the profile code of programs that may run at up to `MAX_IRQL`.
    fn send_at<const MAX_IRQL: KIRQL>(
        input: &[u8],
        fire: impl FnMut(&ProfileRequest, &mut [u8]) -> ebpf_ext_sys::Result<Invocation>,
    ) -> (Completion, Option<ProfileReply>) {
        let mut storage = [0u64; 8];
        // SAFETY: the u64 storage viewed as its 64 bytes.
        let buffer = unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr().cast(), 64) };
        buffer[..input.len()].copy_from_slice(input);
        let completion = Request::new(
            TestAt::<MAX_IRQL>::CODE,
            buffer,
            input.len(),
            ProfileReply::SIZE,
        )
        .handle::<TestAt<MAX_IRQL>>(|call| call.profile(TAG, fire));
        let reply = ProfileReply::from_bytes(&buffer[..completion.information()]);
        (completion, reply)
    }

    #[test]
    fn every_iteration_fires_over_one_copy_of_the_payload_and_the_last_is_reported() {
        let kernel = Kernel::new();
        let mut seen = Vec::new();
        let (completion, reply) = send(&input(3, 0, &[1, 2]), |request, payload| {
            seen.push((request.parameter, payload.to_vec(), KeGetCurrentIrql()));
            payload[0] += 1;
            Ok(Invocation {
                result: u32::from(payload[0]),
                programs_run: 2,
            })
        });
        assert_eq!(completion.status(), STATUS_SUCCESS);
        let reply = reply.expect("reply");
        assert_eq!(
            (reply.iterations, reply.result, reply.programs_run),
            (3, 4, 2)
        );
        assert_ne!(reply.frequency, 0);
        let at = PASSIVE_LEVEL;
        assert_eq!(
            seen,
            [
                (9, [1, 2].to_vec(), at),
                (9, [2, 2].to_vec(), at),
                (9, [3, 2].to_vec(), at)
            ],
            "each iteration sees what the last left, at the caller's IRQL"
        );
        kernel.assert_no_leaks();
    }

    #[test]
    fn at_dispatch_the_irql_is_lowered_between_stretches() {
        let kernel = Kernel::new();
        let raises = kernel.irql_raises();
        let mut levels = Vec::new();
        let (completion, _) = send(&input(200, PROFILE_AT_DISPATCH, &[]), |_, _| {
            levels.push(KeGetCurrentIrql());
            Ok(NONE)
        });
        assert_eq!(completion.status(), STATUS_SUCCESS);
        assert_eq!(levels.len(), 200);
        assert!(levels.iter().all(|&irql| irql == DISPATCH_LEVEL));
        assert_eq!(
            kernel.irql_raises() - raises,
            200u64.div_ceil(DISPATCH_STRETCH)
        );
        assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
        kernel.assert_no_leaks();
    }

    #[test]
    fn a_profile_of_programs_that_run_below_dispatch_refuses_to_raise() {
        tracelogging::define_provider!(
            PROVIDER,
            "ProfilePassiveTest",
            id("5d7e1f3a-2b4c-4d6e-8f90-a1b2c3d4e5f8")
        );
        let kernel = Kernel::new();
        let tracing = ebpf_ext_trace::Tracing::start(&PROVIDER).expect("tracing");
        let mut levels = Vec::new();
        let mut fire = |_: &ProfileRequest, _: &mut [u8]| {
            levels.push(KeGetCurrentIrql());
            Ok(NONE)
        };
        let (refused, _) = send_at::<PASSIVE_LEVEL>(&input(3, PROFILE_AT_DISPATCH, &[]), &mut fire);
        assert_eq!(refused.status(), STATUS_INVALID_PARAMETER);
        assert_eq!(
            kernel.etw_messages_containing("but the hook's programs run below DISPATCH_LEVEL"),
            1
        );
        let (ran, _) = send_at::<PASSIVE_LEVEL>(&input(3, 0, &[]), &mut fire);
        assert_eq!(ran.status(), STATUS_SUCCESS);
        assert_eq!(
            levels, [PASSIVE_LEVEL; 3],
            "only the request without the flag fired, at PASSIVE_LEVEL"
        );
        drop(tracing);
        kernel.assert_no_leaks();
    }

    #[test]
    fn the_first_failure_stops_the_run_and_is_the_status() {
        let kernel = Kernel::new();
        let mut calls = 0;
        let (completion, reply) = send(&input(5, 0, &[0; 4]), |_, _| {
            calls += 1;
            if calls == 2 {
                Err(Error::ObjectNotFound)
            } else {
                Ok(NONE)
            }
        });
        assert_eq!(
            (completion.status(), completion.information(), calls),
            (STATUS_NOT_FOUND, 0, 2)
        );
        assert_eq!(reply, None);
        kernel.assert_no_leaks();
    }

    #[test]
    fn out_of_range_iterations_flags_and_payloads_are_refused_before_firing() {
        tracelogging::define_provider!(
            PROVIDER,
            "ProfileRangeTest",
            id("5d7e1f3a-2b4c-4d6e-8f90-a1b2c3d4e5f7")
        );
        let kernel = Kernel::new();
        let tracing = ebpf_ext_trace::Tracing::start(&PROVIDER).expect("tracing");
        let mut wrong_version = input(1, 0, &[]);
        wrong_version[0] ^= 1;
        let cases = [
            (input(0, 0, &[]), STATUS_INVALID_PARAMETER),
            (input(MAX_ITERATIONS + 1, 0, &[]), STATUS_INVALID_PARAMETER),
            (input(1, 0x2, &[]), STATUS_INVALID_PARAMETER),
            (input(1, 0, &[0; 17]), STATUS_INVALID_PARAMETER),
            (wrong_version, STATUS_REVISION_MISMATCH),
        ];
        for (bytes, status) in cases {
            let (completion, _) = send(&bytes, |_, _| panic!("fired a refused request"));
            assert_eq!(completion.status(), status);
        }
        let traced = |why| kernel.etw_messages_containing(why);
        assert_eq!(traced("`iterations` out of range"), 2);
        assert_eq!(traced("`flags` out of range"), 1);
        let mut fired = 0;
        let (completion, _) = send(&input(MAX_ITERATIONS, 0, &[0; 16]), |_, _| {
            fired += 1;
            Err(Error::Unsuccessful)
        });
        assert_eq!(
            (completion.status(), fired),
            (STATUS_UNSUCCESSFUL, 1),
            "the largest request passes the checks and fires"
        );
        drop(tracing);
        kernel.assert_no_leaks();
    }
}
