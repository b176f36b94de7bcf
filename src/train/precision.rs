//! Mixed precision (`--precision bf16`): the backbone's convolutions and matrix products run in
//! bfloat16 under libtorch's own autocast, on the CPU as on CUDA, while the master weights, the
//! optimiser state, the softmax/cross-entropy and the CORAL covariances stay in float32.
//!
//! Why autocast and not casting the weights inside each forward: autocast casts every fp32
//! leaf weight once per region and caches it, so the source and target branches of an
//! iteration share one bf16 copy of each weight, with no change to the backbones' code; the
//! gradient flows back through the cast into the fp32 variables. `tch::autocast` switches
//! libtorch's CUDA autocast only, so the per-device switches (`at::autocast::
//! set_autocast_enabled(DeviceType, bool)` and `set_autocast_dtype`) are declared below by
//! their exported C++ names in `libtorch_cpu` (plain `int8` enums and a bool: the C calling
//! convention carries them unchanged). [`Autocast::enter`] reads the state back and refuses to
//! run if libtorch did not take it, so a changed ABI is an error, never silent fp32.

use anyhow::{bail, ensure, Result};
use tch::{Device, Kind, Tensor};

pub use crate::config::Precision;

mod ffi {
    // c10::DeviceType and c10::ScalarType are `enum class : int8_t`.
    #[link(name = "torch_cpu")]
    extern "C" {
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device_type: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device_type: i8) -> bool;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
    }
}

/// `c10::DeviceType::CPU` and `CUDA`.
fn device_type(device: Device) -> i8 {
    if device.is_cuda() {
        1
    } else {
        0
    }
}

/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

/// An open autocast region of one device: bf16 for the ops on libtorch's autocast list until
/// dropped, which restores the previous state and, at the outermost region, empties the cache
/// of cast weights (so the next region casts the weights the optimiser has just updated).
pub struct Autocast {
    device_type: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Autocast {
    /// Opens a region for `precision` on `device`; `None` for fp32 (nothing to switch).
    pub fn enter(precision: Precision, device: Device) -> Result<Option<Autocast>> {
        if precision == Precision::Fp32 {
            return Ok(None);
        }
        let dt = device_type(device);
        // SAFETY: plain-value arguments to libtorch's thread-local autocast state.
        let region = unsafe {
            let region = Autocast {
                device_type: dt,
                was_enabled: ffi::is_autocast_enabled(dt),
                was_dtype: ffi::get_autocast_dtype(dt),
            };
            ffi::set_autocast_dtype(dt, BFLOAT16);
            ffi::set_autocast_enabled(dt, true);
            torch_sys::at_autocast_increment_nesting();
            region
        };
        // SAFETY: as above.
        let (on, dtype) = unsafe { (ffi::is_autocast_enabled(dt), ffi::get_autocast_dtype(dt)) };
        ensure!(on && dtype == BFLOAT16, "libtorch did not switch autocast on (enabled {on}, dtype {dtype})");
        Ok(Some(region))
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: restores the values read in `enter`.
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            ffi::set_autocast_enabled(self.device_type, self.was_enabled);
            ffi::set_autocast_dtype(self.device_type, self.was_dtype);
        }
    }
}

/// Refuses bf16 on a device that cannot run it: a bf16 convolution and matrix product with
/// their backward are tried there, and a failure is reported with what to use instead. On a
/// CPU without bf16 instructions (AVX-512 BF16 or AMX) libtorch emulates them: allowed, with a
/// warning that it will be slower than fp32.
pub fn check_supported(precision: Precision, device: Device) -> Result<()> {
    if precision == Precision::Fp32 {
        return Ok(());
    }
    let probe = || -> std::result::Result<(), tch::TchError> {
        let x = Tensor::f_ones([2, 3, 8, 8], (Kind::Float, device))?;
        let w = Tensor::f_ones([4, 3, 3, 3], (Kind::Float, device))?.set_requires_grad(true);
        let m = Tensor::f_ones([4, 4], (Kind::Float, device))?.set_requires_grad(true);
        let _region = Autocast::enter(precision, device).map_err(|e| tch::TchError::Torch(e.to_string()))?;
        let y = x.f_conv2d::<Tensor>(&w, None, [1], [0], [1], 1)?;
        ensure_kind(&y)?;
        let z = y.f_mean_dim(&[2i64, 3][..], false, None)?.f_matmul(&m)?;
        ensure_kind(&z)?;
        z.f_to_kind(Kind::Float)?.f_sum(Kind::Float)?.f_backward()?;
        Ok(())
    };
    if let Err(e) = probe() {
        bail!(
            "--precision bf16 cannot run on {}: a bfloat16 convolution or matrix product failed there ({e}); use \
             --precision fp32",
            crate::train::runtime::device_name(device)
        );
    }
    if device == Device::Cpu && !cpu_has_bf16() {
        eprintln!(
            "warning: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX): libtorch emulates them, and bf16 \
             will likely be slower than fp32"
        );
    }
    Ok(())
}

fn ensure_kind(t: &Tensor) -> std::result::Result<(), tch::TchError> {
    match t.kind() {
        Kind::BFloat16 => Ok(()),
        k => Err(tch::TchError::Kind(format!("autocast produced {k:?}, expected BFloat16"))),
    }
}

/// Whether the CPU has native bfloat16 arithmetic (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo).
fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.split_whitespace().any(|flag| flag == "avx512_bf16" || flag == "amx_bf16"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in an autocast region of `precision` on `device`.
    fn autocast<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        let _region = Autocast::enter(precision, device)?;
        Ok(f())
    }

    fn conv_kind(precision: Precision) -> Kind {
        let x = Tensor::ones([1, 3, 5, 5], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([2, 3, 3, 3], (Kind::Float, Device::Cpu));
        autocast(precision, Device::Cpu, || x.conv2d::<Tensor>(&w, None, [1], [0], [1], 1).kind()).unwrap()
    }

    /// The region switches libtorch's CPU autocast on, and leaving it switches it off again.
    #[test]
    fn bf16_region_runs_convolutions_in_bf16_and_ends_cleanly() {
        assert_eq!(conv_kind(Precision::Fp32), Kind::Float);
        assert_eq!(conv_kind(Precision::Bf16), Kind::BFloat16);
        assert_eq!(conv_kind(Precision::Fp32), Kind::Float, "autocast left on after its region");
        check_supported(Precision::Bf16, Device::Cpu).unwrap();
    }

    /// The cast weights are cached within a region only: after an in-place update (what the
    /// optimiser does between iterations), the next region computes with the new weights.
    #[test]
    fn a_new_region_sees_updated_weights() {
        let x = Tensor::ones([1, 4], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut same_storage = w.shallow_clone();
        let out = || autocast(Precision::Bf16, Device::Cpu, || x.linear::<Tensor>(&w, None).sum(Kind::Float)).unwrap();
        assert_eq!(out().double_value(&[]), 16.0);
        tch::no_grad(|| {
            let _ = same_storage.fill_(2.0);
        });
        assert_eq!(out().double_value(&[]), 32.0, "a stale bf16 copy of the weight was used");
        // The gradient reaches the fp32 weight through the cast.
        autocast(Precision::Bf16, Device::Cpu, || x.linear::<Tensor>(&w, None).sum(Kind::Float)).unwrap().backward();
        assert_eq!(w.grad().kind(), Kind::Float);
        assert_eq!(w.grad().sum(Kind::Float).double_value(&[]), 16.0);
    }
}
