//! hello_rust: a worker plugin in Rust with no crates, speaking the C ABI of wk_abi.h directly.
//!
//! Task type `example.rust:reverse` writes the payload's text reversed (by `char`, i.e. Unicode
//! scalar values) as the task's result. A payload that is not UTF-8 fails permanently
//! (`WK_DISP_FAIL_NO_RETRY`, code `bad_payload`): no retry can change its bytes.
//!
//! The one rule that is easy to miss: a panic must never unwind out of an `extern "C"` function
//! the host calls. Rust aborts the process when it tries, and the process is the worker (or the
//! plugin's runner, which takes every task in flight on it down too). So each such function runs
//! its body under `catch_unwind` and reports a panic as a retry with code `panic`.
#![deny(unsafe_op_in_unsafe_fn)]

mod abi;

use abi::*;
use std::any::Any;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{addr_of_mut, null_mut};

/// What the host holds as `wk_plugin_state*`, from `init` until `shutdown`.
struct Plugin {
    /// Valid until `shutdown()` returns (wk_abi.h, the host-services table).
    host: *const WkHostApi,
}

static HANDLERS: [WkHandlerDesc; 1] = [WkHandlerDesc {
    struct_size: size_of::<WkHandlerDesc>() as u32,
    flags: WK_HANDLER_IDEMPOTENT,
    task_type: c"example.rust:reverse".as_ptr(),
    description: c"writes the payload's text reversed".as_ptr(),
    max_concurrency: 0,
    default_timeout_ms: 0,
    run: Some(reverse_run),
    on_cancel: None,
}];

static ENTRY: WkPluginEntry = WkPluginEntry {
    magic: WK_ENTRY_MAGIC,
    struct_size: size_of::<WkPluginEntry>() as u32,
    abi_major: WK_ABI_MAJOR,
    abi_minor: WK_ABI_MINOR,
    min_host_minor: 0,
    reserved0: 0,
    flags: 0,
    reserved1: 0,
    plugin_id: c"dev.autodevs.example.hello-rust".as_ptr(),
    plugin_version: c"1.0.0".as_ptr(),
    build_info: c"hello_rust (Rust, no crates)".as_ptr(),
    handlers: HANDLERS.as_ptr(),
    handler_count: HANDLERS.len() as u32,
    handler_stride: size_of::<WkHandlerDesc>() as u32,
    init: Some(plugin_init),
    shutdown: Some(plugin_shutdown),
    get_extension: None,
};

/// The only exported symbol: a pure getter of static data. It takes the address of a static and
/// does nothing else, so it has no panic to catch.
#[no_mangle]
pub extern "C" fn wk_plugin_entry_v1() -> *const WkPluginEntry {
    &ENTRY
}

/// [control-thread] Once per load.
unsafe extern "C" fn plugin_init(
    host: *const WkHostApi,
    _plugin_ctx: *mut WkCtx,
    out_state: *mut *mut WkPluginState,
    err: *mut WkError,
) -> WkStatus {
    match catch_unwind(AssertUnwindSafe(|| init(host, out_state, err))) {
        Ok(status) => status,
        Err(panic) => report(err, WK_E_INTERNAL, "panic", &panic_text(&*panic)),
    }
}

fn init(host: *const WkHostApi, out_state: *mut *mut WkPluginState, err: *mut WkError) -> WkStatus {
    if out_state.is_null() {
        return report(err, WK_E_INVALID, "plugin.init", "no state out-pointer");
    }
    // SAFETY: checked non-NULL; the host passes a pointer to its own variable.
    unsafe { *out_state = null_mut() };
    // SAFETY: a non-NULL host table is valid for reading (the host passes its own table), and
    // struct_size and abi_major are the first fields of every version of it.
    let usable = unsafe { host.as_ref() }
        .is_some_and(|h| h.abi_major == WK_ABI_MAJOR && h.struct_size as usize >= HOST_API_V1_0_SIZE);
    if !usable {
        return report(err, WK_E_UNSUPPORTED, "plugin.abi", "the host does not provide the wk ABI 1.x table");
    }
    let state = Box::into_raw(Box::new(Plugin { host })).cast::<WkPluginState>();
    // SAFETY: as above.
    unsafe { *out_state = state };
    WK_OK
}

/// [control-thread] After every run() has returned.
unsafe extern "C" fn plugin_shutdown(state: *mut WkPluginState) {
    // There is no one to report to: a panic while dropping the state is swallowed so that it
    // cannot abort the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !state.is_null() {
            // SAFETY: `state` is the Box::into_raw of init, given back exactly once.
            drop(unsafe { Box::from_raw(state.cast::<Plugin>()) });
        }
    }));
}

/// [worker-thread] May run concurrently for different tasks: `Plugin` is only read.
unsafe extern "C" fn reverse_run(
    state: *mut WkPluginState,
    task: *mut WkCtx,
    view: *const WkTaskView,
    failure: *mut WkFailure,
) -> WkDisposition {
    // SAFETY: the pointers come from the host and are valid until this call returns (rule O1).
    match catch_unwind(AssertUnwindSafe(|| unsafe { reverse(state, task, view, failure) })) {
        Ok(disposition) => disposition,
        Err(panic) => fail(failure, WK_DISP_RETRY, "panic", &panic_text(&*panic)),
    }
}

/// # Safety
/// The arguments of a run() call: `state` from init, the rest valid until it returns.
unsafe fn reverse(
    state: *mut WkPluginState,
    task: *mut WkCtx,
    view: *const WkTaskView,
    failure: *mut WkFailure,
) -> WkDisposition {
    // SAFETY: see the function's contract; NULL is handled.
    let (Some(plugin), Some(view)) = (unsafe { state.cast::<Plugin>().as_ref() }, unsafe { view.as_ref() })
    else {
        return fail(failure, WK_DISP_RETRY, "plugin.bad_call", "run() without state or task");
    };
    // SAFETY: the host table outlives every run() (init checked it).
    let host = unsafe { &*plugin.host };
    // SAFETY: the payload view is borrowed until run() returns; the slice does not outlive it.
    let payload = unsafe { bytes(view.payload) };
    let text = match std::str::from_utf8(payload) {
        Ok(text) => text,
        Err(e) => {
            return fail(failure, WK_DISP_FAIL_NO_RETRY, "bad_payload", &format!("payload is not UTF-8: {e}"))
        }
    };
    let reversed: String = text.chars().rev().collect();

    // A 1.0 host always sets result_write (init checked the table's size), so NULL means a
    // broken host. The panic this raises is caught above and becomes a retry; the test
    // sdk.out_of_tree_examples hands the plugin such a table to prove that.
    let result_write = host.result_write.expect("the host table has no result_write");
    let data = WkBytes { ptr: reversed.as_ptr(), len: reversed.len() };
    // SAFETY: `task` is this run's task ctx; the host copies the bytes before returning (O4).
    match unsafe { result_write(task, data, 0) } {
        WK_OK => {}
        WK_E_CANCELLED => {
            return fail(failure, WK_DISP_CANCELLED, "cancelled", "cancelled while writing the result")
        }
        status => {
            return fail(
                failure,
                WK_DISP_RETRY,
                "result_write",
                &format!("the host refused the result (status {status})"),
            )
        }
    }
    let chars = text.chars().count().to_string();
    log(host, task, WK_LOG_INFO, "reversed", &[("chars", chars.as_str())]);
    WK_DISP_SUCCEEDED
}

/// # Safety
/// `b` must be a view the host lent for the current call.
unsafe fn bytes<'a>(b: WkBytes) -> &'a [u8] {
    if b.ptr.is_null() || b.len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
    }
}

fn wk_str(text: &str) -> WkStr {
    WkStr { ptr: text.as_ptr().cast::<c_char>(), len: text.len() }
}

/// Logging never fails a task; the host copies everything before returning (O4).
fn log(host: &WkHostApi, ctx: *mut WkCtx, level: i32, message: &str, fields: &[(&str, &str)]) {
    let Some(log) = host.log else { return };
    let kvs: Vec<WkKv> = fields.iter().map(|(k, v)| WkKv { key: wk_str(k), value: wk_str(v) }).collect();
    // SAFETY: every view points into `message`, `fields` or `kvs`, alive for the call.
    unsafe { log(ctx, level, wk_str(message), kvs.as_ptr(), kvs.len()) }
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    let what = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s.as_str(),
        _ => "a panic without a message",
    };
    format!("panicked: {what}")
}

/// Copies `text` into a fixed C buffer: truncated on a char boundary, always NUL-terminated (O5).
///
/// # Safety
/// `dst` must be valid for `capacity` bytes of writes.
unsafe fn copy_text(dst: *mut c_char, capacity: usize, text: &str) {
    if dst.is_null() || capacity == 0 {
        return;
    }
    let mut n = text.len().min(capacity - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: n < capacity, and `text` cannot overlap a buffer the host owns.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), dst, n);
        *dst.add(n) = 0;
    }
}

/// Whether the caller's struct (by its struct_size) holds the field at `offset` of `size` bytes:
/// WK_HAS of wk_abi.h.
fn has(struct_size: u32, offset: usize, size: usize) -> bool {
    offset + size <= struct_size as usize
}

/// Fills the host's failure record, as far as its struct_size says it reaches, and returns
/// `disposition`. Raw pointers, not a `&mut WkFailure`: an older host's record may be shorter
/// than this mirror.
fn fail(failure: *mut WkFailure, disposition: WkDisposition, code: &str, message: &str) -> WkDisposition {
    if failure.is_null() {
        return disposition;
    }
    // SAFETY: the host's zeroed record, valid until run() returns; each field is written only
    // when struct_size covers it.
    unsafe {
        let size = (*failure).struct_size;
        if has(size, std::mem::offset_of!(WkFailure, code), 64) {
            copy_text(addr_of_mut!((*failure).code).cast::<c_char>(), 64, code);
        }
        if has(size, std::mem::offset_of!(WkFailure, message), 1024) {
            copy_text(addr_of_mut!((*failure).message).cast::<c_char>(), 1024, message);
        }
    }
    disposition
}

/// The same for init's wk_error, returning `status`.
fn report(err: *mut WkError, status: WkStatus, code: &str, message: &str) -> WkStatus {
    if err.is_null() {
        return status;
    }
    // SAFETY: the caller's error record, valid until init() returns; see `fail`.
    unsafe {
        let size = (*err).struct_size;
        if has(size, std::mem::offset_of!(WkError, status), 4) {
            (*err).status = status;
        }
        if has(size, std::mem::offset_of!(WkError, code), 32) {
            copy_text(addr_of_mut!((*err).code).cast::<c_char>(), 32, code);
        }
        if has(size, std::mem::offset_of!(WkError, message), 472) {
            copy_text(addr_of_mut!((*err).message).cast::<c_char>(), 472, message);
        }
    }
    status
}
