//! What a run feeds its network from, for one domain, in one of three places: decoded bytes in
//! host memory, cropped by the CPU in parallel (fastest on CPU); the same bytes as one u8
//! tensor on the GPU, cropped, mirrored and normalised there, so a CUDA iteration moves only
//! indices to the GPU; or, under `--finetune fc|last`, the frozen trunk's features of fixed
//! views.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use crate::data::batches::{crop_on_device, to_tensor, View};
use crate::data::features::FeatureSet;
use crate::data::images::{ImageSet, STORED};
use crate::model::backbone::InputConvention;

/// What a run feeds its network from, for one domain.
pub enum Inputs {
    /// Decoded images in host memory; batches are cut by the CPU (`to_tensor`).
    Host(ImageSet),
    /// The decoded images as one u8 tensor `[n, 3, 256, 256]` on the run's device (a GPU);
    /// batches are cut there (`crop_on_device`). `labels` stay on the host.
    Device { pixels: Tensor, labels: Vec<i64> },
    /// Trunk features of fixed views (`--finetune fc|last`); a batch picks one view per image.
    Features(FeatureSet),
}

impl Inputs {
    /// Decoded images, moved to `device` when it is a GPU and they fit there (else kept on the
    /// host, with a warning).
    pub fn images(set: ImageSet, device: Device) -> Inputs {
        if !device.is_cuda() {
            return Inputs::Host(set);
        }
        let n = set.len() as i64;
        let s = STORED as i64;
        match Tensor::from_slice(&set.pixels).view([n, 3, s, s]).f_to_device(device) {
            Ok(pixels) => Inputs::Device { pixels, labels: set.labels },
            Err(e) => {
                eprintln!(
                    "warning: the {} MB of decoded images do not fit on {device:?} ({e}); cropping on the CPU",
                    set.pixels.len() >> 20
                );
                Inputs::Host(set)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.all_labels().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every image's label, in order.
    pub fn all_labels(&self) -> &[i64] {
        match self {
            Inputs::Host(set) => &set.labels,
            Inputs::Device { labels, .. } => labels,
            Inputs::Features(f) => &f.labels,
        }
    }

    /// Bytes held in memory (host or device).
    pub fn bytes(&self) -> u64 {
        match self {
            Inputs::Host(set) => set.pixels.len() as u64,
            Inputs::Device { pixels, .. } => pixels.numel() as u64,
            Inputs::Features(f) => f.features.numel() as u64 * 4,
        }
    }

    /// Labels of `indices` as an int64 tensor on `device`.
    pub fn labels(&self, indices: &[usize], device: Device) -> Tensor {
        labels_of(self.all_labels(), indices, device)
    }

    /// Training inputs of `indices`, one random view per image drawn from `augment` in order:
    /// a random crop and mirror of an image (`View::random`), or one of the cached views.
    pub fn train_batch(
        &self,
        indices: &[usize],
        augment: &mut ChaCha8Rng,
        input: &InputConvention,
        channels_last: bool,
        device: Device,
    ) -> Tensor {
        match self {
            Inputs::Host(set) => host_train_batch(set, indices, augment, input, channels_last, device),
            Inputs::Device { .. } => {
                let views = random_views(indices.len(), input.crop, augment);
                self.images_at(indices, &views, input, channels_last, device)
            }
            Inputs::Features(f) => {
                let views: Vec<usize> = indices.iter().map(|_| augment.gen_range(0..f.views())).collect();
                f.select(indices, &views, device)
            }
        }
    }

    /// Evaluation inputs of `indices`: the centre crop, mirrored where `mirrors[k]` says
    /// (cached view 0 is the centre crop, view 1 its mirror image).
    pub fn eval_batch(
        &self,
        indices: &[usize],
        mirrors: &[bool],
        input: &InputConvention,
        channels_last: bool,
        device: Device,
    ) -> Tensor {
        assert_eq!(indices.len(), mirrors.len());
        match self {
            Inputs::Host(_) | Inputs::Device { .. } => {
                let views: Vec<View> =
                    mirrors.iter().map(|&mirror| View { mirror, ..View::centre(input.crop) }).collect();
                self.images_at(indices, &views, input, channels_last, device)
            }
            Inputs::Features(f) => f.select(indices, &mirrors.iter().map(|&m| m as usize).collect::<Vec<_>>(), device),
        }
    }

    fn images_at(
        &self,
        indices: &[usize],
        views: &[View],
        input: &InputConvention,
        channels_last: bool,
        device: Device,
    ) -> Tensor {
        match self {
            Inputs::Host(set) => to_tensor(set, indices, views, input, channels_last, device),
            Inputs::Device { pixels, .. } => crop_on_device(pixels, indices, views, input, channels_last),
            Inputs::Features(_) => unreachable!("features hold no images"),
        }
    }
}

/// `labels[i]` for each of `indices`, as an int64 tensor on `device`.
pub fn labels_of(labels: &[i64], indices: &[usize], device: Device) -> Tensor {
    let l: Vec<i64> = indices.iter().map(|&i| labels[i]).collect();
    Tensor::from_slice(&l).to_device(device)
}

/// [`Inputs::train_batch`] of decoded images in host memory: a random crop and mirror per
/// image (`View::random`, drawn from `augment` in order), cut by the CPU. Plain host data in,
/// a tensor out, so it can run on another thread (`train::prefetch`).
pub fn host_train_batch(
    set: &ImageSet,
    indices: &[usize],
    augment: &mut ChaCha8Rng,
    input: &InputConvention,
    channels_last: bool,
    device: Device,
) -> Tensor {
    let views = random_views(indices.len(), input.crop, augment);
    to_tensor(set, indices, &views, input, channels_last, device)
}

/// `n` random crops and mirrors (`View::random`), drawn from `augment` in order.
fn random_views(n: usize, crop: usize, augment: &mut ChaCha8Rng) -> Vec<View> {
    (0..n).map(|_| View::random(crop, augment)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::IMAGE_BYTES;

    #[test]
    fn images_stay_on_the_host_for_a_cpu_run() {
        let set = ImageSet { pixels: vec![0; 2 * IMAGE_BYTES], labels: vec![0, 1], skipped: vec![] };
        let inputs = Inputs::images(set, Device::Cpu);
        assert!(matches!(inputs, Inputs::Host(_)), "images stay on the host for a CPU run");
        assert_eq!(inputs.labels(&[1, 0], Device::Cpu).size(), [2]);
    }

    /// A mirrored evaluation input is the centre crop flipped left to right, and only where
    /// its flag says so.
    #[test]
    fn eval_batch_mirrors_the_centre_crop_where_asked() {
        let pixels: Vec<u8> = (0..2 * IMAGE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        let inputs = Inputs::images(ImageSet { pixels, labels: vec![0, 1], skipped: vec![] }, Device::Cpu);
        let input = crate::model::backbone::TORCHVISION_INPUT;
        let plain = inputs.eval_batch(&[0, 1], &[false, false], &input, false, Device::Cpu);
        let mixed = inputs.eval_batch(&[0, 1], &[true, false], &input, false, Device::Cpu);
        assert!(mixed.get(0).equal(&plain.get(0).flip([2])), "image 0 is not its mirror image");
        assert!(!mixed.get(0).equal(&plain.get(0)));
        assert!(mixed.get(1).equal(&plain.get(1)), "image 1 was not to be mirrored");
    }
}
