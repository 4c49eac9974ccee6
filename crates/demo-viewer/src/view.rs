//! The viewer's screen: the image as large as fits, and in the corners what the disc's
//! headers claim (patient name and ID, series, image number) and how to page.

use crate::canvas::{fit, Frame, BLACK, WHITE, YELLOW};
use crate::dicom::{Decoded, Header};
use crate::psf::Font;

/// What the bottom line says.
pub const HELP: &str = "Arrows, PgUp/PgDn: next/previous image   F or Enter: finish";
/// Where the text starts from the screen's edges.
const MARGIN: usize = 4;

/// Which image of how many, on which drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub dev: String,
    /// 0-based.
    pub index: usize,
    pub count: usize,
}

/// The corner texts of an image: top left the patient, top right the series and image.
fn corners(h: &Header, at: &Position) -> (Vec<String>, Vec<String>) {
    let left = vec![h.patient_name.clone(), format!("ID: {}", h.patient_id)];
    let mut right = vec![
        format!("Image {} / {}", at.index + 1, at.count),
        format!("Series {}  Instance {}", h.series_number, h.instance_number),
    ];
    if !h.series_description.is_empty() {
        right.push(h.series_description.clone());
    }
    (left, right)
}

fn lines_right(frame: &mut Frame, font: &Font, lines: &[String], y0: usize, fg: [u8; 3]) {
    for (i, l) in lines.iter().enumerate() {
        let w = l.chars().count() * font.width;
        let x = frame.width.saturating_sub(w + MARGIN);
        frame.text(font, x, y0 + i * font.height, l, fg, BLACK);
    }
}

fn footer(frame: &mut Frame, font: &Font, at: &Position) {
    let y = frame.height.saturating_sub(font.height + MARGIN);
    let source = format!("Disc in {} (its own data, not checked)", at.dev);
    frame.text(
        font,
        MARGIN,
        y.saturating_sub(font.height),
        &source,
        YELLOW,
        BLACK,
    );
    frame.text(font, MARGIN, y, HELP, WHITE, BLACK);
}

/// The screen for a decoded image.
pub fn image(width: usize, height: usize, font: &Font, d: &Decoded, at: &Position) -> Frame {
    let mut f = Frame::new(width, height);
    let img = &d.image;
    f.draw_grey(
        img,
        fit(img.width as usize, img.height as usize, width, height),
    );
    let (left, right) = corners(&d.header, at);
    for (i, l) in left.iter().enumerate() {
        f.text(font, MARGIN, MARGIN + i * font.height, l, WHITE, BLACK);
    }
    lines_right(&mut f, font, &right, MARGIN, WHITE);
    let window = format!("W {:.0}  C {:.0}", d.window.width, d.window.center);
    let y = height.saturating_sub(2 * font.height + MARGIN);
    lines_right(&mut f, font, &[window], y, WHITE);
    footer(&mut f, font, at);
    f
}

/// The screen for an image that cannot be shown: why, where it is in the list.
pub fn failed(width: usize, height: usize, font: &Font, why: &str, at: &Position) -> Frame {
    let mut f = Frame::new(width, height);
    let msg = format!(
        "Image {} / {} cannot be shown: {}",
        at.index + 1,
        at.count,
        crate::printable(why, 200)
    );
    let y = height / 2;
    f.text(font, MARGIN, y, &msg, YELLOW, BLACK);
    footer(&mut f, font, at);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::Grey;
    use crate::window::Window;

    #[test]
    fn the_image_fills_the_screen_and_the_corners_carry_the_discs_claims() {
        let font = Font::parse(&crate::psf::tests::psf2()).expect("font");
        let d = Decoded {
            header: Header {
                patient_name: "AAA".into(),
                patient_id: "A".into(),
                series_number: 1,
                instance_number: 2,
                series_description: String::new(),
            },
            image: Grey {
                width: 4,
                height: 4,
                pixels: (0..16).map(|v| v * 16).collect(),
            },
            window: Window {
                center: 128.0,
                width: 256.0,
            },
        };
        let at = Position {
            dev: "sr0".into(),
            index: 0,
            count: 3,
        };
        let f = image(400, 200, &font, &d, &at);
        assert_eq!((f.width, f.height), (400, 200));
        // The image is 200×200 in the middle: its pixel (3, 2) is 50×50 at (250, 100).
        assert_eq!(f.get(100 + 160, 110), Some([(2 * 4 + 3) as u8 * 16; 3]));
        assert_eq!(f.get(50, 100), Some([0; 3]));
        // The patient name "AAA" is drawn top left in glyph 5 of the test font.
        assert_eq!(f.get(MARGIN + 5, MARGIN), Some(WHITE));
        assert_eq!(f.get(MARGIN + 8 + 5, MARGIN), Some(WHITE));
        // Many grey levels.
        let mut greys: Vec<u8> = f.rgb.iter().step_by(3).copied().collect();
        greys.sort_unstable();
        greys.dedup();
        assert!(greys.len() >= 16);

        let bad = failed(400, 200, &font, "bad size", &at);
        assert!(bad.rgb.iter().any(|&b| b != 0));
    }
}
