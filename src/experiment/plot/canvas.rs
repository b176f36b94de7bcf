//! What every figure shares: the font (embedded, so text renders without system fonts), text
//! styles, and writing a figure to PNG or SVG by its file's extension, through a temporary
//! file beside it that is renamed into place.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`), registered
/// with plotters as "sans-serif".
static FONT: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");

/// Text and reference lines.
pub const GREY: RGBColor = RGBColor(90, 90, 90);

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok();
    });
    if !ok {
        bail!("assets/DejaVuSans.ttf is not a font plotters can read");
    }
    Ok(())
}

pub fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// The figures' text style at `size` pixels.
pub fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>;
}

/// Renders `fig` to `path`: PNG or SVG by the extension, written to a temporary file beside it
/// and renamed.
pub fn render(fig: &impl Figure, path: &Path) -> Result<()> {
    register_font()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?.to_string_lossy();
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{ext}"));
    let size = fig.size();
    let drawn = match ext.as_str() {
        "png" => fig.draw(BitMapBackend::new(&tmp, size).into_drawing_area()),
        "svg" => fig.draw(SVGBackend::new(&tmp, size).into_drawing_area()),
        _ => bail!("{}: can only draw .png or .svg", path.display()),
    };
    if let Err(e) = drawn {
        std::fs::remove_file(&tmp).ok();
        return Err(e.context(format!("drawing {}", path.display())));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Renders `fig` as `<dir>/<stem>.png` and `.svg` and returns both paths.
pub fn render_both(fig: &impl Figure, dir: &Path, stem: &str) -> Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    for ext in ["png", "svg"] {
        let path = dir.join(format!("{stem}.{ext}"));
        render(fig, &path)?;
        written.push(path);
    }
    Ok(written)
}
