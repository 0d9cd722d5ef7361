//! The table as a picture: `target/rpcop-bench/compare.svg`. One bar per
//! row, rpcop's rows per second on a log scale, coloured by the path it
//! measured (`isolation/transport`), with a black mark at the baseline's
//! rows per second where the row's ratio is one of times; each bar is
//! labelled with its ratio, target and whether it was met.

use std::path::Path;

use plotters::prelude::*;

use super::harness::Row;

const WIDTH: u32 = 1400;
const LABEL: i32 = 620;
const BAR_END: i32 = 1120;
const LINE: i32 = 30;
const TOP: i32 = 70;

/// Draws `rows` into an SVG file at `path`.
pub(super) fn chart(rows: &[Row], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let height = TOP + LINE * i32::try_from(rows.len())? + 40;
    let root = SVGBackend::new(path, (WIDTH, u32::try_from(height)?)).into_drawing_area();
    root.fill(&WHITE)?;
    let font = |size| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        "rpcop compare: rows per second (log scale), by isolation/transport; | = baseline",
        (10, 15),
        font(20),
    ))?;
    let rates: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.rows_per_s, baseline_rate(r)])
        .collect();
    let (low, high) = rates
        .iter()
        .filter(|r| r.is_finite() && **r > 0.0)
        .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
    let (low, high) = (
        low.log10().floor(),
        high.log10().ceil().max(low.log10() + 1.0),
    );
    let x = |rate: f64| {
        let at = (rate.max(1.0).log10() - low) / (high - low);
        LABEL + ((f64::from(BAR_END - LABEL) * at.clamp(0.0, 1.0)) as i32)
    };
    for decade in (low as i32)..=(high as i32) {
        let at = x(10f64.powi(decade));
        root.draw(&PathElement::new(
            [(at, TOP - 10), (at, height - 30)],
            RGBColor(220, 220, 220),
        ))?;
        root.draw(&Text::new(
            format!("1e{decade}"),
            (at - 12, TOP - 28),
            font(13),
        ))?;
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + LINE * i32::try_from(i)?;
        let scenario = row.scenario.split(':').next().unwrap_or(&row.scenario);
        let against: String = row.baseline.chars().take(38).collect();
        root.draw(&Text::new(
            format!("{scenario} · {} · vs {against}", row.path),
            (10, y + 6),
            font(13),
        ))?;
        root.draw(&Rectangle::new(
            [(LABEL, y + 3), (x(row.rows_per_s), y + LINE - 7)],
            colour(&row.path).filled(),
        ))?;
        let baseline = baseline_rate(row);
        if baseline.is_finite() && baseline > 0.0 {
            let at = x(baseline);
            root.draw(&PathElement::new(
                [(at, y), (at, y + LINE - 4)],
                BLACK.stroke_width(2),
            ))?;
        }
        let met = match row.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "no target",
        };
        root.draw(&Text::new(
            format!("{:.2}x · {} · {met}", row.ratio, row.target),
            (BAR_END + 8, y + 6),
            font(12),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The baseline's rows per second, where the row's ratio is one of times
/// over the same rows (not, say, of peak memory at another size); NaN
/// otherwise.
fn baseline_rate(row: &Row) -> f64 {
    let of_times = row.rpcop_ms / row.baseline_ms;
    if (of_times - row.ratio).abs() <= 1e-6 * of_times.abs().max(1.0) {
        row.rows_per_s * row.rpcop_ms / row.baseline_ms
    } else {
        f64::NAN
    }
}

/// A colour per path.
fn colour(path: &str) -> RGBColor {
    match path {
        "thread/local" => RGBColor(76, 114, 176),
        "thread/flight" => RGBColor(129, 178, 214),
        "process/shm" => RGBColor(221, 132, 82),
        "process/flight" => RGBColor(196, 78, 82),
        _ => RGBColor(85, 168, 104),
    }
}
