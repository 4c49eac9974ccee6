//! VOI windowing: modality values to display grey levels, by the linear function of
//! DICOM PS3.3 C.11.2.1.2.1, with the file's window or one computed from the values.

/// A window: centre and width in modality values (after rescale slope and intercept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

impl Window {
    /// The file's window if it is usable (finite, width at least 1).
    pub fn from_file(center: Option<f64>, width: Option<f64>) -> Option<Window> {
        match (center, width) {
            (Some(c), Some(w)) if c.is_finite() && w.is_finite() && w >= 1.0 => Some(Window {
                center: c,
                width: w,
            }),
            _ => None,
        }
    }

    /// The window that maps the smallest of `values` to black and the largest to white
    /// (a flat image gets width 1 around its value).
    pub fn spanning(values: impl IntoIterator<Item = f64>) -> Window {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi {
            return Window {
                center: 0.5,
                width: 1.0,
            };
        }
        Window {
            center: (lo + hi) / 2.0 + 0.5,
            width: hi - lo + 1.0,
        }
    }

    /// The grey level (0..=255) of modality value `x` (PS3.3 C.11.2.1.2.1, linear).
    pub fn grey(&self, x: f64) -> u8 {
        let c = self.center - 0.5;
        let half = (self.width - 1.0) / 2.0;
        if x <= c - half {
            0
        } else if x > c + half {
            255
        } else if self.width <= 1.0 {
            // Width 1: a threshold (the middle branch is empty).
            255
        } else {
            let y = ((x - c) / (self.width - 1.0) + 0.5) * 255.0;
            y.round().clamp(0.0, 255.0) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_function_of_the_standard() {
        // Centre 2048, width 4096: 0 → black, 4095 → white, the middle → mid grey.
        let w = Window {
            center: 2048.0,
            width: 4096.0,
        };
        assert_eq!(w.grey(-100.0), 0);
        assert_eq!(w.grey(0.0), 0);
        assert_eq!(w.grey(4095.0), 255);
        assert_eq!(w.grey(5000.0), 255);
        assert_eq!(w.grey(2047.5), 128);
        // Centre 40, width 400 (a CT soft-tissue window): -160 and 240 are the ends.
        let ct = Window {
            center: 40.0,
            width: 400.0,
        };
        assert_eq!(ct.grey(-160.0), 0);
        assert_eq!(ct.grey(240.0), 255);
        assert!(ct.grey(40.0).abs_diff(128) <= 1);
        // Monotonic.
        let mut last = 0;
        for x in -200..300 {
            let g = ct.grey(f64::from(x));
            assert!(g >= last, "{x}");
            last = g;
        }
    }

    #[test]
    fn width_one_is_a_threshold() {
        let w = Window {
            center: 10.0,
            width: 1.0,
        };
        assert_eq!(w.grey(9.0), 0);
        assert_eq!(w.grey(9.5), 0);
        assert_eq!(w.grey(10.0), 255);
    }

    #[test]
    fn spanning_maps_min_to_black_and_max_to_white() {
        let w = Window::spanning([100.0, 300.0, 200.0, f64::NAN]);
        assert_eq!(w.grey(100.0), 0);
        assert_eq!(w.grey(300.0), 255);
        let flat = Window::spanning([7.0, 7.0]);
        assert_eq!(flat.width, 1.0);
        assert_eq!(Window::spanning([]).width, 1.0);
    }

    #[test]
    fn file_window_must_be_usable() {
        assert!(Window::from_file(Some(40.0), Some(400.0)).is_some());
        assert!(Window::from_file(Some(40.0), Some(0.0)).is_none());
        assert!(Window::from_file(Some(f64::NAN), Some(10.0)).is_none());
        assert!(Window::from_file(None, Some(10.0)).is_none());
    }
}
