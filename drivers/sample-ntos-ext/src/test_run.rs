//! Test runs (`bpf_prog_test_run`) of the `process` program type: `context_create` builds the
//! notify routine's context from `process_notify_context_t` and the strings packed in
//! `data_in`; `context_destroy` copies both back out and frees them.

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr;

use ebpf_extension_common::prelude::*;
use ebpf_extension_common::sys::ebpf_result::{
    EBPF_INVALID_ARGUMENT, EBPF_NO_MEMORY, EBPF_SUCCESS, ebpf_result_t,
};
use ebpf_extension_common::sys::ntdef::UNICODE_STRING;

use crate::hook::TAG;
use crate::program::{NOTIFY_CONTEXT_SIZE, NotifyContext, copy_string};

/// What `context_create` allocates: the context and the copies its strings point to.
struct TestRun {
    context: ProgramContext<NotifyContext>,
    _strings: [Option<PoolArray<u8>>; 4],
}

/// Where the program's context lies in a [`TestRun`].
const PUBLIC_OFFSET: usize = offset_of!(TestRun, context)
    + offset_of!(ProgramContext<NotifyContext>, context)
    + offset_of!(NotifyContext, public);

fn strings(context: &mut NotifyContext) -> [&mut UNICODE_STRING; 4] {
    [
        &mut context.command_line,
        &mut context.image_file_name,
        &mut context.account_name,
        &mut context.account_domain,
    ]
}

/// Builds a test-run context from `process_notify_context_t` and the four strings packed in
/// `data` (command line, image, account name, account domain).
fn create(
    mut context: NotifyContext,
    data: Option<&[u8]>,
) -> Result<PoolBox<TestRun>, ebpf_result_t> {
    let mut data = data.ok_or(EBPF_INVALID_ARGUMENT)?;
    let strings_in = strings(&mut context);
    let total: usize = strings_in.iter().map(|s| usize::from(s.Length)).sum();
    if data.len() < total || strings_in.iter().any(|s| s.Length > s.MaximumLength) {
        return Err(EBPF_INVALID_ARGUMENT);
    }
    let mut owned = [None, None, None, None];
    for (string, slot) in strings_in.into_iter().zip(&mut owned) {
        let (len, max) = (
            usize::from(string.Length),
            usize::from(string.MaximumLength),
        );
        string.Buffer = ptr::null_mut();
        if len == 0 {
            string.MaximumLength = 0;
            continue;
        }
        let mut copy = PoolArray::try_new(max, TAG).map_err(|_| EBPF_NO_MEMORY)?;
        let (bytes, rest) = data.split_at(len);
        copy[..len].copy_from_slice(bytes);
        data = rest;
        string.Buffer = copy.as_mut_ptr().cast();
        *slot = Some(copy);
    }
    let command = &context.command_line;
    context.public.command_start = command.Buffer.cast();
    context.public.command_end = command
        .Buffer
        .cast::<u8>()
        .wrapping_add(command.Length.into());
    (context.process, context.create_info) = (ptr::null_mut(), ptr::null_mut());
    let run = TestRun {
        context: ProgramContext::new(context),
        _strings: owned,
    };
    PoolBox::try_new(run, TAG).map_err(|_| EBPF_NO_MEMORY)
}

pub(crate) unsafe extern "win64" fn context_create(
    data: *const u8,
    data_size: usize,
    context_in: *const u8,
    context_size: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    // SAFETY: the core passes a writable out slot.
    unsafe { context.write(ptr::null_mut()) };
    if context_in.is_null() || context_size < NOTIFY_CONTEXT_SIZE {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: `context_size` readable bytes (checked ≥ the struct); every field is an integer
    // or a raw pointer, valid for any bits, and the pointers are replaced before any use.
    let input = unsafe {
        context_in
            .wrapping_add(64)
            .cast::<NotifyContext>()
            .read_unaligned()
    };
    // SAFETY: NULL or `data_size` readable bytes, for the duration of the call.
    let data = (!data.is_null()).then(|| unsafe { core::slice::from_raw_parts(data, data_size) });
    match create(input, data) {
        Ok(run) => {
            let public = run
                .into_raw()
                .as_ptr()
                .cast::<u8>()
                .wrapping_add(PUBLIC_OFFSET);
            // SAFETY: as above.
            unsafe { context.write(public.cast()) };
            EBPF_SUCCESS
        }
        Err(error) => error,
    }
}

pub(crate) unsafe extern "win64" fn context_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size: *mut usize,
    context_out: *mut u8,
    context_size: *mut usize,
) {
    let public = context.cast::<u8>();
    let Some(start) =
        ptr::NonNull::new(public.wrapping_sub(PUBLIC_OFFSET)).filter(|_| !public.is_null())
    else {
        return;
    };
    // SAFETY: a context `context_create` made (`start` is its box), handed back once.
    let run = unsafe { PoolBox::from_raw(start.cast::<TestRun>(), TAG) };
    let mut out = run.context.context;
    // SAFETY: the core passes the capacities in both size slots, NULL buffers with any size.
    let data_capacity = unsafe { *data_size };
    // SAFETY: as above.
    let context_capacity = unsafe { *context_size };
    let total: usize = strings(&mut out)
        .iter()
        .map(|s| usize::from(s.Length))
        .sum();
    let mut written = 0;
    if !data_out.is_null() && data_capacity >= total {
        // SAFETY: `data_capacity` writable bytes.
        let mut rest = unsafe { core::slice::from_raw_parts_mut(data_out, data_capacity) };
        for string in strings(&mut out) {
            let (head, tail) = rest.split_at_mut(usize::from(string.Length));
            copy_string(string, head);
            rest = tail;
        }
        written = total;
    }
    for string in strings(&mut out) {
        string.Buffer = ptr::null_mut();
    }
    (out.public.command_start, out.public.command_end) = (ptr::null_mut(), ptr::null_mut());
    let fits = !context_out.is_null() && context_capacity >= NOTIFY_CONTEXT_SIZE;
    if fits {
        // SAFETY: `NOTIFY_CONTEXT_SIZE` writable bytes: the header as the core left it...
        unsafe { ptr::copy_nonoverlapping(public.wrapping_sub(64), context_out, 64) };
        // SAFETY: ...then the context with its pointers cleared.
        unsafe {
            context_out
                .wrapping_add(64)
                .cast::<NotifyContext>()
                .write_unaligned(out);
        }
    }
    // SAFETY: the size slots are writable.
    unsafe { *data_size = written };
    // SAFETY: as above.
    unsafe { *context_size = if fits { NOTIFY_CONTEXT_SIZE } else { 0 } };
}
