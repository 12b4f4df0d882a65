//! What the UI's templates (`crates/keygate-api/templates/`) are given: the page frame the base
//! layout draws (title, sidebar, flash message, CSRF token), small view values (times, select
//! options, paging, budget meters) and the number formats people read.
//!
//! What must stay true: markup lives in the templates, never in strings built here; every value
//! reaches HTML through askama's auto-escaping, with the escaper [`NamedHtml`] (`askama.toml`
//! names it for `.html` templates), so text is text in any element or quoted attribute.
//! Values put into a URL are percent-encoded first ([`url_enc`]) and then escaped as well.

use std::fmt;

use keygate_types::timefmt::format_ms;

/// The HTML escaper of every `.html` template (`askama.toml`): `& < > " '` become `&amp; &lt;
/// &gt; &quot; &#39;`. askama's own escaper writes numeric entities (`&#60;`); the named ones
/// keep the pages' text as it has always been, so what people, tests and scripts look for
/// (`&lt;script&gt;`) does not change with the engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct NamedHtml;

impl askama::filters::Escaper for NamedHtml {
    fn write_escaped_str<W: fmt::Write>(&self, mut dest: W, text: &str) -> fmt::Result {
        let mut last = 0;
        for (i, b) in text.bytes().enumerate() {
            let entity = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            dest.write_str(&text[last..i])?;
            dest.write_str(entity)?;
            last = i + 1;
        }
        dest.write_str(&text[last..])
    }
}

/// Percent-encodes a query or path component.
pub fn url_enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The pages of the sidebar.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Nav {
    Keys,
    VirtualKeys,
    ApiKeys,
    Usage,
    RateLimits,
    Audit,
}

/// A message at the top of a page.
pub enum Flash<'a> {
    Ok(&'a str),
    Error(&'a str),
}

impl Flash<'_> {
    pub fn class(&self) -> &'static str {
        match self {
            Flash::Ok(_) => "flash-ok",
            Flash::Error(_) => "flash-error",
        }
    }

    /// `alert` for an error (read out at once), `status` otherwise.
    pub fn role(&self) -> &'static str {
        match self {
            Flash::Ok(_) => "status",
            Flash::Error(_) => "alert",
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Flash::Ok(t) | Flash::Error(t) => t,
        }
    }
}

/// What the base layout (`layout.html`) draws around every signed-in page: the title, the
/// sidebar with the current page marked, who is signed in, the sign-out form with the
/// session's CSRF token, and the message of the moment. Every page's view holds one as `frame`.
pub struct Frame<'a> {
    pub title: &'a str,
    pub nav: Nav,
    pub workspace: &'a str,
    pub last6: &'a str,
    pub csrf: &'a str,
    pub flash: Option<Flash<'a>>,
}

impl Frame<'_> {
    /// Whether `nav` is this page's entry of the sidebar.
    pub fn is(&self, nav: Nav) -> bool {
        self.nav == nav
    }
}

/// A time for `<time>`: the full UTC timestamp and `YYYY-MM-DD HH:MM`.
pub struct Time {
    pub iso: String,
    pub short: String,
}

/// A time to show, or None (drawn as a dash).
pub fn when(ms: Option<i64>) -> Option<Time> {
    ms.map(|ms| {
        let iso = format_ms(ms);
        let short = iso.chars().take(16).collect::<String>().replace('T', " ");
        Time { iso, short }
    })
}

/// `YYYY-MM-DD` of a time (for date inputs).
pub fn date_of(ms: i64) -> String {
    format_ms(ms).chars().take(10).collect()
}

/// One `<option>` of a `<select>`.
pub struct Opt {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// The options (value, label) of a `<select>`, `current` selected.
pub fn options(options: &[(&str, &str)], current: &str) -> Vec<Opt> {
    options
        .iter()
        .map(|(value, label)| Opt {
            value: (*value).to_string(),
            label: (*label).to_string(),
            selected: *value == current,
        })
        .collect()
}

/// USD with up to 6 decimals, trailing zeros trimmed to cents.
pub fn usd(nano: i64) -> String {
    let neg = nano < 0;
    let n = nano.unsigned_abs();
    let whole = n / 1_000_000_000;
    let frac = n % 1_000_000_000;
    let mut f = format!("{:09}", frac);
    f.truncate(6);
    while f.len() > 2 && f.ends_with('0') {
        f.pop();
    }
    format!("{}${}.{}", if neg { "-" } else { "" }, group_digits(whole), f)
}

/// An integer with thin separators: 1,234,567.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn int(n: i64) -> String {
    if n < 0 {
        format!("-{}", group_digits(n.unsigned_abs()))
    } else {
        group_digits(n as u64)
    }
}

/// A horizontal bar of `used` out of `limit`, drawn as SVG (the CSP allows no inline styles).
pub struct Meter {
    /// `ok`, `high` (80 % and more) or `full`.
    pub class: &'static str,
    /// The filled width out of 100, two decimals.
    pub width: String,
    pub label: String,
}

pub fn meter(used: i64, limit: i64, label: String) -> Meter {
    let frac = if limit <= 0 {
        1.0
    } else {
        (used.max(0) as f64 / limit as f64).clamp(0.0, 1.0)
    };
    let class = if frac >= 1.0 {
        "full"
    } else if frac >= 0.8 {
        "high"
    } else {
        "ok"
    };
    Meter {
        class,
        width: format!("{:.2}", frac * 100.0),
        label,
    }
}

/// Paging links under a list.
pub struct Pager {
    pub first: usize,
    pub last: usize,
    pub total: usize,
    pub page: u32,
    pub pages: u32,
    /// The previous and next pages' addresses, when there are such pages.
    pub prev: Option<String>,
    pub next: Option<String>,
}

/// The pager of `base`, keeping the other (non-blank) query parameters.
pub fn pager(base: &str, params: &[(&str, String)], page: u32, per_page: u32, total: usize) -> Pager {
    let pages = total.div_ceil(per_page as usize).max(1) as u32;
    let first = if total == 0 {
        0
    } else {
        (page - 1) as usize * per_page as usize + 1
    };
    let last = (page as usize * per_page as usize).min(total);
    let link = |p: u32| {
        let mut q: Vec<String> = params
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{}={}", url_enc(k), url_enc(v)))
            .collect();
        q.push(format!("page={p}"));
        format!("{base}?{}", q.join("&"))
    };
    Pager {
        first,
        last,
        total,
        page,
        pages,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
    }
}

#[cfg(test)]
mod tests {
    use askama::filters::Escaper;

    use super::*;

    #[test]
    fn escapes_markup_with_named_entities() {
        let mut out = String::new();
        NamedHtml
            .write_escaped_str(&mut out, r#"<script>alert("x&y")</script>'"#)
            .unwrap();
        assert_eq!(out, "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;");
        let mut out = String::new();
        NamedHtml.write_escaped_str(&mut out, "plain é").unwrap();
        assert_eq!(out, "plain é");
    }

    /// Every template escapes everything: none marks a value safe or escapes with `none`.
    #[test]
    fn no_template_turns_escaping_off() {
        fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else {
                    found.push(path);
                }
            }
        }
        let mut templates = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
            &mut templates,
        );
        assert!(templates.len() > 10, "{templates:?}");
        for path in templates {
            let text = std::fs::read_to_string(&path).unwrap().replace(' ', "");
            for off in ["|safe", "filtersafe", "(\"none\")", "(\"txt\")"] {
                assert!(!text.contains(off), "{}: {off}", path.display());
            }
        }
    }

    #[test]
    fn money_and_numbers() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_500_000_000), "$1.50");
        assert_eq!(usd(123_456), "$0.000123");
        assert_eq!(usd(1_234_000_000_000), "$1,234.00");
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(int(-1000), "-1,000");
    }

    #[test]
    fn pager_keeps_the_filters_percent_encoded() {
        let p = pager("/ui/keys", &[("q", "a b&c".into()), ("hub", String::new())], 2, 10, 25);
        assert_eq!((p.first, p.last, p.pages), (11, 20, 3));
        assert_eq!(p.prev.as_deref(), Some("/ui/keys?q=a+b%26c&page=1"));
        assert_eq!(p.next.as_deref(), Some("/ui/keys?q=a+b%26c&page=3"));
    }
}
