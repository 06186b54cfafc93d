//! The creditor entity's logo: a PNG decoded and re-compressed once, embedded in every notice as
//! an image XObject without further work.

use super::NoticeError;
use png::{BitDepth, ColorType, Transformations};

/// Largest PNG file taken.
pub const LOGO_MAX_BYTES: usize = 1 << 20;
/// Largest side in pixels.
pub const LOGO_MAX_SIDE: u32 = 4096;

/// An entity logo, decoded once (at configuration load) and embedded in every notice.
#[derive(Clone, PartialEq, Eq)]
pub struct Logo {
    width: u32,
    height: u32,
    /// zlib (FlateDecode) stream of the 8-bit RGB samples: the image XObject's bytes.
    pub(super) rgb: Vec<u8>,
    /// zlib stream of the 8-bit alpha samples (the /SMask), when some pixel is not opaque.
    pub(super) alpha: Option<Vec<u8>>,
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logo")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("rgb_bytes", &self.rgb.len())
            .field("alpha_bytes", &self.alpha.as_ref().map(Vec::len))
            .finish()
    }
}

fn err(msg: impl std::fmt::Display) -> NoticeError {
    NoticeError::Logo(msg.to_string())
}

impl Logo {
    /// PNG bytes (8-bit or 16-bit, gray/RGB, with or without alpha, palette) → a logo; refuses
    /// files over 1 MiB or 4096 px a side, and anything that is not a PNG, with a clear error.
    pub fn from_png(bytes: &[u8]) -> Result<Logo, NoticeError> {
        if bytes.len() > LOGO_MAX_BYTES {
            return Err(err(format_args!(
                "{} bytes: a logo PNG may be at most 1 MiB",
                bytes.len()
            )));
        }
        if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(err("not a PNG file"));
        }
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        // Palette and low-depth gray expanded, 16-bit cut to 8: the rows come out as 8-bit
        // gray, gray+alpha, RGB or RGBA.
        decoder.set_transformations(Transformations::normalize_to_color8());
        let mut reader = decoder
            .read_info()
            .map_err(|e| err(format_args!("not a readable PNG: {e}")))?;
        let (width, height) = reader.info().size();
        if width == 0 || height == 0 || width > LOGO_MAX_SIDE || height > LOGO_MAX_SIDE {
            return Err(err(format_args!(
                "{width} × {height} px: a logo may be at most {LOGO_MAX_SIDE} px a side"
            )));
        }
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| err("image too large"))?;
        let mut buf = vec![0; size];
        let frame = reader
            .next_frame(&mut buf)
            .map_err(|e| err(format_args!("not a readable PNG: {e}")))?;
        if frame.bit_depth != BitDepth::Eight {
            return Err(err(format_args!(
                "unexpected bit depth {:?}",
                frame.bit_depth
            )));
        }
        let channels = match frame.color_type {
            ColorType::Grayscale => 1,
            ColorType::GrayscaleAlpha => 2,
            ColorType::Rgb => 3,
            ColorType::Rgba => 4,
            ColorType::Indexed => return Err(err("palette not expanded")),
        };
        let pixels = width as usize * height as usize;
        let mut rgb = Vec::with_capacity(pixels * 3);
        let mut alpha = Vec::with_capacity(if channels % 2 == 0 { pixels } else { 0 });
        let row_len = width as usize * channels;
        for row in buf.chunks(frame.line_size).take(height as usize) {
            let row = row.get(..row_len).ok_or_else(|| err("short image row"))?;
            for px in row.chunks_exact(channels) {
                match channels {
                    1 | 2 => rgb.extend_from_slice(&[px[0], px[0], px[0]]),
                    _ => rgb.extend_from_slice(&px[..3]),
                }
                if channels % 2 == 0 {
                    alpha.push(px[channels - 1]);
                }
            }
        }
        let opaque = alpha.iter().all(|&a| a == u8::MAX);
        Ok(Logo {
            width,
            height,
            rgb: miniz_oxide::deflate::compress_to_vec_zlib(&rgb, 6),
            alpha: (!opaque).then(|| miniz_oxide::deflate::compress_to_vec_zlib(&alpha, 6)),
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }
}
