//! Server-side SVG charts: columns over days, horizontal bars over models and keys. Each bar
//! has a `<title>` tooltip; colours come from the stylesheet (classes), so the CSP needs no
//! inline styles.

use std::fmt::Write;

use super::html::E;

/// One bar: its label, value and how the value is written.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub shown: String,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A column's axis label: `MM-DD` for a date, else the label shortened.
fn tick(label: &str) -> String {
    let b = label.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        label[5..].to_string()
    } else {
        short(label, 8)
    }
}

/// Vertical columns (a time series). `fmt` writes an axis value.
pub fn columns(id: &str, title: &str, class: &str, bars: &[Bar], fmt: &dyn Fn(f64) -> String) -> String {
    const W: f64 = 520.0;
    const H: f64 = 210.0;
    const LEFT: f64 = 80.0;
    const BOTTOM: f64 = 24.0;
    const TOP: f64 = 10.0;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - TOP;
    let max = nice_max(bars.iter().map(|b| b.value).fold(0.0, f64::max));
    let mut out = format!(
        r#"<figure class="chart" id="{id}"><figcaption>{t}</figcaption><svg viewBox="0 0 {W} {H}" class="chart-svg {class}" role="img" aria-label="{t}">"#,
        id = E(id),
        t = E(title),
        class = E(class),
    );
    for i in 0..=4 {
        let frac = f64::from(i) / 4.0;
        let y = TOP + plot_h * (1.0 - frac);
        let _ = write!(
            out,
            r#"<line class="grid-line" x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}"/><text class="axis" x="{tx:.1}" y="{ty:.1}" text-anchor="end">{v}</text>"#,
            x2 = W - 8.0,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = E(&fmt(max * frac)),
        );
    }
    if bars.is_empty() {
        let _ = write!(
            out,
            r#"<text class="axis" x="{x:.1}" y="{y:.1}" text-anchor="middle">no data in this range</text>"#,
            x = LEFT + plot_w / 2.0,
            y = TOP + plot_h / 2.0
        );
    }
    let n = bars.len().max(1) as f64;
    let slot = plot_w / n;
    let bw = (slot * 0.7).max(1.0);
    let every = bars.len().div_ceil(7).max(1);
    for (i, b) in bars.iter().enumerate() {
        let h = if max > 0.0 {
            (b.value / max).clamp(0.0, 1.0) * plot_h
        } else {
            0.0
        };
        let x = LEFT + slot * i as f64 + (slot - bw) / 2.0;
        let y = TOP + plot_h - h;
        let _ = write!(
            out,
            r#"<g class="bar-g"><rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{h:.1}"><title>{l}: {s}</title></rect><rect class="hit" x="{hx:.1}" y="{TOP}" width="{slot:.1}" height="{plot_h:.1}"><title>{l}: {s}</title></rect></g>"#,
            hx = LEFT + slot * i as f64,
            l = E(&b.label),
            s = E(&b.shown),
        );
        if i % every == 0 {
            let _ = write!(
                out,
                r#"<text class="axis" x="{cx:.1}" y="{ly:.1}" text-anchor="middle">{l}</text>"#,
                cx = x + bw / 2.0,
                ly = H - 6.0,
                l = E(&tick(&b.label)),
            );
        }
    }
    out.push_str("</svg></figure>");
    out
}

/// Horizontal bars (a breakdown by model or key), largest first as given.
pub fn rows(id: &str, title: &str, class: &str, bars: &[Bar]) -> String {
    const W: f64 = 520.0;
    const ROW: f64 = 26.0;
    const LABEL: f64 = 150.0;
    const VALUE: f64 = 90.0;
    let h = (ROW * bars.len().max(1) as f64 + 8.0).max(40.0);
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let plot_w = W - LABEL - VALUE - 8.0;
    let mut out = format!(
        r#"<figure class="chart" id="{id}"><figcaption>{t}</figcaption><svg viewBox="0 0 {W} {h}" class="chart-svg {class}" role="img" aria-label="{t}">"#,
        id = E(id),
        t = E(title),
        class = E(class),
    );
    if bars.is_empty() {
        let _ = write!(
            out,
            r#"<text class="axis" x="{x}" y="24" text-anchor="middle">no data in this range</text>"#,
            x = W / 2.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let w = if max > 0.0 {
            (b.value / max).clamp(0.0, 1.0) * plot_w
        } else {
            0.0
        };
        let _ = write!(
            out,
            r#"<g class="bar-g"><text class="axis label" x="{lx}" y="{ty:.1}" text-anchor="end">{ls}</text><rect class="bar-track" x="{LABEL}" y="{by:.1}" width="{plot_w:.1}" height="16" rx="3"/><rect class="bar" x="{LABEL}" y="{by:.1}" width="{w:.1}" height="16" rx="3"><title>{l}: {s}</title></rect><text class="axis value" x="{vx:.1}" y="{ty:.1}">{s}</text></g>"#,
            lx = LABEL - 8.0,
            ty = y + 13.0,
            by = y + 1.0,
            ls = E(&short(&b.label, 20)),
            l = E(&b.label),
            s = E(&b.shown),
            vx = LABEL + plot_w + 8.0,
        );
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let bars = vec![Bar {
            label: "<script>x</script>".into(),
            value: 1.0,
            shown: "1".into(),
        }];
        let svg = rows("c", "t", "cost", &bars);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        let svg = columns("c", "t", "cost", &bars, &|v| format!("{v}"));
        assert!(!svg.contains("<script>"));
    }

    #[test]
    fn nice_axis() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(0.0021), 0.0025);
        assert_eq!(nice_max(120.0), 200.0);
    }
}
