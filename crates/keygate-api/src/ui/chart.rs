//! Server-side SVG charts: columns over days, horizontal bars over models and keys. This module
//! does the geometry; `templates/charts.html` draws it, escaping every label. Each bar has a
//! `<title>` tooltip; colours come from the stylesheet (classes), so the CSP needs no inline
//! styles.
//!
//! What must stay true: labels and values reach the SVG only through the template, which
//! escapes them (they may be names people chose); nothing here builds markup.

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

/// A coordinate as the SVG gets it: one decimal.
fn n1(v: f64) -> String {
    format!("{v:.1}")
}

/// What every chart has: where it is on the page and what it is called.
pub struct Head {
    pub id: &'static str,
    pub title: String,
    /// `cost` or `tokens` (the stylesheet's colour).
    pub class: &'static str,
    pub width: f64,
    pub height: f64,
}

/// A horizontal grid line of a column chart with its axis value.
pub struct GridLine {
    pub y: String,
    pub x2: String,
    pub tx: String,
    pub ty: String,
    pub value: String,
}

/// One column, its hover area and, every few columns, its axis label.
pub struct Column {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub hx: String,
    pub label: String,
    pub shown: String,
    /// The axis label under it: (x, y, text).
    pub tick: Option<(String, String, String)>,
}

/// Vertical columns (a time series), drawn by the macro `columns` of `charts.html`.
pub struct Columns {
    pub head: Head,
    pub left: f64,
    pub top: f64,
    pub slot: String,
    pub plot_h: String,
    pub grid: Vec<GridLine>,
    /// Where "no data in this range" goes when there are no columns: (x, y).
    pub empty: Option<(String, String)>,
    pub bars: Vec<Column>,
}

/// Vertical columns (a time series). `fmt` writes an axis value.
pub fn columns(
    id: &'static str,
    title: &str,
    class: &'static str,
    bars: &[Bar],
    fmt: &dyn Fn(f64) -> String,
) -> Columns {
    const W: f64 = 520.0;
    const H: f64 = 210.0;
    const LEFT: f64 = 80.0;
    const BOTTOM: f64 = 24.0;
    const TOP: f64 = 10.0;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - TOP;
    let max = nice_max(bars.iter().map(|b| b.value).fold(0.0, f64::max));
    let grid = (0..=4)
        .map(|i| {
            let frac = f64::from(i) / 4.0;
            let y = TOP + plot_h * (1.0 - frac);
            GridLine {
                y: n1(y),
                x2: n1(W - 8.0),
                tx: n1(LEFT - 6.0),
                ty: n1(y + 4.0),
                value: fmt(max * frac),
            }
        })
        .collect();
    let empty = bars
        .is_empty()
        .then(|| (n1(LEFT + plot_w / 2.0), n1(TOP + plot_h / 2.0)));
    let n = bars.len().max(1) as f64;
    let slot = plot_w / n;
    let bw = (slot * 0.7).max(1.0);
    let every = bars.len().div_ceil(7).max(1);
    let columns = bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let h = if max > 0.0 {
                (b.value / max).clamp(0.0, 1.0) * plot_h
            } else {
                0.0
            };
            let x = LEFT + slot * i as f64 + (slot - bw) / 2.0;
            let y = TOP + plot_h - h;
            Column {
                x: n1(x),
                y: n1(y),
                w: n1(bw),
                h: n1(h),
                hx: n1(LEFT + slot * i as f64),
                label: b.label.clone(),
                shown: b.shown.clone(),
                tick: (i % every == 0).then(|| (n1(x + bw / 2.0), n1(H - 6.0), tick(&b.label))),
            }
        })
        .collect();
    Columns {
        head: Head {
            id,
            title: title.to_string(),
            class,
            width: W,
            height: H,
        },
        left: LEFT,
        top: TOP,
        slot: n1(slot),
        plot_h: n1(plot_h),
        grid,
        empty,
        bars: columns,
    }
}

/// One horizontal bar with its label (shortened) and value.
pub struct Row {
    pub ty: String,
    pub by: String,
    pub w: String,
    pub short: String,
    pub label: String,
    pub shown: String,
}

/// Horizontal bars (a breakdown), drawn by the macro `rows` of `charts.html`.
pub struct Rows {
    pub head: Head,
    pub label_x: f64,
    pub bar_x: f64,
    pub plot_w: String,
    pub value_x: String,
    /// The x of "no data in this range" when there are no bars.
    pub empty: Option<f64>,
    pub bars: Vec<Row>,
}

/// Horizontal bars (a breakdown by model or key), largest first as given.
pub fn rows(id: &'static str, title: &str, class: &'static str, bars: &[Bar]) -> Rows {
    const W: f64 = 520.0;
    const ROW: f64 = 26.0;
    const LABEL: f64 = 150.0;
    const VALUE: f64 = 90.0;
    let h = (ROW * bars.len().max(1) as f64 + 8.0).max(40.0);
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let plot_w = W - LABEL - VALUE - 8.0;
    let rows = bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let y = 4.0 + ROW * i as f64;
            let w = if max > 0.0 {
                (b.value / max).clamp(0.0, 1.0) * plot_w
            } else {
                0.0
            };
            Row {
                ty: n1(y + 13.0),
                by: n1(y + 1.0),
                w: n1(w),
                short: short(&b.label, 20),
                label: b.label.clone(),
                shown: b.shown.clone(),
            }
        })
        .collect();
    Rows {
        head: Head {
            id,
            title: title.to_string(),
            class,
            width: W,
            height: h,
        },
        label_x: LABEL - 8.0,
        bar_x: LABEL,
        plot_w: n1(plot_w),
        value_x: n1(LABEL + plot_w + 8.0),
        empty: bars.is_empty().then_some(W / 2.0),
        bars: rows,
    }
}

#[cfg(test)]
mod tests {
    use askama::Template;

    use super::*;

    /// Both charts as `usage.html` draws them.
    #[derive(Template)]
    #[template(
        source = r#"{% import "charts.html" as charts %}{{ charts::rows(rows) }}{{ charts::columns(columns) }}"#,
        ext = "html"
    )]
    struct Drawn {
        rows: Rows,
        columns: Columns,
    }

    #[test]
    fn labels_are_escaped() {
        let bars = vec![Bar {
            label: "<script>x</script>".into(),
            value: 1.0,
            shown: "\"><img src=x>".into(),
        }];
        let svg = Drawn {
            rows: rows("c", "<b>t</b>", "cost", &bars),
            columns: columns("d", "t", "cost", &bars, &|v| format!("{v}")),
        }
        .render()
        .unwrap();
        assert!(!svg.contains("<script>") && !svg.contains("<img") && !svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(svg.contains("&quot;&gt;&lt;img src=x&gt;"));
        assert!(svg.contains(r#"aria-label="&lt;b&gt;t&lt;/b&gt;""#));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
    }

    #[test]
    fn geometry() {
        let bars = vec![
            Bar {
                label: "2026-01-02".into(),
                value: 1.0,
                shown: "$1.00".into(),
            },
            Bar {
                label: "a-model-with-a-long-name".into(),
                value: 0.5,
                shown: "$0.50".into(),
            },
        ];
        let c = columns("c", "t", "cost", &bars, &|v| format!("{v}"));
        assert_eq!(c.bars.len(), 2);
        assert_eq!(c.bars[0].h, "176.0");
        assert_eq!(c.bars[1].h, "88.0");
        assert_eq!(c.bars[0].tick.as_ref().map(|t| t.2.as_str()), Some("01-02"));
        assert!(c.empty.is_none());
        let r = rows("r", "t", "cost", &bars);
        assert_eq!(r.bars[1].short, "a-model-with-a-long…");
        assert!(rows("r", "t", "cost", &[]).empty.is_some());
    }

    #[test]
    fn nice_axis() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(0.0021), 0.0025);
        assert_eq!(nice_max(120.0), 200.0);
    }
}
