//! The static binary's allocator: dlmalloc for small blocks, pages of
//! their own for large ones.
//!
//! Why not the libc's: the libc the static (musl) build links has a
//! malloc whose threads spin on a shared lock once they outnumber the
//! cores. With 64 workers on 2 cores, a burst that opens connections to
//! RDS spent most of its time there (the figures: BENCHMARKS.md,
//! "Provisioning bursts"). dlmalloc (pure Rust, one heap behind a futex
//! lock) waits instead of spinning, but never hands the inside of its
//! heap back to the kernel; so, as C dlmalloc and glibc do past their
//! mmap threshold, a block of [`LARGE`] or more is mapped on its own and
//! unmapped when freed, and the rebuild's page buffers and the old copies
//! of tables that grew do not stay resident.
//!
//! Failure modes: an allocation the kernel or dlmalloc refuses returns
//! null (Rust's allocation-error handler aborts).

use std::{
    alloc::{GlobalAlloc, Layout},
    ptr,
};

use dlmalloc::GlobalDlmalloc;

/// Blocks at least this large get pages of their own.
const LARGE: usize = 256 * 1024;

/// The alignment a mapping is sure to have (the smallest page size).
const PAGE: usize = 4096;

pub struct Allocator;

fn mapped(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

/// Fresh zeroed pages for `size` bytes, or null.
unsafe fn map(size: usize) -> *mut u8 {
    let p = libc::mmap(
        ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            map(layout.size())
        } else {
            GlobalDlmalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // The kernel's pages come zeroed.
            map(layout.size())
        } else {
            GlobalDlmalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if mapped(layout) {
            libc::munmap(p.cast(), layout.size());
        } else {
            GlobalDlmalloc.dealloc(p, layout)
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (mapped(layout), mapped(new)) {
            (false, false) => GlobalDlmalloc.realloc(p, layout, new_size),
            // The kernel moves the pages, not the bytes.
            (true, true) => {
                let q = libc::mremap(p.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE);
                if q == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    q.cast()
                }
            }
            _ => {
                let q = self.alloc(new);
                if !q.is_null() {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    self.dealloc(p, layout);
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Taken by the tests that map large blocks, so that none maps pages
    /// another has just unmapped while that one looks at them.
    static MAPPING: Mutex<()> = Mutex::new(());

    /// Whether the `len` bytes at page-aligned `p` are all mapped
    /// (`mincore` fails with ENOMEM on any unmapped page).
    fn is_mapped(p: *const u8, len: usize) -> bool {
        let mut pages = vec![0u8; len.div_ceil(PAGE)];
        unsafe { libc::mincore(p as *mut libc::c_void, len, pages.as_mut_ptr()) == 0 }
    }

    /// A block of `size` from `a`, filled with its offsets (mod 251).
    unsafe fn filled(a: &Allocator, size: usize) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let p = a.alloc(layout);
        assert!(!p.is_null());
        for i in 0..size {
            *p.add(i) = (i % 251) as u8;
        }
        (p, layout)
    }

    unsafe fn holds_offsets(p: *const u8, size: usize) -> bool {
        (0..size).all(|i| *p.add(i) == (i % 251) as u8)
    }

    #[test]
    fn blocks_keep_their_bytes_across_every_resize() {
        let _mapping = MAPPING.lock().unwrap();
        let a = Allocator;
        unsafe {
            // Small → small, small → large, large → large, large → small.
            let (p, l) = filled(&a, 1000);
            let p = a.realloc(p, l, 4000);
            assert!(holds_offsets(p, 1000));
            let l = Layout::from_size_align(4000, 8).unwrap();
            let (p, l) = {
                a.dealloc(p, l);
                filled(&a, 200 * 1024)
            };
            let p = a.realloc(p, l, 300 * 1024);
            assert!(holds_offsets(p, 200 * 1024));
            assert_eq!(
                p as usize % PAGE,
                0,
                "a large block is a mapping of its own"
            );
            let l = Layout::from_size_align(300 * 1024, 8).unwrap();
            for i in 200 * 1024..300 * 1024 {
                *p.add(i) = (i % 251) as u8;
            }
            let p = a.realloc(p, l, 5 * 1024 * 1024);
            assert!(holds_offsets(p, 300 * 1024));
            assert!(
                is_mapped(p, 5 * 1024 * 1024),
                "grown in place or moved whole"
            );
            let l = Layout::from_size_align(5 * 1024 * 1024, 8).unwrap();
            let p = a.realloc(p, l, 100);
            assert!(holds_offsets(p, 100));
            a.dealloc(p, Layout::from_size_align(100, 8).unwrap());
        }
    }

    #[test]
    fn large_blocks_go_back_to_the_kernel_when_freed() {
        let _mapping = MAPPING.lock().unwrap();
        let a = Allocator;
        let size = 4 * LARGE;
        unsafe {
            let (p, l) = filled(&a, size);
            assert_eq!(p as usize % PAGE, 0);
            assert!(is_mapped(p, size));
            a.dealloc(p, l);
            assert!(!is_mapped(p, size), "freed pages are unmapped");
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_small_and_large() {
        let _mapping = MAPPING.lock().unwrap();
        let a = Allocator;
        for size in [24, 4096, LARGE, 3 * LARGE + 5] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert!((0..size).all(|i| *p.add(i) == 0), "{size}");
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn an_alignment_past_a_page_is_honoured() {
        let _mapping = MAPPING.lock().unwrap();
        let a = Allocator;
        let layout = Layout::from_size_align(LARGE, 2 * PAGE).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % (2 * PAGE), 0);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn threads_allocate_side_by_side() {
        let _mapping = MAPPING.lock().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    let a = Allocator;
                    for n in 0..400 {
                        let size = [16, 700, 64 * 1024, LARGE + t][n % 4];
                        unsafe {
                            let (p, l) = filled(&a, size);
                            assert!(holds_offsets(p, size));
                            a.dealloc(p, l);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
