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
pub fn set_threads(threads: usize) -> usize {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    tch::get_num_threads().max(1) as usize
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

/// glibc returns every freed block over the mmap threshold (up to 32 MiB) to the kernel, so each
/// training step maps and page-faults its large activations afresh (measured: about a third of
/// CPU time in the kernel for SqueezeNet). Keeping freed memory in the heap removes that cost at
/// the price of a higher resident peak. On by default; `DEEP_CORAL_RELEASE_MEMORY=1` keeps
/// glibc's defaults.
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("DEEP_CORAL_RELEASE_MEMORY").is_some_and(|v| v == "1") {
        return false;
    }
    // SAFETY: mallopt only changes allocator tunables; called before any training allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    true
}

/// Raised by SIGINT or SIGTERM; the training loop checks it between iterations and stops cleanly.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
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

/// Returns the heap's free memory to the kernel (`malloc_trim`, whatever `keep_freed_memory`
/// says), then resets this process's peak resident memory (`VmHWM`) to what is resident now
/// (Linux `clear_refs` 5), so `peak_rss_bytes` measures from here on; false where the kernel
/// refuses the reset.
pub fn reset_peak_rss() -> bool {
    // SAFETY: malloc_trim only releases free heap pages; no live allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
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
