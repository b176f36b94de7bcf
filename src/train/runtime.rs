//! The process around a run: device choice, libtorch threads, random streams, the allocator
//! setting, and the stop flag that SIGINT/SIGTERM raise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

use crate::config::DeviceChoice;

/// The device a run uses; `cuda` without a visible GPU is an error, not a silent CPU run.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => {
            bail!("--device cuda was asked for, but libtorch sees no CUDA GPU (use --device cpu or auto)")
        }
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Sets libtorch's intra-op threads (0 keeps its default, one per core) and returns the count.
/// A fixed count keeps CPU reductions, hence metrics, bit-for-bit repeatable (tests/faults.rs);
/// libtorch's inter-op pool is left alone: eager-mode training runs one op at a time and
/// never uses it.
///
/// More threads than the cores this process may use is refused (`config::check_threads`).
///
/// Decoding and crops run on rayon's global pool, which gets the same count: rayon's own
/// default is one thread per core whatever `--threads` says, so two runs of `--threads 1` side
/// by side (a sweep's `--jobs 2`) each cut crops on every core while the other computes. The
/// pool is built once per process, by the first call (later ones keep it: a process runs one
/// configuration, tests aside).
pub fn set_threads(threads: usize) -> Result<usize> {
    crate::config::check_threads(threads)?;
    if threads > 0 {
        tch::set_num_threads(threads as i32);
        let _already_built = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    }
    Ok(tch::get_num_threads().max(1) as usize)
}

/// Independent random streams of one run, all derived from its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Shuffling the source domain.
    SourceOrder = 1,
    /// Shuffling the target domain.
    TargetOrder = 2,
    /// Random crops and mirrors.
    Augment = 3,
}

pub fn rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream as u64);
    r
}

/// libtorch's generator (dropout) is reseeded at every iteration from (seed, iteration), so a
/// resumed run draws the same dropout masks as an uninterrupted one.
pub fn seed_torch_for_iteration(seed: u64, iteration: usize) {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (iteration as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    tch::manual_seed((mixed >> 1) as i64);
}

/// Every program linking this crate allocates through jemalloc, for itself and for libtorch alike:
/// `tikv-jemalloc-sys` is built with unprefixed symbols, so its `malloc` replaces glibc's in the
/// whole process. glibc returns every freed block over the mmap threshold to the kernel, so each
/// training step mapped and page-faulted its large activations afresh (measured: a third of CPU
/// time in the kernel for SqueezeNet); jemalloc with its decay turned off keeps freed pages for
/// reuse instead, as fast as glibc told to keep everything (`mallopt(M_MMAP_MAX, 0)`) with a
/// 5-17% lower resident peak (README, Speed).
/// On by default; `DEEP_CORAL_RELEASE_MEMORY=1` keeps jemalloc's own decay (freed pages go back
/// to the kernel after about 10 s), for a lower peak at a large cost in speed. Returns whether
/// freed memory is kept.
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("DEEP_CORAL_RELEASE_MEMORY").is_some_and(|v| v == "1") {
        return false;
    }
    // -1 = never purge. `arenas.*` set the default of arenas made from now on (one per thread,
    // at most 4 x cores, and the arena of allocations over 8 MiB, made at the first one);
    // `arena.<i>.*` the arenas made already (at least arena 0).
    let defaults = mallctl_write(c"arenas.dirty_decay_ms", -1) && mallctl_write(c"arenas.muzzy_decay_ms", -1);
    for i in 0..mallctl_read::<u32>(c"arenas.narenas").unwrap_or(0) {
        for what in ["dirty", "muzzy"] {
            let name = std::ffi::CString::new(format!("arena.{i}.{what}_decay_ms")).expect("no NUL");
            mallctl_write(&name, -1); // fails for an arena index not in use yet, which is fine
        }
    }
    defaults
}

/// Writes one `ssize_t` jemalloc option; true on success.
fn mallctl_write(name: &std::ffi::CStr, value: libc::ssize_t) -> bool {
    let mut value = value;
    let size = size_of::<libc::ssize_t>();
    // SAFETY: jemalloc copies `size` bytes from `value` and keeps no pointer.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&mut value as *mut libc::ssize_t).cast(),
            size,
        ) == 0
    }
}

/// Reads one jemalloc value of type `T` (`unsigned` -> u32, `ssize_t` -> isize).
fn mallctl_read<T: Copy + Default>(name: &std::ffi::CStr) -> Option<T> {
    let mut value = T::default();
    let mut size = size_of::<T>();
    // SAFETY: jemalloc writes at most `size` bytes into `value`.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(name.as_ptr(), (&mut value as *mut T).cast(), &mut size, std::ptr::null_mut(), 0)
    };
    (rc == 0 && size == size_of::<T>()).then_some(value)
}

/// Raised by SIGINT, SIGTERM or SIGUSR1 (the warning Slurm sends before a time limit or a
/// preemption, `sbatch --signal`); the training loop checks it between iterations, checkpoints
/// and stops cleanly (exit 130, status `interrupted`).
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
    }
    flag
}

pub fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Peak resident memory of this process, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Returns the allocator's free pages to the kernel (jemalloc's purge of every arena,
/// `arena.4096.purge`, whatever `keep_freed_memory` says), then resets this process's peak
/// resident memory (`VmHWM`) to what is resident now (Linux `clear_refs` 5), so
/// `peak_rss_bytes` measures from here on; false where the kernel refuses the reset.
pub fn reset_peak_rss() -> bool {
    let null = std::ptr::null_mut();
    // SAFETY: a purge releases free pages only; no live allocation is touched.
    unsafe {
        tikv_jemalloc_sys::mallctl(c"arena.4096.purge".as_ptr(), null, std::ptr::null_mut(), null, 0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// jemalloc is the process's allocator, libtorch's included, and keeps freed pages once told.
    #[test]
    fn jemalloc_serves_libtorch_and_keeps_freed_pages() {
        // arenas.lookup names the arena of a pointer that jemalloc handed out, and fails otherwise.
        let lookup = |mut ptr: *mut libc::c_void| {
            let (mut arena, mut size) = (u32::MAX, size_of::<u32>());
            // SAFETY: reads one unsigned, given one pointer; jemalloc only looks the address up.
            let rc = unsafe {
                tikv_jemalloc_sys::mallctl(
                    c"arenas.lookup".as_ptr(),
                    (&mut arena as *mut u32).cast(),
                    &mut size,
                    (&mut ptr as *mut *mut libc::c_void).cast(),
                    size_of::<*mut libc::c_void>(),
                )
            };
            rc == 0
        };
        let big = tch::Tensor::zeros([64 << 20], (tch::Kind::Uint8, tch::Device::Cpu)); // by libtorch
        assert!(lookup(big.data_ptr()), "libtorch's buffer was not allocated by jemalloc");
        let mut on_stack = 0u64;
        assert!(!lookup((&mut on_stack as *mut u64).cast()), "lookup tells foreign memory apart");
        drop(big);
        assert!(keep_freed_memory());
        assert_eq!(mallctl_read::<libc::ssize_t>(c"arenas.dirty_decay_ms"), Some(-1));
        assert_eq!(mallctl_read::<libc::ssize_t>(c"arena.0.dirty_decay_ms"), Some(-1));
        assert_eq!(mallctl_read::<libc::ssize_t>(c"arena.0.muzzy_decay_ms"), Some(-1));
    }
    use rand::Rng;

    #[test]
    fn streams_differ_and_repeat() {
        let a: u64 = rng(7, Stream::SourceOrder).gen();
        let b: u64 = rng(7, Stream::TargetOrder).gen();
        assert_ne!(a, b);
        assert_eq!(a, rng(7, Stream::SourceOrder).gen::<u64>());
        assert_ne!(a, rng(8, Stream::SourceOrder).gen::<u64>());
    }

    #[test]
    fn cpu_is_always_there() {
        assert_eq!(device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        if !tch::Cuda::is_available() {
            assert!(device(DeviceChoice::Cuda).unwrap_err().to_string().contains("no CUDA"));
        }
    }
}
