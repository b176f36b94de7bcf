//! Images -> bytes in memory: every image of a domain is decoded once, in parallel, converted
//! to RGB (greyscale and CMYK JPEGs included), resized to 256x256 as Caffe's data layer does
//! (no aspect-preserving crop; by default with OpenCV's bilinear filter, bit for bit, see
//! [`crate::data::resize`]), and kept as u8, channel-planar (CHW). Office-31 at this size
//! is 4110 x 196,608 bytes = 808 MB.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ParallelProgressIterator, ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::ResizeFilter;
use crate::data::resize;

/// Side of the stored square images (PAPER.md: resize to 256x256).
pub const STORED: usize = 256;
/// Bytes per stored image.
pub const IMAGE_BYTES: usize = 3 * STORED * STORED;

/// A decoded domain: `len()` images of `IMAGE_BYTES` each, RGB, CHW.
#[derive(Debug, Default)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
    /// Files that failed to decode and were skipped (only with `skip_bad`).
    pub skipped: Vec<SkippedImage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedImage {
    pub path: PathBuf,
    pub error: String,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The CHW bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
}

/// Decodes one file to 256x256 RGB CHW bytes, resized with `filter`; the error names the file.
pub fn decode(path: &Path, filter: ResizeFilter) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .with_context(|| format!("reading image {}", path.display()))?;
    if reader.format().is_none() {
        if let Ok(format) = image::ImageFormat::from_path(path) {
            reader.set_format(format);
        }
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && !jpeg_is_complete(&bytes) {
        bail!("decoding image {}: the JPEG data ends before its end-of-image marker (truncated file)", path.display());
    }
    let img = reader
        .decode()
        .with_context(|| format!("decoding image {} (corrupt, truncated or not an image)", path.display()))?;
    let hwc = resize_rgb(&img.to_rgb8(), filter);
    let mut chw = vec![0u8; IMAGE_BYTES];
    let plane = STORED * STORED;
    for (p, px) in hwc.chunks_exact(3).enumerate() {
        chw[p] = px[0];
        chw[plane + p] = px[1];
        chw[2 * plane + p] = px[2];
    }
    Ok(chw)
}

/// An RGB image resized to `STORED` x `STORED`, interleaved (HWC).
pub fn resize_rgb(rgb: &image::RgbImage, filter: ResizeFilter) -> Vec<u8> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    match filter {
        ResizeFilter::OpencvLinear => resize::resize_bilinear_cv(rgb.as_raw(), w, h, 3, STORED, STORED),
        ResizeFilter::Triangle => {
            image::imageops::resize(rgb, STORED as u32, STORED as u32, image::imageops::FilterType::Triangle).into_raw()
        }
    }
}

/// Whether JPEG `bytes` hold the end-of-image marker (FF D9) after their last start-of-scan
/// marker (FF DA). The decoder fills a file cut short with grey and reports no error, so this is
/// how a truncated file is caught; entropy-coded data never holds FF D9, and bytes after the
/// marker (some cameras append data) are allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else { return false };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes `files` in parallel with a progress bar labelled `what`. A file that fails to decode
/// stops everything with its name, unless `skip_bad`, which warns and records it instead.
pub fn decode_all(files: &[(PathBuf, i64)], what: &str, skip_bad: bool, filter: ResizeFilter) -> Result<ImageSet> {
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("{prefix:>10} decode [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    let decoded: Vec<_> = files.par_iter().progress_with(bar.clone()).map(|f| (decode(&f.0, filter), f)).collect();
    bar.finish_and_clear();
    let mut set = ImageSet { pixels: Vec::with_capacity(files.len() * IMAGE_BYTES), ..Default::default() };
    for (result, (path, label)) in decoded {
        match result {
            Ok(bytes) => {
                set.pixels.extend_from_slice(&bytes);
                set.labels.push(*label);
            }
            Err(e) if skip_bad => {
                eprintln!("warning: skipping {}: {e:#}", path.display());
                set.skipped.push(SkippedImage { path: path.clone(), error: format!("{e:#}") });
            }
            Err(e) => bail!("{e:#}; use --skip-bad-images to skip such files"),
        }
    }
    if set.is_empty() {
        bail!("no image of {what} could be decoded");
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greyscale_becomes_rgb_and_everything_256() {
        let tmp = tempfile::tempdir().unwrap();
        let grey = tmp.path().join("g.png");
        image::GrayImage::from_pixel(40, 30, image::Luma([77])).save(&grey).unwrap();
        let rgb = tmp.path().join("c.jpg");
        image::RgbImage::from_pixel(300, 300, image::Rgb([255, 0, 0])).save(&rgb).unwrap();
        let set = decode_all(&[(grey, 0), (rgb, 1)], "test", false, ResizeFilter::OpencvLinear).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.image(0).iter().all(|&v| v == 77));
        let red = set.image(1);
        let plane = STORED * STORED;
        assert!(red[..plane].iter().all(|&v| v > 250) && red[plane..].iter().all(|&v| v < 5));
    }

    /// A CMYK JPEG (as some Office and Caltech files are) decodes to RGB. The fixture is pure
    /// red written by PIL: `Image.new('CMYK', (16, 12), (0, 255, 255, 0)).save(..., quality=95)`.
    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cmyk-red.jpg");
        let px = decode(&path, ResizeFilter::OpencvLinear).unwrap();
        let plane = STORED * STORED;
        let (r, g, b) = (px[plane / 2], px[plane + plane / 2], px[2 * plane + plane / 2]);
        assert!(r > 230 && g < 25 && b < 25, "rgb = ({r}, {g}, {b})");
    }

    #[test]
    fn a_bad_file_is_named_or_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good.png");
        image::RgbImage::new(8, 8).save(&good).unwrap();
        let jpeg = tmp.path().join("whole.jpg");
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9])).save(&jpeg).unwrap();
        let bytes = std::fs::read(&jpeg).unwrap();
        assert!(jpeg_is_complete(&bytes));
        let cut = tmp.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = format!("{:#}", decode(&cut, ResizeFilter::OpencvLinear).unwrap_err());
        assert!(err.contains("cut.jpg") && err.contains("truncated"), "{err}");
        let bad = tmp.path().join("notes.txt");
        std::fs::write(&bad, "not an image").unwrap();
        let files = [(good, 0), (bad.clone(), 1)];
        let err = format!("{:#}", decode_all(&files, "t", false, ResizeFilter::OpencvLinear).unwrap_err());
        assert!(err.contains("notes.txt") && err.contains("--skip-bad-images"), "{err}");
        let set = decode_all(&files, "t", true, ResizeFilter::OpencvLinear).unwrap();
        assert_eq!((set.len(), set.skipped.len()), (1, 1));
        assert_eq!(set.skipped[0].path, bad);
    }
}
