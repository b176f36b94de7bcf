//! The default resize (`opencv-linear`) against OpenCV itself, on real Office images: the
//! project's decode gives RGB pixels, which are written losslessly as PNG; the virtualenv's
//! `cv2` (opencv-python-headless, installed by `make setup`) reads that PNG and runs
//! `cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)`, as Caffe's data layer does;
//! the project's `images::resize_rgb` resizes the same pixels. The two must agree to at most
//! one grey level (measured: exactly, 0 values differ). Comparing after the same decode keeps
//! the JPEG decoders' own differences (libjpeg-turbo vs the `image` crate, up to 10 grey
//! levels) out of the resize check.

mod common;

use std::process::Command;

use deep_coral::config::ResizeFilter;
use deep_coral::data::images::{resize_rgb, STORED};

const IMAGES: [&str; 10] = [
    "amazon/bike/frame_0030.jpg",
    "amazon/monitor/frame_0096.jpg",
    "amazon/mug/frame_0037.jpg",
    "dslr/projector/frame_0013.jpg",
    "dslr/backpack/frame_0001.jpg",
    "webcam/monitor/frame_0039.jpg",
    "webcam/calculator/frame_0023.jpg",
    "caltech10/bike/224_0035.jpg",
    // greyscale JPEGs (replicated to RGB by the decoder)
    "caltech10/headphones/101_0069.jpg",
    "caltech10/keyboard/045_0053.jpg",
];

const CV2_RESIZE: &str = r#"
import sys, cv2
for png in sys.argv[1:]:
    bgr = cv2.imread(png, cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    out = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_LINEAR)
    open(png + ".cv.rgb", "wb").write(out.tobytes())
print(cv2.__version__)
"#;

#[test]
fn opencv_linear_equals_cv2_resize_on_real_images() {
    let root = common::shared().join("data/office-caltech10");
    let tmp = tempfile::tempdir().unwrap();
    let mut pngs = Vec::new();
    let mut ours = Vec::new();
    for (i, rel) in IMAGES.iter().enumerate() {
        let rgb = image::open(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")).to_rgb8();
        let png = tmp.path().join(format!("{i}.png"));
        rgb.save(&png).unwrap();
        ours.push(resize_rgb(&rgb, ResizeFilter::OpencvLinear));
        pngs.push(png);
    }
    let out = common::run_ok(Command::new(common::python()).arg("-c").arg(CV2_RESIZE).args(&pngs));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut worst = 0u8;
    let mut differing = 0usize;
    for ((rel, png), mine) in IMAGES.iter().zip(&pngs).zip(&ours) {
        let cv = std::fs::read(png.with_extension("png.cv.rgb")).unwrap();
        assert_eq!(cv.len(), STORED * STORED * 3, "{rel}");
        for (a, b) in cv.iter().zip(mine) {
            let d = a.abs_diff(*b);
            worst = worst.max(d);
            differing += usize::from(d > 0);
        }
    }
    eprintln!("cv2 {version}: max |diff| {worst}, {differing} of {} values differ", IMAGES.len() * STORED * STORED * 3);
    assert!(worst <= 1, "opencv-linear differs from cv2 {version} by {worst} grey levels");

    // The Triangle filter is a different resize: it low-pass filters when shrinking.
    let dslr = image::open(root.join(IMAGES[3])).unwrap().to_rgb8();
    let tri = resize_rgb(&dslr, ResizeFilter::Triangle);
    let lin = resize_rgb(&dslr, ResizeFilter::OpencvLinear);
    let max = tri.iter().zip(&lin).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(max > 10, "triangle and opencv-linear should differ on a 1000px dslr image, max {max}");
}
