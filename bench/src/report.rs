//! Reports: every run writes its result as JSON and as Markdown (with SVG
//! plots where there is a distribution) into `perf-reports/`, with the
//! exact command and the machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::machine::Machine;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    /// Reads them off a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }

    /// `p50 / p99 / max` in milliseconds, for tables.
    pub fn ms(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50 as f64 / 1e3,
            self.p90 as f64 / 1e3,
            self.p99 as f64 / 1e3,
            self.p999 as f64 / 1e3,
            self.max as f64 / 1e3
        )
    }
}

/// The repository's `perf-reports/` (found from the working directory up).
pub fn reports_dir() -> PathBuf {
    let mut dir = std::env::current_dir().unwrap_or_default();
    loop {
        if dir.join("perf-reports").is_dir() {
            return dir.join("perf-reports");
        }
        if !dir.pop() {
            return PathBuf::from("perf-reports");
        }
    }
}

/// The command line that ran this program.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let program = args.next().map(|p| {
        Path::new(&p)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or(p)
    });
    std::iter::once(program.unwrap_or_default())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Markdown report being written.
pub struct Markdown {
    text: String,
}

impl Markdown {
    /// A report with its title, command and machine.
    pub fn new(title: &str, machine: &Machine) -> Self {
        let mut text = String::new();
        let _ = writeln!(text, "# {title}\n");
        let _ = writeln!(text, "- command: `{}`", command_line());
        let _ = writeln!(text, "- machine: {}", machine.line());
        let _ = writeln!(
            text,
            "- note: the machine is shared and noisy; server and generator share its cores.\n"
        );
        Markdown { text }
    }

    /// Appends text.
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
        if !text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Writes `name.md` and `name.json` (the result) into `dir`.
    ///
    /// # Errors
    /// The files could not be written.
    pub fn write<T: Serialize>(
        &self,
        dir: &Path,
        name: &str,
        result: &T,
        json_path: Option<&Path>,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{name}.md")), &self.text)?;
        let json = serde_json::to_vec_pretty(result)?;
        std::fs::write(dir.join(format!("{name}.json")), &json)?;
        if let Some(path) = json_path {
            std::fs::write(path, &json)?;
        }
        Ok(())
    }
}

/// Draws a latency distribution (percentile curve) as SVG.
///
/// # Errors
/// The file could not be written.
pub fn latency_svg(
    path: &Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> anyhow::Result<()> {
    // A run outside the repository writes into a `perf-reports/` of its own.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = series.iter().map(|(_, h)| h.max()).max().unwrap_or(1) as f64 / 1e3;
    // x: percentile as "nines" (0 = p0, 1 = p90, 2 = p99, 3 = p99.9).
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..3.5f64, 0f64..(max_ms * 1.1).max(0.01))?;
    chart
        .configure_mesh()
        .x_desc("percentile (1 = p90, 2 = p99, 3 = p99.9)")
        .y_desc("latency (ms)")
        .draw()?;
    for (i, (name, h)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = (0..=350)
            .map(|step| {
                let nines = f64::from(step) / 100.0;
                let q = 1.0 - 10f64.powf(-nines);
                (nines, h.value_at_quantile(q.min(1.0)) as f64 / 1e3)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
