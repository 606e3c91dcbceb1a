//! QR codes of a lot's link, as PNG (for a phone or a label printer) and SVG (for the label
//! sheet and print shops).

use qrcode::{Color, EcLevel, QrCode};

/// Modules of white around the code (the QR standard's quiet zone).
const QUIET: usize = 4;

fn code(data: &str) -> anyhow::Result<QrCode> {
    // M: a quarter of a torn or dirty label still reads.
    Ok(QrCode::with_error_correction_level(data, EcLevel::M)?)
}

/// The QR code as a greyscale PNG, `scale` pixels per module, with its quiet zone.
pub fn png(data: &str, scale: usize) -> anyhow::Result<Vec<u8>> {
    let code = code(data)?;
    let width = code.width();
    let colors = code.to_colors();
    let scale = scale.clamp(1, 32);
    let side = (width + 2 * QUIET) * scale;
    let mut pixels = vec![255_u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % width + QUIET, i / width + QUIET);
        for y in my * scale..(my + 1) * scale {
            let row = y * side;
            pixels[row + mx * scale..row + (mx + 1) * scale].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let side = u32::try_from(side)?;
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

/// The QR code as an SVG document, at least `min_px` on a side.
pub fn svg(data: &str, min_px: u32) -> anyhow::Result<String> {
    Ok(code(data)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(min_px, min_px)
        .quiet_zone(true)
        .build())
}
