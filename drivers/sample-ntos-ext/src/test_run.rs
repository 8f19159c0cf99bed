//! Test runs (`bpf_prog_test_run`) of the `process` program type: the context is the caller's
//! whole `process_notify_context_t` (its header included, as ntosebpfext copies it) with the
//! four strings packed in `data_in` copied into buffers of the run's own; afterwards both go
//! back out. The context has no padding (its padding bytes are named fields), so `ctx_out`
//! gives back every byte of `ctx_in` the run did not change, except: the pointers and the
//! core's two header slots (kernel addresses) are zero, an empty string's `MaximumLength` is
//! 0 (it has no buffer), and `account_lookup_done` is 0 or 1.

use core::ffi::c_void;
use core::ptr;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::AccountNames;
use ebpf_extension_common::sys::ebpf_result::{EBPF_INVALID_ARGUMENT, ebpf_result_t};

use crate::hook::TAG;
use crate::program::{NOTIFY_CONTEXT_SIZE, Notification, NotifyContext};

const _: () = assert!(
    NOTIFY_CONTEXT_SIZE == 296,
    "upstream's process_notify_context_t"
);

/// A test run's copies of the strings its context points to (the account strings' copies
/// handed to the context's [`AccountNames`]).
pub(crate) struct ProcessTestRun(PackedStrings<4>);

/// The context's strings, in the order `data_in` packs them.
fn strings(context: &mut NotifyContext) -> [&mut CountedString; 4] {
    [
        &mut context.command_line,
        &mut context.image_file_name,
        &mut context.account_name,
        &mut context.account_domain,
    ]
}

impl TestRun for ProcessTestRun {
    type Context = Notification;
    const TAG: PoolTag = TAG;

    /// The caller's context, with copies of the four strings packed in `data` (command line,
    /// image, account name, account domain).
    fn create(
        input: &TestRunInput<'_>,
    ) -> Result<(TestRunContext<Notification>, Self), ebpf_result_t> {
        let run: TestRunContext<NotifyContext> = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        let data = input.data().ok_or(EBPF_INVALID_ARGUMENT)?;
        let mut notify = run.context;
        let mut copies = PackedStrings::copy_in(data, strings(&mut notify), TAG)?;
        (notify.process, notify.create_info) = (ptr::null_mut(), ptr::null_mut());
        let done = notify.account_lookup_done != 0;
        let accounts = AccountNames::supplied(copies.take(2), copies.take(3), done, TAG);
        let mut notification = Notification { notify, accounts };
        notification.sync_accounts();
        let context = TestRunContext {
            header: run.header,
            context: notification,
        };
        Ok((context, ProcessTestRun(copies)))
    }

    /// The strings packed into `data_out` (the account ones as the run left them), then the
    /// context (the run's header first) with its pointers cleared into `ctx_out`.
    fn destroy(self, run: &mut TestRunContext<Notification>, output: &mut TestRunOutput) {
        let accounts = &run.context.accounts;
        output.write_data_parts(&[
            self.0.get(0),
            self.0.get(1),
            accounts.name().unwrap_or(&[]),
            accounts.domain().unwrap_or(&[]),
        ]);
        run.context.sync_accounts();
        let mut out = TestRunContext {
            header: run.header,
            context: run.context.notify,
        };
        let notify = &mut out.context;
        let null = ptr::null_mut::<c_void>();
        (notify.process, notify.create_info) = (null, null);
        for string in strings(notify) {
            *string = string.without_buffer();
        }
        output.write_header_and_context(&out);
    }

    /// Programs' data: the run's copy of the command line. (The context's `command_line`
    /// points at the same copy; only programs read it, through these bytes.)
    fn data(&mut self) -> TestRunData<'_> {
        TestRunData::Owned(self.0.get_mut(0))
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::vec::Vec;

    use ebpf_ext_core_sim::ProgramInfoClient;
    use ebpf_ext_usersim::Kernel;
    use ebpf_extension_common::prelude::ProgramInfoProvider;

    use crate::hook::TAG;
    use crate::program::{NOTIFY_CONTEXT_SIZE, PROGRAM_DATA, PROGRAM_TYPE};

    /// `process_notify_context_t` as upstream's test lays it out (296 bytes): header bytes
    /// 16–63 the caller's own, pid 7, a command line of `command` bytes, and padding bytes
    /// (after each string's `MaximumLength`, after `account_lookup_done`) that are not zero.
    fn context_in(command: u16) -> Vec<u8> {
        let mut ctx: Vec<u8> = (0..=u8::MAX).cycle().take(NOTIFY_CONTEXT_SIZE).collect();
        ctx[..16].fill(0);
        ctx[64..208].fill(0);
        ctx[64 + 16..64 + 24].copy_from_slice(&7u64.to_le_bytes());
        ctx[208..288].fill(0);
        for padding in [228, 244, 260, 276] {
            ctx[padding..padding + 4].copy_from_slice(b"pad!");
        }
        ctx[224..226].copy_from_slice(&command.to_le_bytes());
        ctx[226..228].copy_from_slice(&command.to_le_bytes());
        ctx[288] = 0;
        ctx
    }

    #[test]
    fn ctx_out_is_the_callers_context_with_the_run_header_and_no_kernel_addresses() {
        let kernel = Kernel::new();
        // SAFETY: the one provider of the type; no hook invokes its programs.
        let provider =
            unsafe { ProgramInfoProvider::register(&PROGRAM_DATA, TAG) }.expect("register");
        let client = ProgramInfoClient::attach(PROGRAM_TYPE).expect("attach");
        let data = b"c\0m\0d\0!\0!\0".to_vec();
        let ctx = context_in(10);
        let created = client.create_context(&data, &ctx).expect("create");
        let out = created
            .destroy(data.len(), NOTIFY_CONTEXT_SIZE)
            .expect("destroy");
        assert_eq!(
            (out.data_size_out, out.data.as_slice()),
            (10, data.as_slice())
        );
        assert_eq!(out.context_size_out, NOTIFY_CONTEXT_SIZE);
        assert_eq!(
            out.context[..16],
            [0; 16],
            "slots 0 and 1, the core's (kernel addresses): zero"
        );
        assert_eq!(
            out.context[16..64],
            ctx[16..64],
            "header bytes 16-63: the caller's"
        );
        assert_eq!(
            out.context[64..],
            ctx[64..],
            "the context, its pointers cleared"
        );
        drop(client);
        drop(provider);
        kernel.assert_no_leaks();
    }
}
