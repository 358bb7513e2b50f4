//! The parts of `sdk/include/wk/wk_abi.h` (ABI 1.0) this plugin uses, mirrored by hand.
//!
//! Every struct is `#[repr(C)]` with the header's fields in the header's order and with the
//! header's types (`uint32_t` is `u32`, `size_t` is `usize`, a function pointer that may be NULL
//! is `Option<unsafe extern "C" fn ...>`, which has the same layout). A struct that crosses the
//! boundary is mirrored whole, even where only a few fields are used: the host reads and writes
//! by offset. Host functions this plugin never calls are typed [`Unused`], still one pointer each.
//!
//! The `layout!` assertions at the end pin sizes, alignments and offsets to the table in
//! `docs/sdk.md` ("Struct layouts"), which the test `sdk.layout_table` generates from the header
//! itself: a mistake in this file fails the build, not a task.
#![allow(dead_code)]

use std::ffi::{c_char, c_void};

pub type WkStatus = i32;
pub type WkDisposition = i32;

pub const WK_ABI_MAJOR: u16 = 1;
pub const WK_ABI_MINOR: u16 = 0;
pub const WK_ENTRY_MAGIC: u32 = 0x3150_4B57; // "WKP1" little-endian

pub const WK_OK: WkStatus = 0;
pub const WK_E_INVALID: WkStatus = -1;
pub const WK_E_CANCELLED: WkStatus = -4;
pub const WK_E_UNSUPPORTED: WkStatus = -9;
pub const WK_E_INTERNAL: WkStatus = -12;

pub const WK_LOG_INFO: i32 = 2;

pub const WK_DISP_SUCCEEDED: WkDisposition = 1;
pub const WK_DISP_RETRY: WkDisposition = 2;
pub const WK_DISP_FAIL_NO_RETRY: WkDisposition = 4;
pub const WK_DISP_CANCELLED: WkDisposition = 5;

pub const WK_HANDLER_IDEMPOTENT: u32 = 1 << 0;

/// `wk_ctx`: host-owned, only ever behind a pointer.
#[repr(C)]
pub struct WkCtx {
    _opaque: [u8; 0],
}

/// `wk_plugin_state`: ours, opaque to the host (here a `Box<crate::Plugin>`).
#[repr(C)]
pub struct WkPluginState {
    _opaque: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct WkStr {
    pub ptr: *const c_char,
    pub len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct WkBytes {
    pub ptr: *const u8,
    pub len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct WkKv {
    pub key: WkStr,
    pub value: WkStr,
}

#[repr(C)]
pub struct WkError {
    pub struct_size: u32,
    pub status: WkStatus,
    pub code: [c_char; 32],
    pub message: [c_char; 472],
}

/// A host function this plugin never calls: one nullable function pointer, like the real one.
pub type Unused = Option<unsafe extern "C" fn()>;

#[repr(C)]
pub struct WkHostApi {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub host_name: *const c_char,
    pub host_version: *const c_char,
    pub get_extension: Unused,
    pub log_enabled: Unused,
    pub log: Option<unsafe extern "C" fn(*mut WkCtx, i32, WkStr, *const WkKv, usize)>,
    pub config_get: Unused,
    pub pg_query: Unused,
    pub pg_row_count: Unused,
    pub pg_column_count: Unused,
    pub pg_column_name: Unused,
    pub pg_column_type: Unused,
    pub pg_value: Unused,
    pub pg_rows_affected: Unused,
    pub pg_rows_free: Unused,
    pub pg_begin: Unused,
    pub pg_tx_query: Unused,
    pub pg_commit: Unused,
    pub pg_rollback: Unused,
    pub pg_tx_once: Unused,
    pub pg_migrate: Unused,
    pub enqueue: Unused,
    pub heartbeat: Unused,
    pub is_cancelled: Unused,
    pub wait_cancelled: Unused,
    pub remaining_ms: Unused,
    pub result_write: Option<unsafe extern "C" fn(*mut WkCtx, WkBytes, u32) -> WkStatus>,
}

/// A host shorter than this is not a 1.x host (its table ends with `result_write`).
pub const HOST_API_V1_0_SIZE: usize = std::mem::offset_of!(WkHostApi, result_write) + size_of::<usize>();

#[repr(C)]
pub struct WkFailure {
    pub struct_size: u32,
    pub reserved: u32,
    pub retry_after_ms: i64,
    pub code: [c_char; 64],
    pub message: [c_char; 1024],
}

#[repr(C)]
pub struct WkTaskView {
    pub struct_size: u32,
    pub attempt: u32,
    pub retried: i32,
    pub max_retry: i32,
    pub id: WkStr,
    pub r#type: WkStr,
    pub queue: WkStr,
    pub payload: WkBytes,
    pub headers: *const WkKv,
    pub header_count: usize,
    pub deadline_ms: i64,
    pub started_at_ms: i64,
}

pub type RunFn =
    unsafe extern "C" fn(*mut WkPluginState, *mut WkCtx, *const WkTaskView, *mut WkFailure) -> WkDisposition;
pub type InitFn =
    unsafe extern "C" fn(*const WkHostApi, *mut WkCtx, *mut *mut WkPluginState, *mut WkError) -> WkStatus;

#[repr(C)]
pub struct WkHandlerDesc {
    pub struct_size: u32,
    pub flags: u32,
    pub task_type: *const c_char,
    pub description: *const c_char,
    pub max_concurrency: u32,
    pub default_timeout_ms: u32,
    pub run: Option<RunFn>,
    pub on_cancel: Option<unsafe extern "C" fn(*mut WkPluginState, *mut WkCtx)>,
}

#[repr(C)]
pub struct WkPluginEntry {
    pub magic: u32,
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub min_host_minor: u16,
    pub reserved0: u16,
    pub flags: u32,
    pub reserved1: u32,
    pub plugin_id: *const c_char,
    pub plugin_version: *const c_char,
    pub build_info: *const c_char,
    pub handlers: *const WkHandlerDesc,
    pub handler_count: u32,
    pub handler_stride: u32,
    pub init: Option<InitFn>,
    pub shutdown: Option<unsafe extern "C" fn(*mut WkPluginState)>,
    pub get_extension: Option<unsafe extern "C" fn(*mut WkPluginState, *const c_char) -> *const c_void>,
}

// The entry and the handler table are immutable statics that only point at other statics
// (string literals, functions); the host copies them at load and never writes (rule O6), so
// sharing them between threads is sound although raw pointers are not Sync by default.
unsafe impl Sync for WkHandlerDesc {}
unsafe impl Sync for WkPluginEntry {}

/// Compile-time layout check: size, alignment and every field's offset, from the table in
/// docs/sdk.md (x86-64 Linux; other targets are not pinned there).
macro_rules! layout {
    ($t:ty, size $size:expr, align $align:expr, { $($field:tt @ $offset:expr),* $(,)? }) => {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        const _: () = {
            assert!(size_of::<$t>() == $size, concat!("size of ", stringify!($t)));
            assert!(align_of::<$t>() == $align, concat!("alignment of ", stringify!($t)));
            $(assert!(std::mem::offset_of!($t, $field) == $offset,
                      concat!("offset of ", stringify!($t), ".", stringify!($field)));)*
        };
    };
}

layout!(WkStr, size 16, align 8, { ptr @ 0, len @ 8 });
layout!(WkBytes, size 16, align 8, { ptr @ 0, len @ 8 });
layout!(WkKv, size 32, align 8, { key @ 0, value @ 16 });
layout!(WkError, size 512, align 4, { struct_size @ 0, status @ 4, code @ 8, message @ 40 });
layout!(WkHostApi, size 216, align 8, {
    struct_size @ 0, abi_major @ 4, abi_minor @ 6, host_name @ 8, host_version @ 16,
    get_extension @ 24, log_enabled @ 32, log @ 40, config_get @ 48, pg_query @ 56,
    pg_row_count @ 64, pg_column_count @ 72, pg_column_name @ 80, pg_column_type @ 88,
    pg_value @ 96, pg_rows_affected @ 104, pg_rows_free @ 112, pg_begin @ 120, pg_tx_query @ 128,
    pg_commit @ 136, pg_rollback @ 144, pg_tx_once @ 152, pg_migrate @ 160, enqueue @ 168,
    heartbeat @ 176, is_cancelled @ 184, wait_cancelled @ 192, remaining_ms @ 200,
    result_write @ 208,
});
layout!(WkFailure, size 1104, align 8, {
    struct_size @ 0, reserved @ 4, retry_after_ms @ 8, code @ 16, message @ 80,
});
layout!(WkTaskView, size 112, align 8, {
    struct_size @ 0, attempt @ 4, retried @ 8, max_retry @ 12, id @ 16, r#type @ 32, queue @ 48,
    payload @ 64, headers @ 80, header_count @ 88, deadline_ms @ 96, started_at_ms @ 104,
});
layout!(WkHandlerDesc, size 48, align 8, {
    struct_size @ 0, flags @ 4, task_type @ 8, description @ 16, max_concurrency @ 24,
    default_timeout_ms @ 28, run @ 32, on_cancel @ 40,
});
layout!(WkPluginEntry, size 88, align 8, {
    magic @ 0, struct_size @ 4, abi_major @ 8, abi_minor @ 10, min_host_minor @ 12,
    reserved0 @ 14, flags @ 16, reserved1 @ 20, plugin_id @ 24, plugin_version @ 32,
    build_info @ 40, handlers @ 48, handler_count @ 56, handler_stride @ 60, init @ 64,
    shutdown @ 72, get_extension @ 80,
});
