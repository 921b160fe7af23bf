//! SVG line charts, written by hand: throughput against device count and against queue
//! depth, one line per engine.

use std::fmt::Write;

use crate::devices::short_size;
use crate::engines::EngineId;
use crate::results::PointResult;
use crate::workload::Sweep;

/// One line of a chart; `None` leaves a gap.
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
    pub dashed: bool,
}

/// A line chart over categorical x values.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: Vec<String>,
    pub series: Vec<Series>,
}

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 46.0;
const BOTTOM: f64 = 56.0;

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let top = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b));
        let (step, ymax) = nice_scale(top);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            esc(&self.title)
        );
        self.axes(&mut s, step, ymax);
        for (i, series) in self.series.iter().enumerate() {
            self.line(&mut s, series, i, ymax);
        }
        s.push_str("</svg>\n");
        s
    }

    fn x_at(&self, i: usize) -> f64 {
        let n = self.x.len().max(1) as f64;
        LEFT + (W - LEFT - RIGHT) * (i as f64 + 0.5) / n
    }

    fn y_at(v: f64, ymax: f64) -> f64 {
        H - BOTTOM - (H - TOP - BOTTOM) * (v / ymax.max(1e-12))
    }

    fn axes(&self, s: &mut String, step: f64, ymax: f64) {
        let (x0, x1, y0) = (LEFT, W - RIGHT, H - BOTTOM);
        let mut v = 0.0;
        while v <= ymax + step * 1e-6 {
            let y = Self::y_at(v, ymax);
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                tick(v, step)
            );
            v += step;
        }
        for (i, label) in self.x.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                self.x_at(i),
                y0 + 18.0,
                esc(label)
            );
        }
        let _ = write!(
            s,
            r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/><line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" stroke="#333"/>"##
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            H - 14.0,
            esc(&self.x_label)
        );
        let _ = write!(
            s,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + y0) / 2.0,
            esc(&self.y_label)
        );
    }

    fn line(&self, s: &mut String, series: &Series, index: usize, ymax: f64) {
        let color = color(&series.name, index);
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let mut path = String::new();
        let mut pen_down = false;
        for (i, v) in series.values.iter().enumerate() {
            let Some(v) = v else {
                pen_down = false;
                continue;
            };
            let (x, y) = (self.x_at(i), Self::y_at(*v, ymax));
            let _ = write!(path, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
            pen_down = true;
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
            );
        }
        let _ = write!(
            s,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            path.trim_end()
        );
        let ly = TOP + 8.0 + 20.0 * index as f64;
        let lx = W - RIGHT + 14.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            esc(&series.name)
        );
    }
}

/// A tick step of 1, 2 or 5 x 10^k giving about five ticks, and the axis top.
fn nice_scale(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (0.2, 1.0);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

fn tick(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-step.log10().floor()) as usize;
        format!("{v:.digits$}")
    }
}

fn color(name: &str, index: usize) -> &'static str {
    const PALETTE: [&str; 3] = ["#bcbd22", "#e377c2", "#7f7f7f"];
    match name {
        "fio" => "#222222",
        "raw" => "#2ca02c",
        "uring" => "#ff7f0e",
        "pread" => "#d62728",
        "stripefs" => "#1f77b4",
        "stripefs-poll" => "#6baed6",
        "fuse" => "#8c564b",
        "stripefs-file" => "#9467bd",
        "cross-process" => "#17becf",
        _ => PALETTE[index % PALETTE.len()],
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The charts of a run, with their file names.
pub fn charts(results: &[PointResult], emu_bandwidth: u64) -> Vec<(String, Chart)> {
    let mut out = Vec::new();
    let mut groups: Vec<(Sweep, String, Vec<&PointResult>)> = Vec::new();
    for r in results.iter().filter(|r| r.skipped.is_none()) {
        let p = &r.point;
        let key = match p.sweep {
            Sweep::Scaling | Sweep::EmuScaling => p.kind.name().to_string(),
            Sweep::QueueDepth | Sweep::Random => {
                format!("{}-{}", p.kind.name(), short_size(p.workload.bs))
            }
            Sweep::Write | Sweep::EmuMem | Sweep::Metadata | Sweep::Files => continue,
        };
        match groups
            .iter_mut()
            .find(|(s, k, _)| *s == p.sweep && *k == key)
        {
            Some((_, _, v)) => v.push(r),
            None => groups.push((p.sweep, key, vec![r])),
        }
    }
    for (sweep, key, points) in groups {
        if points.len() < 2 {
            continue;
        }
        let by_devices = matches!(sweep, Sweep::Scaling | Sweep::EmuScaling);
        let iops = sweep == Sweep::Random;
        let mut chart = chart_of(&points, by_devices, iops);
        if sweep == Sweep::EmuScaling {
            chart.series.push(Series {
                name: "cap x devices".into(),
                values: points
                    .iter()
                    .map(|r| Some(r.point.devices as f64 * emu_bandwidth as f64 / 1e9))
                    .collect(),
                dashed: true,
            });
        }
        let prefix = match sweep {
            Sweep::Random => "rand",
            Sweep::QueueDepth => "qd",
            _ => "scaling",
        };
        out.push((format!("{prefix}-{key}.svg"), chart));
    }
    out
}

fn chart_of(points: &[&PointResult], by_devices: bool, iops: bool) -> Chart {
    let first = &points[0].point;
    let w = first.workload;
    let x = points
        .iter()
        .map(|r| {
            if by_devices {
                r.point.devices.to_string()
            } else {
                r.point.workload.qd.to_string()
            }
        })
        .collect();
    let series = EngineId::ALL
        .iter()
        .filter_map(|&e| {
            let values: Vec<Option<f64>> = points
                .iter()
                .map(|r| {
                    r.get(e)
                        .map(|m| if iops { m.iops() / 1000.0 } else { m.gbps() })
                })
                .collect();
            values.iter().any(Option::is_some).then(|| Series {
                name: e.name().into(),
                values,
                dashed: false,
            })
        })
        .collect();
    let title = if by_devices {
        format!(
            "{} {}, bs {}, QD {} per device",
            w.access.name(),
            first.kind.name(),
            short_size(w.bs),
            w.qd
        )
    } else {
        format!(
            "{} {} x{}, bs {}",
            w.access.name(),
            first.kind.name(),
            first.devices,
            short_size(w.bs)
        )
    };
    Chart {
        title,
        x_label: if by_devices {
            "devices".into()
        } else {
            "queue depth per device".into()
        },
        y_label: if iops { "kIOPS".into() } else { "GB/s".into() },
        x,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_and_svg() {
        assert_eq!(nice_scale(4.3), (1.0, 5.0));
        assert_eq!(nice_scale(0.0), (0.2, 1.0));
        let chart = Chart {
            title: "t <x>".into(),
            x_label: "devices".into(),
            y_label: "GB/s".into(),
            x: vec!["1".into(), "2".into()],
            series: vec![Series {
                name: "fio".into(),
                values: vec![Some(1.0), None],
                dashed: false,
            }],
        };
        let svg = chart.svg();
        assert!(
            svg.starts_with("<svg") && svg.contains("t &lt;x&gt;") && svg.ends_with("</svg>\n")
        );
    }
}
