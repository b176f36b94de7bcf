//! A pure-Rust port of OpenCV's `cv::resize(src, dst, dsize, 0, 0, INTER_LINEAR)` for 8-bit
//! images, bit-exact with OpenCV's CPU path.
//!
//! Why: Caffe's data layer (used by the Deep CORAL authors) resizes every image to 256x256 with
//! `cv::resize(..., INTER_LINEAR)`. OpenCV's u8 bilinear resize is a fixed-point two-pass
//! filter that does **not** low-pass filter when shrinking (it samples just the 2x2 nearest
//! source pixels), so it differs visibly from the `image` crate's `FilterType::Triangle`, which
//! widens its kernel by the scale factor on downscale.

/// `INTER_RESIZE_COEF_BITS` in OpenCV: interpolation weights are integers scaled by 2^11.
const COEF_BITS: u32 = 11;
/// `INTER_RESIZE_COEF_SCALE` = 2048.
const COEF_SCALE: i32 = 1 << COEF_BITS;

/// Resizes an interleaved (HWC) u8 image of `channels` channels from `src_w` x `src_h` to
/// `dst_w` x `dst_h` exactly as OpenCV's `cv::resize(..., INTER_LINEAR)` does on the CPU
/// (checked bit-exact against `cv2.resize` from opencv-python-headless 5.1.0).
///
/// The scheme, following OpenCV's `resize.cpp` / `resize.simd.hpp` (`hal::resize` ->
/// `resize_cpu` -> `resizeGeneric_<HResizeLinear<uchar,int,short,2048>,
/// VResizeLinear<uchar,int,short,...>>`):
///
/// * Same size: a plain copy (`cv::resize` short-cuts `dsize == ssize`).
/// * Exact 2x downscale in both axes (`src_w == 2*dst_w && src_h == 2*dst_h`): OpenCV switches
///   INTER_LINEAR to its fast INTER_AREA path, i.e. the rounded mean of each 2x2 block,
///   `(a + b + c + d + 2) >> 2` (for 2 channels it rounds `sum * 0.25` half-to-even instead).
/// * Otherwise, with `inv_scale = dst / src` and `scale = 1 / inv_scale` (both f64, computed
///   in that order like OpenCV), for each destination column
///   `fx = (f32)((dx + 0.5) * scale - 0.5)`, `sx = floor(fx)`, `fx -= sx` (f32); at the left
///   border (`sx < 0`) `sx = 0, fx = 0`; at the right border (`sx >= src_w - 1`)
///   `sx = src_w - 1, fx = 0` and those columns take `S[sx] * 2048`. The weights are
///   `a0 = round_half_even((1 - fx) * 2048)`, `a1 = round_half_even(fx * 2048)` (OpenCV's
///   `saturate_cast<short>(float)`), so `a0 + a1` need not be exactly 2048. Rows use the same
///   formula giving `sy`, `b0`, `b1`, but `sy` is *not* clamped and the weights are kept; the
///   two source rows `sy` and `sy + 1` are clamped into `[0, src_h - 1]` instead.
/// * Horizontal pass (exact, i32): `H[x] = S[sx] * a0 + S[sx + cn] * a1` per channel.
/// * Vertical pass, as OpenCV's SIMD kernel `VResizeLinearVec_32s8u` and its matching scalar
///   specialisation compute it (not the textbook `(H0*b0 + H1*b1 + 2^21) >> 22`):
///   `dst = ((b0 * (H0 >> 4)) >> 16) + ((b1 * (H1 >> 4)) >> 16) + 2) >> 2`, saturated to u8.
///   (OpenCV 4.x/5.x use this same formula in the scalar tail, so the result does not
///   depend on the SIMD width.)
///
/// Not reproduced: OpenCL (`UMat`) and custom-HAL backends. The bundled IPP HAL declines u8
/// INTER_LINEAR unless non-exact IPP mode is enabled, so it does not apply by default.
pub fn resize_bilinear_cv(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    assert!(src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0 && channels > 0, "empty image or size");
    assert_eq!(src.len(), src_w * src_h * channels, "src length does not match its size");
    let cn = channels;
    if src_w == dst_w && src_h == dst_h {
        return src.to_vec();
    }

    let inv_scale_x = dst_w as f64 / src_w as f64;
    let inv_scale_y = dst_h as f64 / src_h as f64;
    let scale_x = 1.0 / inv_scale_x;
    let scale_y = 1.0 / inv_scale_y;

    // "in case of scale_x && scale_y is equal to 2, INTER_AREA (fast) also is equal to INTER_LINEAR"
    let iscale_x = scale_x.round_ties_even();
    let iscale_y = scale_y.round_ties_even();
    let is_area_fast = (scale_x - iscale_x).abs() < f64::EPSILON && (scale_y - iscale_y).abs() < f64::EPSILON;
    if is_area_fast && iscale_x == 2.0 && iscale_y == 2.0 {
        return area_fast_2x(src, src_w, cn, dst_w, dst_h);
    }

    // Column tables.
    let mut xofs = vec![0usize; dst_w];
    let mut alpha = vec![[0i32; 2]; dst_w];
    let mut xmax = dst_w;
    for dx in 0..dst_w {
        let (mut sx, mut fx) = source_coord(dx, scale_x);
        if sx < 0 {
            sx = 0;
            fx = 0.0;
        }
        if sx + 1 >= src_w as i64 {
            xmax = xmax.min(dx);
            if sx >= src_w as i64 - 1 {
                sx = src_w as i64 - 1;
                fx = 0.0;
            }
        }
        xofs[dx] = sx as usize;
        alpha[dx] = [coef(1.0 - fx), coef(fx)];
    }

    // Row tables (rows are clamped when fetched, weights are kept as computed).
    let mut yofs = vec![0i64; dst_h];
    let mut beta = vec![[0i32; 2]; dst_h];
    for dy in 0..dst_h {
        let (sy, fy) = source_coord(dy, scale_y);
        yofs[dy] = sy;
        beta[dy] = [coef(1.0 - fy), coef(fy)];
    }

    let row_w = dst_w * cn;
    let hresize = |sy: usize, out: &mut [i32]| {
        let s = &src[sy * src_w * cn..(sy + 1) * src_w * cn];
        for dx in 0..dst_w {
            let sx = xofs[dx] * cn;
            let o = &mut out[dx * cn..(dx + 1) * cn];
            if dx < xmax {
                let [a0, a1] = alpha[dx];
                for k in 0..cn {
                    o[k] = s[sx + k] as i32 * a0 + s[sx + cn + k] as i32 * a1;
                }
            } else {
                for k in 0..cn {
                    o[k] = s[sx + k] as i32 * COEF_SCALE;
                }
            }
        }
    };

    let clip_row = |y: i64| y.clamp(0, src_h as i64 - 1) as usize;
    let mut dst = vec![0u8; row_w * dst_h];
    // Two cached horizontally-resized rows, keyed by source row index.
    let mut rows: [(usize, Vec<i32>); 2] = [(usize::MAX, vec![0; row_w]), (usize::MAX, vec![0; row_w])];
    for dy in 0..dst_h {
        let y0 = clip_row(yofs[dy]);
        let y1 = clip_row(yofs[dy] + 1);
        for (slot, y) in [(0usize, y0), (1usize, y1)] {
            if rows[slot].0 != y {
                if let Some(other) = (0..2).find(|&o| o != slot && rows[o].0 == y) {
                    let copy = rows[other].1.clone();
                    rows[slot] = (y, copy);
                } else {
                    hresize(y, &mut rows[slot].1);
                    rows[slot].0 = y;
                }
            }
        }
        let [b0, b1] = beta[dy];
        let (r0, r1) = (&rows[0].1, &rows[1].1);
        let out = &mut dst[dy * row_w..(dy + 1) * row_w];
        for x in 0..row_w {
            let v = (((b0 * (r0[x] >> 4)) >> 16) + ((b1 * (r1[x] >> 4)) >> 16) + 2) >> 2;
            out[x] = v.clamp(0, 255) as u8;
        }
    }
    dst
}

/// OpenCV's source coordinate for destination index `d`: `f = (f32)((d + 0.5) * scale - 0.5)`,
/// `s = floor(f)`, returns `(s, f - s)` with the subtraction done in f32.
fn source_coord(d: usize, scale: f64) -> (i64, f32) {
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    (s as i64, f - s)
}

/// `saturate_cast<short>(w * INTER_RESIZE_COEF_SCALE)` on an f32 weight (round half to even).
fn coef(w: f32) -> i32 {
    (w * COEF_SCALE as f32).round_ties_even().clamp(i16::MIN as f32, i16::MAX as f32) as i32
}

/// OpenCV's `resizeAreaFast_` for an exact 2x2 decimation.
fn area_fast_2x(src: &[u8], src_w: usize, cn: usize, dst_w: usize, dst_h: usize) -> Vec<u8> {
    let sstep = src_w * cn;
    let mut dst = vec![0u8; dst_w * dst_h * cn];
    for dy in 0..dst_h {
        let s0 = &src[2 * dy * sstep..(2 * dy + 1) * sstep];
        let s1 = &src[(2 * dy + 1) * sstep..(2 * dy + 2) * sstep];
        let out = &mut dst[dy * dst_w * cn..(dy + 1) * dst_w * cn];
        for dx in 0..dst_w {
            for k in 0..cn {
                let i = 2 * dx * cn + k;
                let sum = s0[i] as u32 + s0[i + cn] as u32 + s1[i] as u32 + s1[i + cn] as u32;
                out[dx * cn + k] = if cn == 2 {
                    // Generic (non-"fast_mode") branch: saturate_cast<uchar>(sum * 0.25f).
                    (sum as f32 * 0.25).round_ties_even() as u8
                } else {
                    ((sum + 2) >> 2) as u8
                };
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_returns_input() {
        let src: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_bilinear_cv(&src, 5, 7, 3, 5, 7), src);
    }

    #[test]
    fn two_by_two_to_four_by_four() {
        // Single channel [[0, 100], [200, 40]]. Upscale by 2: scale = 0.5, so the source
        // coordinates are -0.25, 0.25, 0.75, 1.25 -> (sx, fx) = (0, 0) [clamped], (0, .25),
        // (0, .75), (1, 0) [right border]. Weights (2048,0), (1536,512), (512,1536), border.
        // Rows: sy = -1 (both rows clamp to 0, b = 512/1536), 0 (b = 1536/512),
        // 0 (b = 512/1536), 1 (rows 1,1; b = 1536/512).
        // Horizontal rows (x2048): row0 = [0, 25, 75, 100], row1 = [200, 160, 80, 40].
        // Vertical: e.g. dy=1, x=1: 0.75*25 + 0.25*160 = 58.75 -> 59;
        //           dy=2, x=2: 0.25*75 + 0.75*80 = 78.75 -> 79.
        let src = [0u8, 100, 200, 40];
        let out = resize_bilinear_cv(&src, 2, 2, 1, 4, 4);
        #[rustfmt::skip]
        let expected = [
            0, 25, 75, 100,
            50, 59, 76, 85,
            150, 126, 79, 55,
            200, 160, 80, 40,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn constant_image_stays_constant() {
        for &(sw, sh, dw, dh) in
            &[(300, 300, 256, 256), (7, 5, 256, 256), (1000, 750, 256, 256), (512, 512, 256, 256), (1, 1, 3, 2)]
        {
            for &v in &[0u8, 1, 127, 128, 254, 255] {
                let src = vec![v; sw * sh * 3];
                let out = resize_bilinear_cv(&src, sw, sh, 3, dw, dh);
                assert_eq!(out.len(), dw * dh * 3);
                assert!(out.iter().all(|&p| p == v), "{sw}x{sh}->{dw}x{dh} value {v}");
            }
        }
    }

    #[test]
    fn exact_half_is_2x2_mean_rounded_up() {
        let src = [0u8, 1, 1, 0, /* row 2 */ 0, 0, 0, 0];
        // 4x2 grey -> 2x1: blocks sum to 1 and 1 -> (1+2)>>2 = 0.
        assert_eq!(resize_bilinear_cv(&src, 4, 2, 1, 2, 1), vec![0, 0]);
        let src = [1u8, 1, 0, 0, /* row 2 */ 0, 0, 255, 255];
        // sums 2 -> (2+2)>>2 = 1; 510 -> 128.
        assert_eq!(resize_bilinear_cv(&src, 4, 2, 1, 2, 1), vec![1, 128]);
    }

    #[test]
    fn channels_are_independent() {
        // Resizing an RGB image equals resizing each plane as a grey image.
        let (sw, sh, dw, dh) = (37, 23, 16, 29);
        let src: Vec<u8> = (0..sw * sh * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let rgb = resize_bilinear_cv(&src, sw, sh, 3, dw, dh);
        for c in 0..3 {
            let plane: Vec<u8> = src.iter().skip(c).step_by(3).copied().collect();
            let out = resize_bilinear_cv(&plane, sw, sh, 1, dw, dh);
            let got: Vec<u8> = rgb.iter().skip(c).step_by(3).copied().collect();
            assert_eq!(out, got);
        }
    }

    // Bit-exactness against cv2.resize(INTER_LINEAR) without Python: the cases in
    // tests/data/cv2_resize_reference.txt were written with OpenCV 5.1.0 (4.10 and 4.14 give
    // the same bytes) from the same LCG pixels; tests/opencv_resize.rs checks real images
    // against the cv2 of the project's virtualenv.
    fn fixture_pixels(n: usize, seed: u64, pattern: &str) -> Vec<u8> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = (state * 1103515245 + 12345) & 0x7FFF_FFFF;
                let b = ((state >> 16) & 0xFF) as u8;
                if pattern == "lcg" {
                    b
                } else if b & 0x80 != 0 {
                    255
                } else {
                    0
                }
            })
            .collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn matches_cv2_reference_cases() {
        let text = include_str!("../../tests/data/cv2_resize_reference.txt");
        let mut cases = 0;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<usize>().unwrap();
            let (sw, sh, cn, dw, dh) = (n(0), n(1), n(2), n(3), n(4));
            let (pattern, seed) = (f[5], f[6].parse::<u64>().unwrap());
            let src = fixture_pixels(sw * sh * cn, seed, pattern);
            let expected = unhex(f[7]);
            let got = resize_bilinear_cv(&src, sw, sh, cn, dw, dh);
            assert_eq!(got, expected, "{sw}x{sh}x{cn} -> {dw}x{dh} ({pattern}, seed {seed})");
            cases += 1;
        }
        assert_eq!(cases, 14);
    }
}
