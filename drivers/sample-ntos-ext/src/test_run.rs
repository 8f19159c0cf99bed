//! Test runs (`bpf_prog_test_run`) of the `process` program type: the context is the caller's
//! whole `process_notify_context_t` (its header included, as ntosebpfext copies it) with the
//! four strings packed in `data_in` copied into buffers of the run's own; afterwards both go
//! back out, the pointers cleared.

use core::mem::offset_of;
use core::ptr;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::process::AccountNames;
use ebpf_extension_common::sys::ebpf_extension::EBPF_CONTEXT_HEADER_SIZE;
use ebpf_extension_common::sys::ebpf_result::{EBPF_INVALID_ARGUMENT, ebpf_result_t};
use ebpf_extension_common::sys::ntdef::UNICODE_STRING;

use crate::hook::TAG;
use crate::program::{NOTIFY_CONTEXT_SIZE, Notification, NotifyContext, ProcessContext};

const _: () = assert!(size_of::<TestRunContext<NotifyContext>>() == NOTIFY_CONTEXT_SIZE);

/// A test run's copies of the strings its context points to (the account strings' copies
/// handed to the context's [`AccountNames`]), and the caller's `ctx_in` as it came: `ctx_out`
/// is those bytes with the fields the run changed written over them, so every padding byte
/// is the caller's, as in upstream's byte copy (a typed copy would leave them unspecified:
/// kernel memory going out to the caller).
pub(crate) struct ProcessTestRun(PackedStrings<4>, [u8; NOTIFY_CONTEXT_SIZE]);

/// Writes `bytes` at `offset` of `out`.
fn put(out: &mut [u8], offset: usize, bytes: &[u8]) {
    out[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// `context` as `ctx_out` bytes: the caller's `ctx_in` with the header, what programs see,
/// the string lengths (pointers cleared) and the lookup flag written over it.
fn context_out(
    mut out: [u8; NOTIFY_CONTEXT_SIZE],
    header: &[u64; 8],
    notify: &NotifyContext,
) -> [u8; NOTIFY_CONTEXT_SIZE] {
    for (slot, value) in header.iter().enumerate() {
        put(&mut out, slot * 8, &value.to_ne_bytes());
    }
    let p = &notify.public;
    let at = |field: usize| EBPF_CONTEXT_HEADER_SIZE + field;
    put(&mut out, at(offset_of!(NotifyContext, public)), &[0; 16]);
    for (offset, value) in [
        (offset_of!(ProcessContext, process_id), p.process_id),
        (
            offset_of!(ProcessContext, parent_process_id),
            p.parent_process_id,
        ),
        (
            offset_of!(ProcessContext, creating_process_id),
            p.creating_process_id,
        ),
        (
            offset_of!(ProcessContext, creating_thread_id),
            p.creating_thread_id,
        ),
        (offset_of!(ProcessContext, creation_time), p.creation_time),
        (offset_of!(ProcessContext, exit_time), p.exit_time),
    ] {
        put(&mut out, at(offset), &value.to_ne_bytes());
    }
    for (offset, value) in [
        (
            offset_of!(ProcessContext, process_exit_code),
            p.process_exit_code,
        ),
        (offset_of!(ProcessContext, operation), p.operation),
        (offset_of!(ProcessContext, token_sid_size), p.token_sid_size),
    ] {
        put(&mut out, at(offset), &value.to_ne_bytes());
    }
    put(
        &mut out,
        at(offset_of!(ProcessContext, token_sid)),
        &p.token_sid,
    );
    put(&mut out, at(offset_of!(NotifyContext, process)), &[0; 16]);
    for (offset, string) in [
        (
            offset_of!(NotifyContext, command_line),
            &notify.command_line,
        ),
        (
            offset_of!(NotifyContext, image_file_name),
            &notify.image_file_name,
        ),
        (
            offset_of!(NotifyContext, account_name),
            &notify.account_name,
        ),
        (
            offset_of!(NotifyContext, account_domain),
            &notify.account_domain,
        ),
    ] {
        put(&mut out, at(offset), &string.Length.to_ne_bytes());
        put(
            &mut out,
            at(offset) + 2,
            &string.MaximumLength.to_ne_bytes(),
        );
        put(
            &mut out,
            at(offset + offset_of!(UNICODE_STRING, Buffer)),
            &[0; 8],
        );
    }
    put(
        &mut out,
        at(offset_of!(NotifyContext, account_lookup_done)),
        &[notify.account_lookup_done],
    );
    out
}

fn strings(context: &mut NotifyContext) -> [&mut UNICODE_STRING; 4] {
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
        let caller: [u8; NOTIFY_CONTEXT_SIZE] = input.context().ok_or(EBPF_INVALID_ARGUMENT)?;
        let data = input.data().ok_or(EBPF_INVALID_ARGUMENT)?;
        let mut notify = run.context;
        let mut copies = PackedStrings::copy_in(data, strings(&mut notify), TAG)?;
        let command = &notify.command_line;
        notify.public.command_start = command.Buffer.cast();
        notify.public.command_end = command
            .Buffer
            .cast::<u8>()
            .wrapping_add(command.Length.into());
        (notify.process, notify.create_info) = (ptr::null_mut(), ptr::null_mut());
        let done = notify.account_lookup_done != 0;
        let accounts = AccountNames::supplied(copies.take(2), copies.take(3), done, TAG);
        let mut notification = Notification { notify, accounts };
        notification.sync_accounts();
        let context = TestRunContext {
            header: run.header,
            context: notification,
        };
        Ok((context, ProcessTestRun(copies, caller)))
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
        output.write_context(&context_out(self.1, &run.header, &run.context.notify));
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
    fn ctx_out_is_the_callers_context_with_the_run_header_and_no_pointers() {
        let kernel = Kernel::new();
        let provider = ProgramInfoProvider::register(&PROGRAM_DATA, TAG).expect("register");
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
        assert_ne!(
            out.context[8..16],
            [0; 8],
            "slot 1: the core's context descriptor"
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
