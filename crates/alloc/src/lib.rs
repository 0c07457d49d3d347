//! The memory allocator of flatnet's binaries (the `flatnet` command and the benchmark
//! servers, so that they measure what runs): mimalloc, which costs fewer cycles per
//! allocation than glibc's malloc on the L7 proxy's per-request path, set to give freed
//! memory back to the system at once. Use it as
//! `#[global_allocator] static A: flatnet_alloc::Allocator = flatnet_alloc::Allocator;` and
//! call [`return_freed_memory_at_once`] first thing in `main`; servers whose resident size
//! is a target (the DNS server) also call [`small_pages_only`]; the L7 proxy sets a delay
//! instead ([`return_freed_memory_after`]) and gives a replaced route table's memory back
//! itself ([`give_back_freed_memory`]).

use std::time::Duration;

/// The global allocator type.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (15 in mimalloc 2, which libmimalloc-sys does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system at once rather than after mimalloc's default 10 ms
/// (a heap purges only when its thread calls the allocator again, so memory freed by a thread
/// that then sleeps stayed resident).
pub fn return_freed_memory_at_once() {
    return_freed_memory_after(Duration::ZERO);
}

/// Freed memory goes back to the system `delay` after it is freed (when the thread that
/// freed it next calls the allocator). For a server that allocates and frees per request,
/// a delay keeps the pages of its working set mapped: giving them back at once and taking
/// them again cost the L7 proxy about a tenth of its CPU per HTTP/2 request (page faults,
/// zeroing, TLB shootdowns).
pub fn return_freed_memory_after(delay: Duration) {
    let ms = std::os::raw::c_long::try_from(delay.as_millis()).unwrap_or(i32::MAX.into());
    // SAFETY: sets a process-wide allocator option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// Gives the free memory of the calling thread's heap back to the system now: for a thread
/// that has just freed a lot (an old route table) and may not call the allocator for a while.
pub fn give_back_freed_memory() {
    // SAFETY: a collection of the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// No transparent huge pages for this process (and its children): memory becomes resident
/// 4 KiB at a time instead of 2 MiB. mimalloc's arenas are eligible for huge pages, and a
/// huge page is resident as a whole for the few objects in it: the DNS server with 10,000
/// Services was ~6.5 MiB larger idle and ~7 MiB larger after a load run with them, at the
/// same queries per second. Changes only this process's memory, never a system setting.
pub fn small_pages_only() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("flatnet: transparent huge pages stay on: {e}");
    }
}
