//! A frame in memory (RGB, rows top to bottom): an image scaled to fit, text in the
//! console font.

use crate::dicom::Grey;
use crate::psf::Font;

pub type Rgb = [u8; 3];
pub const BLACK: Rgb = [0, 0, 0];
pub const WHITE: Rgb = [255, 255, 255];
pub const YELLOW: Rgb = [255, 255, 85];

/// A rectangle on the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Where an image of `w` × `h` goes on a screen of `sw` × `sh`: as large as fits with its
/// aspect ratio kept, centred.
pub fn fit(w: usize, h: usize, sw: usize, sh: usize) -> Rect {
    if w == 0 || h == 0 || sw == 0 || sh == 0 {
        return Rect {
            x: 0,
            y: 0,
            width: 0,
            height: 0,
        };
    }
    // Width-limited unless that makes it too tall (cross-multiplied, no rounding).
    let (width, height) = if sw * h <= sh * w {
        (sw, (h * sw / w).max(1))
    } else {
        ((w * sh / h).max(1), sh)
    };
    Rect {
        x: (sw - width) / 2,
        y: (sh - height) / 2,
        width,
        height,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Frame {
    /// A black frame.
    pub fn new(width: usize, height: usize) -> Frame {
        Frame {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    pub fn get(&self, x: usize, y: usize) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        Some([self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]])
    }

    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn fill(&mut self, r: Rect, c: Rgb) {
        for y in r.y..(r.y + r.height).min(self.height) {
            for x in r.x..(r.x + r.width).min(self.width) {
                self.set(x, y, c);
            }
        }
    }

    /// Draws `img` into `to`, scaled by nearest neighbour (pixel centres).
    pub fn draw_grey(&mut self, img: &Grey, to: Rect) {
        let (w, h) = (img.width as usize, img.height as usize);
        if w == 0 || h == 0 || img.pixels.len() < w * h || to.width == 0 || to.height == 0 {
            return;
        }
        for dy in 0..to.height {
            let sy = ((2 * dy + 1) * h / (2 * to.height)).min(h - 1);
            for dx in 0..to.width {
                let sx = ((2 * dx + 1) * w / (2 * to.width)).min(w - 1);
                let g = img.pixels[sy * w + sx];
                self.set(to.x + dx, to.y + dy, [g, g, g]);
            }
        }
    }

    /// Writes `text` with its top-left corner at (`x`, `y`): `fg` glyph pixels on `bg`
    /// cells; what does not fit is cut off. Returns the width drawn.
    pub fn text(&mut self, font: &Font, x: usize, y: usize, text: &str, fg: Rgb, bg: Rgb) -> usize {
        for (i, c) in text.chars().enumerate() {
            let cx = x + i * font.width;
            for gy in 0..font.height {
                for gx in 0..font.width {
                    let on = font.pixel(c, gx, gy);
                    self.set(cx + gx, y + gy, if on { fg } else { bg });
                }
            }
        }
        text.chars().count() * font.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_ratio_and_centres() {
        let r = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert_eq!(fit(512, 512, 800, 600), r(100, 0, 600, 600));
        assert_eq!(fit(512, 512, 1024, 768), r(128, 0, 768, 768));
        assert_eq!(fit(1000, 100, 800, 600), r(0, 260, 800, 80));
        assert_eq!(fit(100, 1000, 800, 600), r(370, 0, 60, 600));
        assert_eq!(fit(0, 10, 800, 600).width, 0);
        // Extreme ratios still get at least one pixel.
        assert_eq!(fit(4096, 1, 800, 600).height, 1);
    }

    #[test]
    fn nearest_neighbour_scaling() {
        let img = Grey {
            width: 2,
            height: 2,
            pixels: vec![10, 20, 30, 40],
        };
        let mut f = Frame::new(6, 4);
        f.draw_grey(&img, fit(2, 2, 6, 4));
        // 4×4 in the middle: each source pixel becomes a 2×2 block.
        assert_eq!(f.get(0, 0), Some(BLACK));
        assert_eq!(f.get(1, 0), Some([10; 3]));
        assert_eq!(f.get(2, 1), Some([10; 3]));
        assert_eq!(f.get(3, 0), Some([20; 3]));
        assert_eq!(f.get(1, 3), Some([30; 3]));
        assert_eq!(f.get(4, 3), Some([40; 3]));
        assert_eq!(f.get(5, 3), Some(BLACK));
        // Same size: identity.
        let mut g = Frame::new(2, 2);
        g.draw_grey(&img, fit(2, 2, 2, 2));
        assert_eq!(
            g.rgb.iter().step_by(3).copied().collect::<Vec<_>>(),
            [10, 20, 30, 40]
        );
        // A lying image (fewer pixels than its size) draws nothing.
        let liar = Grey {
            width: 100,
            height: 100,
            pixels: vec![1; 5],
        };
        g.draw_grey(&liar, fit(100, 100, 2, 2));
        assert_eq!(g.get(0, 0), Some([10; 3]));
    }

    #[test]
    fn text_is_drawn_in_glyph_cells_and_clipped() {
        let font = Font::parse(&crate::psf::tests::psf2()).expect("font");
        let mut f = Frame::new(20, 10);
        let w = f.text(&font, 1, 1, "AA", WHITE, [0, 0, 200]);
        assert_eq!(w, 16);
        // 'A' is glyph 5: row 0 = 0b0000_0101 → pixels 5 and 7 set.
        assert_eq!(f.get(1 + 5, 1), Some(WHITE));
        assert_eq!(f.get(1 + 6, 1), Some([0, 0, 200]));
        assert_eq!(f.get(9 + 7, 1), Some(WHITE));
        assert_eq!(f.get(0, 0), Some(BLACK));
        // Off the frame: clipped, no panic.
        f.text(&font, 15, 8, "AAAA", WHITE, BLACK);
    }
}
