//! The report's chart, drawn in Rust (plotters on an in-memory RGB bitmap, encoded as PNG): no
//! browser, no system fonts (DejaVu Sans is bundled), so it renders the same on any server.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::SlaReport;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 560;
const FONT: &str = "sans-serif";
const APPROVED: RGBColor = RGBColor(46, 160, 67);
const REJECTED: RGBColor = RGBColor(207, 34, 46);
const EXPIRED: RGBColor = RGBColor(140, 149, 159);
const MEDIAN: RGBColor = RGBColor(9, 105, 218);
const P90: RGBColor = RGBColor(191, 135, 0);

/// Registers the bundled font with plotters, once per process.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_err() {
            tracing::error!("the bundled chart font could not be read");
        }
    });
}

/// Decisions per day (stacked by outcome) above the daily median and p90 time to decision.
pub fn png(report: &SlaReport) -> Result<Vec<u8>, String> {
    register_font();
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(report, &mut pixels).map_err(|e| format!("chart: {e}"))?;
    encode(&pixels).map_err(|e| format!("chart: PNG: {e}"))
}

/// One panel of the chart: half the picture, below the title.
type Panel<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw(report: &SlaReport, pixels: &mut [u8]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} — SLA, last {} (to {} UTC)",
        report.role,
        report.period,
        report.to.format("%Y-%m-%d %H:%M")
    );
    let root = root.titled(&title, (FONT, 22))?;
    let (upper, lower) = root.split_vertically(HEIGHT / 2 - 10);
    let days = report.daily.len().max(1);
    // Day i is centred on x = i, so each date label sits under its day.
    let x_range = -0.5f64..days as f64 - 0.5;
    let label = |x: &f64| day_label(report, *x);
    draw_decisions(&upper, report, x_range.clone(), &label)?;
    draw_times(&lower, report, x_range, &label)?;
    root.present()?;
    Ok(())
}

/// The date under a whole x (a day's centre); nothing between days.
fn day_label(report: &SlaReport, x: f64) -> String {
    let index = x.round();
    if index < 0.0 || (x - index).abs() > 1e-6 {
        return String::new();
    }
    report
        .daily
        .get(index as usize)
        .map(|d| d.date.format("%m-%d").to_string())
        .unwrap_or_default()
}

/// Decisions per day, stacked approved, rejected, expired.
fn draw_decisions(
    area: &Panel<'_>,
    report: &SlaReport,
    x_range: std::ops::Range<f64>,
    label: &dyn Fn(&f64) -> String,
) -> Result<(), Box<dyn std::error::Error>> {
    let days = report.daily.len().max(1);
    let most = report
        .daily
        .iter()
        .map(|d| d.approved + d.rejected + d.expired)
        .max()
        .unwrap_or(0)
        .max(1);
    // Whole numbers of decisions: one tick per decision up to ten, then a tenth of the top.
    let top = if most < 10 {
        most + 1
    } else {
        most.div_ceil(10) * 11
    };
    let mut decisions = ChartBuilder::on(area)
        .margin(12)
        .caption("Decisions per day", (FONT, 16))
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(x_range, 0f64..top as f64)?;
    decisions
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(days.min(12))
        .y_labels(top as usize + 1)
        .x_label_formatter(label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 12))
        .draw()?;
    for (colour, name, pick) in [
        (APPROVED, "approved", 0usize),
        (REJECTED, "rejected", 1),
        (EXPIRED, "expired", 2),
    ] {
        let bars = report.daily.iter().enumerate().filter_map(move |(i, d)| {
            let counts = [d.approved, d.rejected, d.expired];
            let base: u64 = counts[..pick].iter().sum();
            let top = base + counts[pick];
            (top > base).then(|| {
                let x = i as f64;
                Rectangle::new(
                    [(x - 0.35, base as f64), (x + 0.35, top as f64)],
                    colour.filled(),
                )
            })
        });
        decisions
            .draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    decisions
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// The daily median and p90 time to decision, in minutes.
fn draw_times(
    area: &Panel<'_>,
    report: &SlaReport,
    x_range: std::ops::Range<f64>,
    label: &dyn Fn(&f64) -> String,
) -> Result<(), Box<dyn std::error::Error>> {
    let days = report.daily.len().max(1);
    let minutes = |s: Option<i64>| s.map(|s| s as f64 / 60.0);
    let slowest = report
        .daily
        .iter()
        .filter_map(|d| minutes(d.p90_seconds))
        .fold(1.0f64, f64::max);
    let mut times = ChartBuilder::on(area)
        .margin(12)
        .caption("Time to decision (minutes)", (FONT, 16))
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(x_range, 0f64..slowest * 1.15)?;
    times
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(days.min(12))
        .x_label_formatter(label)
        .label_style((FONT, 12))
        .draw()?;
    for (colour, name, pick) in [(MEDIAN, "median", false), (P90, "p90", true)] {
        let points: Vec<(f64, f64)> = report
            .daily
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let value = if pick {
                    d.p90_seconds
                } else {
                    d.median_seconds
                };
                minutes(value).map(|m| (i as f64, m))
            })
            .collect();
        times
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2)));
        times.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    times
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

fn encode(pixels: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DayFigures, Period, compute};

    #[test]
    fn draws_a_png_of_the_reports_size_with_both_panels() {
        let to = "2026-11-21T12:00:00Z".parse().unwrap();
        let mut report = compute("finance", Period::Week, to, &[]);
        report.daily[2] = DayFigures {
            approved: 3,
            rejected: 1,
            expired: 1,
            median_seconds: Some(600),
            p90_seconds: Some(1800),
            ..report.daily[2].clone()
        };
        let png = png(&report).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = ::png::Decoder::new(std::io::Cursor::new(&png));
        let info = decoder.read_info().unwrap();
        assert_eq!((info.info().width, info.info().height), (WIDTH, HEIGHT));

        // The bars and lines are really there: their colours appear in the pixels.
        let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        draw(&report, &mut pixels).unwrap();
        let has = |c: RGBColor| pixels.chunks(3).any(|p| p == [c.0, c.1, c.2]);
        for colour in [APPROVED, REJECTED, EXPIRED, MEDIAN, P90] {
            assert!(has(colour), "{colour:?} drawn");
        }
    }

    #[test]
    fn an_empty_window_still_draws() {
        let to = "2026-11-21T12:00:00Z".parse().unwrap();
        let report = compute("finance", Period::Quarter, to, &[]);
        assert!(png(&report).unwrap().len() > 1000);
    }
}
