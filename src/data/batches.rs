//! Bytes -> tensors: per-domain epochs reshuffled each pass (as Caffe's shuffling image-data
//! layer), paired source/target batches of equal size, random 227x227 crops and mirrors for
//! training, the centre crop for evaluation, then the backbone's normalisation.
//!
//! Crops are cut by the CPU in parallel from decoded bytes in host memory ([`to_tensor`]), or on
//! the GPU from the same bytes held there as one u8 tensor ([`crop_on_device`]); both give the
//! same tensor bit for bit. [`crate::data::inputs::Inputs`] picks one per domain.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::images::{ImageSet, STORED};
use crate::model::backbone::InputConvention;

/// Walks a domain in shuffled order, one pass (epoch) after another; a batch that runs past
/// the end of a pass takes the rest from a freshly shuffled next pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochSampler {
    order: Vec<usize>,
    pos: usize,
    /// Images drawn so far, over all passes.
    pub drawn: u64,
    /// The sampler's own random stream, saved with it in checkpoints.
    rng: ChaCha8Rng,
}

impl EpochSampler {
    pub fn new(len: usize, mut rng: ChaCha8Rng) -> Self {
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(&mut rng);
        Self { order, pos: 0, drawn: 0, rng }
    }

    /// The next `n` image indices.
    pub fn next(&mut self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.pos = 0;
            }
            out.push(self.order[self.pos]);
            self.pos += 1;
        }
        self.drawn += n as u64;
        out
    }

    /// Passes completed over the domain, fractional.
    pub fn epoch(&self) -> f64 {
        self.drawn as f64 / self.order.len() as f64
    }
}

/// Where to cut a `crop`x`crop` window out of a stored 256x256 image, and whether to mirror it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub top: usize,
    pub left: usize,
    pub mirror: bool,
}

impl View {
    /// A uniformly random crop position and a fair coin for the mirror (Caffe's `crop_size`
    /// and `mirror: true` in TRAIN phase).
    pub fn random(crop: usize, rng: &mut ChaCha8Rng) -> View {
        let room = STORED - crop;
        View { top: rng.gen_range(0..=room), left: rng.gen_range(0..=room), mirror: rng.gen_bool(0.5) }
    }

    /// The centre crop (Caffe's TEST phase).
    pub fn centre(crop: usize) -> View {
        let off = (STORED - crop) / 2;
        View { top: off, left: off, mirror: false }
    }
}

/// Cuts `views[i]` out of image `indices[i]`, normalises each pixel by the backbone's
/// convention ([`InputConvention::affine`]) with channels in the network's order, and
/// returns a float `[n, 3, crop, crop]` tensor on `device`, laid out channels-last in memory
/// (NHWC strides) when `channels_last`.
///
/// The pixels are written straight into the tensor's own memory, each output element once and
/// in memory order (for channels-last: pixel by pixel, its three channels side by side), one
/// image per task on the rayon pool. Writing into a `Vec` and handing it to
/// `Tensor::from_slice` cost two more passes over the batch (zeroing the vector, copying it),
/// 79 MB each for 128 images (`make bench`, docs/speed.md).
pub fn to_tensor(
    set: &ImageSet,
    indices: &[usize],
    views: &[View],
    input: &InputConvention,
    channels_last: bool,
    device: Device,
) -> Tensor {
    assert_eq!(indices.len(), views.len());
    let crop = input.crop;
    let per_image = 3 * crop * crop;
    // out_c = p * a_c + b_c, from the network's channel c, which reads RGB plane src_c.
    let (a, b) = input.affine();
    let src_plane = |c: usize| if input.bgr { 2 - c } else { c };
    let (n, side) = (indices.len() as i64, crop as i64);
    let shape = if channels_last { [n, side, side, 3] } else { [n, 3, side, side] };
    let t = Tensor::empty(shape, (Kind::Float, Device::Cpu));
    let len = indices.len() * per_image;
    let buf: &mut [f32] = if len == 0 {
        &mut []
    } else {
        // SAFETY: `t` is a fresh contiguous float32 tensor of exactly `len` elements on the
        // CPU, owned here and not shared until this function returns it; the slice ends first.
        unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, len) }
    };
    buf.par_chunks_mut(per_image).zip(indices.par_iter().zip(views.par_iter())).for_each(|(out, (&i, v))| {
        let img = set.image(i);
        let row = |c: usize, y: usize| &img[(src_plane(c) * STORED + v.top + y) * STORED + v.left..][..crop];
        // Column x of the output reads column `at(x)` of the crop.
        let at = |x: usize| if v.mirror { crop - 1 - x } else { x };
        if channels_last {
            for (y, out_row) in out.chunks_exact_mut(3 * crop).enumerate() {
                let rows = [row(0, y), row(1, y), row(2, y)];
                for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                    for c in 0..3 {
                        px[c] = rows[c][at(x)] as f32 * a[c] + b[c];
                    }
                }
            }
        } else {
            for (c, plane) in out.chunks_exact_mut(crop * crop).enumerate() {
                for (y, out_row) in plane.chunks_exact_mut(crop).enumerate() {
                    let src = row(c, y);
                    for (x, o) in out_row.iter_mut().enumerate() {
                        *o = src[at(x)] as f32 * a[c] + b[c];
                    }
                }
            }
        }
    });
    let t = if channels_last { t.permute([0, 3, 1, 2]) } else { t }; // NCHW shape either way
    t.to_device(device)
}

/// `to_tensor` on the device that holds `pixels` (`[n, 3, 256, 256]`, u8): the same crops,
/// mirrors and normalisation ([`InputConvention::affine`]), computed in the same
/// float32 operations, so a GPU run sees the same numbers as a CPU run. Only the indices and
/// crop coordinates travel to the device.
pub fn crop_on_device(
    pixels: &Tensor,
    indices: &[usize],
    views: &[View],
    input: &InputConvention,
    channels_last: bool,
) -> Tensor {
    assert_eq!(indices.len(), views.len());
    let device = pixels.device();
    let (n, crop, stored) = (indices.len() as i64, input.crop as i64, STORED as i64);
    let on_device = |v: Vec<i64>| Tensor::from_slice(&v).to_device(device);
    let idx = on_device(indices.iter().map(|&i| i as i64).collect());
    // rows[i, y] = top_i + y; cols[i, x] = left_i + x, or left_i + crop - 1 - x when mirrored
    let rows = on_device(views.iter().flat_map(|v| (0..crop).map(move |y| v.top as i64 + y)).collect());
    let cols = on_device(
        views
            .iter()
            .flat_map(|v| (0..crop).map(move |x| v.left as i64 + if v.mirror { crop - 1 - x } else { x }))
            .collect(),
    );
    let images = pixels.index_select(0, &idx); // [n, 3, 256, 256]
    let x = images.gather(2, &rows.view([n, 1, crop, 1]).expand([n, 3, crop, stored], false), false); // [n, 3, crop, 256]
    let x = x.gather(3, &cols.view([n, 1, 1, crop]).expand([n, 3, crop, crop], false), false); // [n, 3, crop, crop]
    let x = if input.bgr { x.flip([1]) } else { x };
    let (a, b) = input.affine();
    let per_channel = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
    let x = x.to_kind(Kind::Float) * per_channel(a) + per_channel(b);
    if channels_last {
        self::channels_last(&x)
    } else {
        x
    }
}

/// The same values in channels-last memory order (NHWC strides, NCHW shape).
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::IMAGE_BYTES;
    use crate::model::backbone::{CAFFE_INPUT, TORCHVISION_INPUT};
    use rand::SeedableRng;

    #[test]
    fn every_image_once_per_epoch_then_reshuffled() {
        let mut s = EpochSampler::new(10, ChaCha8Rng::seed_from_u64(1));
        let first: Vec<usize> = (0..5).flat_map(|_| s.next(2)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let second = s.next(10);
        assert_ne!(first, second, "reshuffled");
        assert_eq!(s.epoch(), 2.0);
        // A batch larger than the domain spans passes.
        assert_eq!(s.next(25).len(), 25);
    }

    /// A 256x256 image whose value encodes (channel, y, x) lets us check crops and mirrors.
    fn gradient_set() -> ImageSet {
        let mut px = vec![0u8; IMAGE_BYTES];
        for c in 0..3 {
            for y in 0..STORED {
                for x in 0..STORED {
                    px[(c * STORED + y) * STORED + x] = ((x + 2 * y + 50 * c) % 256) as u8;
                }
            }
        }
        ImageSet { pixels: px, labels: vec![3], skipped: vec![] }
    }

    #[test]
    fn crops_mirror_and_normalise() {
        let set = gradient_set();
        let v = View { top: 5, left: 7, mirror: false };
        let t = to_tensor(&set, &[0], &[v], &CAFFE_INPUT, false, Device::Cpu);
        let cl = to_tensor(&set, &[0], &[v], &CAFFE_INPUT, true, Device::Cpu);
        assert!(cl.equal(&t), "same values in either memory order");
        assert_eq!(cl.stride(), [3 * 227 * 227, 1, 227 * 3, 3]);
        assert_eq!(t.size(), [1, 3, 227, 227]);
        // Network channel 0 is B = RGB plane 2, minus the B mean 104.
        let p = |c: usize, y: usize, x: usize| ((x + 2 * y + 50 * c) % 256) as f64;
        assert_eq!(t.double_value(&[0, 0, 0, 0]), p(2, 5, 7) - 104.0);
        assert_eq!(t.double_value(&[0, 2, 3, 4]), p(0, 8, 11) - 122.7f32 as f64);
        let m = to_tensor(&set, &[0], &[View { mirror: true, ..v }], &CAFFE_INPUT, true, Device::Cpu);
        assert_eq!(m.double_value(&[0, 1, 0, 0]), p(1, 5, 7 + 226) - 116.7f32 as f64);
        let tv = to_tensor(&set, &[0], &[View::centre(227)], &TORCHVISION_INPUT, false, Device::Cpu);
        let want = ((p(0, 14, 14) / 255.0) as f32 - 0.485) / 0.229;
        assert!((tv.double_value(&[0, 0, 0, 0]) - want as f64).abs() < 1e-5);
    }

    /// The device path cuts exactly the numbers the host path does (here both on the CPU).
    #[test]
    fn device_crops_equal_host_crops() {
        let mut set = gradient_set();
        let second: Vec<u8> = set.pixels.iter().map(|p| p.wrapping_mul(7)).collect();
        set.pixels.extend_from_slice(&second);
        set.labels.push(1);
        let pixels = Tensor::from_slice(&set.pixels).view([2, 3, 256, 256]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let views: Vec<View> = (0..4).map(|_| View::random(227, &mut rng)).chain([View::centre(227)]).collect();
        let indices = [1, 0, 1, 0, 1];
        assert!(views.iter().any(|v| v.mirror) && views.iter().any(|v| !v.mirror));
        for (input, cl) in [(CAFFE_INPUT, true), (TORCHVISION_INPUT, false), (TORCHVISION_INPUT, true)] {
            let host = to_tensor(&set, &indices, &views, &input, cl, Device::Cpu);
            let device = crop_on_device(&pixels, &indices, &views, &input, cl);
            assert!(device.equal(&host), "bgr {} channels-last {cl}", input.bgr);
            assert_eq!(device.stride(), host.stride());
        }
    }

    #[test]
    fn random_views_stay_inside_the_image() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let views: Vec<View> = (0..1000).map(|_| View::random(227, &mut rng)).collect();
        assert!(views.iter().all(|v| v.top <= 29 && v.left <= 29));
        assert!(views.iter().any(|v| v.top == 29) && views.iter().any(|v| v.left == 0));
        let mirrored = views.iter().filter(|v| v.mirror).count();
        assert!((400..600).contains(&mirrored), "{mirrored}");
        assert_eq!(View::centre(227), View { top: 14, left: 14, mirror: false });
    }
}
