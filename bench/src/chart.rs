//! The PNG chart: one group of horizontal bars per (operation, sessions), one bar per column,
//! operations per second on a log scale. Text is drawn with ab_glyph from a TTF file read at
//! run time, so neither fontconfig nor freetype is needed.

use crate::error::{BenchError, Result, io};
use crate::ops::thousands;
use crate::report::{Column, rows};
use crate::results::Outcome;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// Where Debian (fonts-dejavu-core) and other distributions put a usable sans-serif font.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn chart_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Chart(e.to_string())
}

/// Registers the font as "sans-serif" (once per process).
pub fn load_font(explicit: Option<&Path>) -> Result<()> {
    let path: PathBuf = match explicit {
        Some(p) => p.to_path_buf(),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                BenchError::Chart(
                    "no TTF font found (install fonts-dejavu-core or pass --font FILE)".into(),
                )
            })?,
    };
    let bytes = std::fs::read(&path).map_err(io(format!("read font {}", path.display())))?;
    // plotters keeps fonts for the life of the process and wants `&'static` bytes; the chart
    // is drawn once per run, so leaking one font file is the simple, safe way to get them.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| BenchError::Chart(format!("{} is not a usable font", path.display())))
}

fn color(target: &str) -> RGBColor {
    match target {
        "limit" => RGBColor(150, 150, 150),
        "softhsm" => RGBColor(230, 130, 30),
        "ours" => RGBColor(40, 100, 200),
        "ours2" => RGBColor(60, 160, 90),
        "ours3" => RGBColor(140, 80, 180),
        _ => RGBColor(40, 170, 190),
    }
}

/// 1234.0 → "1.2k".
fn compact(v: f64) -> String {
    let scaled = |v: f64, unit: &str| {
        if (v - v.round()).abs() < 1e-9 || v >= 100.0 {
            format!("{v:.0}{unit}")
        } else {
            format!("{v:.1}{unit}")
        }
    };
    if v >= 1e6 {
        scaled(v / 1e6, "M")
    } else if v >= 1e3 {
        scaled(v / 1e3, "k")
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Draws the chart of `columns` to `path`.
///
/// # Errors
/// No font, nothing measured, or drawing failed.
pub fn draw(path: &Path, columns: &[Column], font: Option<&Path>) -> Result<()> {
    load_font(font)?;
    let value = |c: &Column, op: &str, sessions: usize| {
        c.results
            .outcome(op, sessions)
            .and_then(Outcome::ops_per_sec)
            .filter(|v| *v > 0.0)
    };
    let rows: Vec<_> = rows(columns)
        .into_iter()
        .filter(|(op, s)| columns.iter().any(|c| value(c, &op.id(), *s).is_some()))
        .collect();
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|(op, s)| columns.iter().filter_map(move |c| value(c, &op.id(), *s)))
        .collect();
    if all.is_empty() {
        return Err(BenchError::Chart("nothing measured".into()));
    }
    // The power of ten strictly below the smallest value: a 10/s bar on an axis starting at
    // 10 would have no length.
    let lo = 10f64.powf((all.iter().copied().fold(f64::MAX, f64::min).log10() - 1e-6).floor());
    let hi = 10f64.powf(all.iter().copied().fold(0.0, f64::max).log10().ceil() + 0.3);

    let bar = 11u32;
    let row_h = bar * columns.len() as u32 + 14;
    let (width, height) = (1500u32, 150 + row_h * rows.len() as u32);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let n = rows.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "hsm-bench: operations per second, all sessions (log scale; longer is faster)",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(300)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n)
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("operations per second")
        .x_label_formatter(&|v| compact(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(chart_err)?;

    let slot = 1.0 / (columns.len() as f64 + 1.0);
    for (k, c) in columns.iter().enumerate() {
        let fill = color(&c.target);
        let bars: Vec<_> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (op, s))| {
                let v = value(c, &op.id(), *s)?;
                // Row 0 at the top.
                let top = n - i as f64 - slot * (k as f64 + 0.5);
                Some(Rectangle::new(
                    [(lo, top), (v, top - slot * 0.9)],
                    fill.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(chart_err)?
            .label(c.header.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], fill.filled()));
        for (i, (op, s)) in rows.iter().enumerate() {
            if let Some(v) = value(c, &op.id(), *s) {
                let y = n - i as f64 - slot * (k as f64 + 1.0);
                let (px, py) = chart.backend_coord(&(v, y));
                root.draw(&Text::new(
                    compact(v),
                    (px + 4, py),
                    ("sans-serif", 12)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(chart_err)?;
            }
        }
    }
    for (i, (op, s)) in rows.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(lo, n - i as f64 - 0.5));
        let sessions = if *s == 1 {
            "1 session".to_string()
        } else {
            format!("{} sessions", thousands(*s as u64))
        };
        root.draw(&Text::new(
            format!("{}, {sessions}", op.short_title()),
            (px - 8, py),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(chart_err)?;
        if i > 0 && rows[i - 1].0 != *op {
            let (x0, y0) = chart.backend_coord(&(lo, n - i as f64));
            let (x1, _) = chart.backend_coord(&(hi, n - i as f64));
            root.draw(&PathElement::new(
                vec![(x0 - 290, y0), (x1, y0)],
                RGBColor(210, 210, 210),
            ))
            .map_err(chart_err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(chart_err)?;
    root.present().map_err(chart_err)?;
    Ok(())
}
