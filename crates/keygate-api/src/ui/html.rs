//! HTML building blocks. Every value that did not come from this file goes through [`E`] (or
//! [`esc`]), which escapes `& < > " '`, so it is text in any element or quoted attribute.

use std::fmt::{self, Display, Write};

use keygate_types::timefmt::format_ms;

/// Escapes its text when displayed.
pub struct E<'a>(pub &'a str);

impl Display for E<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

pub fn esc(s: &str) -> String {
    E(s).to_string()
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

const NAV: [(Nav, &str, &str, &str); 6] = [
    (Nav::Keys, "/ui/keys", "Keys", "key"),
    (Nav::VirtualKeys, "/ui/virtual-keys", "Virtual keys", "vk"),
    (Nav::ApiKeys, "/ui/api-keys", "API keys", "api"),
    (Nav::Usage, "/ui/usage", "Usage", "usage"),
    (Nav::RateLimits, "/ui/rate-limits", "Rate-limit log", "rl"),
    (Nav::Audit, "/ui/audit", "Audit log", "audit"),
];

fn icon(name: &str) -> &'static str {
    // Small inline SVG icons (no external requests; styled by the stylesheet).
    match name {
        "key" => {
            r#"<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="8" cy="15" r="4"/><path d="M11 12l9-9M17 6l3 3M15 8l2 2"/></svg>"#
        }
        "vk" => {
            r#"<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="3" y="6" width="18" height="12" rx="3"/><path d="M8 12h8M12 9v6"/></svg>"#
        }
        "api" => {
            r#"<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M8 8l-4 4 4 4M16 8l4 4-4 4M14 5l-4 14"/></svg>"#
        }
        "usage" => r#"<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 20V10M10 20V4M16 20v-7M22 20H2"/></svg>"#,
        "rl" => {
            r#"<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 3"/></svg>"#
        }
        _ => r#"<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 3h9l4 4v14H6z M9 12h7M9 16h7M9 8h4"/></svg>"#,
    }
}

/// Who is signed in, for the sidebar.
pub struct Who<'a> {
    pub workspace: &'a str,
    pub last6: &'a str,
    pub csrf: &'a str,
}

/// A message at the top of a page.
pub enum Flash<'a> {
    Ok(&'a str),
    Error(&'a str),
}

/// A whole page of the signed-in UI: sidebar, header, message and body.
pub fn layout(title: &str, nav: Nav, who: &Who<'_>, flash: Option<Flash<'_>>, body: &str) -> String {
    let mut links = String::new();
    for (n, href, label, ic) in NAV {
        let current = if n == nav {
            r#" class="active" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(
            links,
            r#"<a href="{href}"{current}>{}<span>{label}</span></a>"#,
            icon(ic)
        );
    }
    let flash = flash_html(flash);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · keygate</title><link rel="icon" href="/ui/assets/logo.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/assets/app.css"><script src="/ui/assets/app.js" defer></script></head>
<body class="app">
<aside class="sidebar">
  <a class="brand" href="/ui/keys"><img src="/ui/assets/logo.svg" alt="" width="28" height="28"><span>keygate</span></a>
  <nav aria-label="Main">{links}</nav>
  <div class="who">
    <div class="who-line"><span class="muted">workspace</span> <strong>{ws}</strong></div>
    <div class="who-line"><span class="muted">signed in as</span> <code>…{last6}</code></div>
    <form method="post" action="/ui/logout">{csrf}<button type="submit" class="btn btn-ghost" id="sign-out">Sign out</button></form>
  </div>
</aside>
<main class="content">
<header class="page-head"><h1>{title}</h1></header>
{flash}
{body}
</main>
</body></html>"#,
        title = E(title),
        ws = E(who.workspace),
        last6 = E(who.last6),
        csrf = csrf_field(who.csrf),
    )
}

fn flash_html(flash: Option<Flash<'_>>) -> String {
    match flash {
        Some(Flash::Ok(m)) => format!(r#"<div class="flash flash-ok" role="status">{}</div>"#, E(m)),
        Some(Flash::Error(m)) => format!(r#"<div class="flash flash-error" role="alert">{}</div>"#, E(m)),
        None => String::new(),
    }
}

/// A page without the sidebar (sign-in, errors before a session exists).
pub fn bare(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · keygate</title><link rel="icon" href="/ui/assets/logo.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/assets/app.css"><script src="/ui/assets/app.js" defer></script></head>
<body class="bare"><main class="bare-main">{body}</main></body></html>"#,
        title = E(title),
    )
}

/// The hidden CSRF field of a form.
pub fn csrf_field(token: &str) -> String {
    format!(r#"<input type="hidden" name="_csrf" value="{}">"#, E(token))
}

/// A time as `YYYY-MM-DD HH:MM` UTC, or a dash.
pub fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let s = format_ms(ms);
            let short: String = s.chars().take(16).collect();
            format!(r#"<time datetime="{}">{}</time>"#, E(&s), E(&short.replace('T', " ")))
        }
        None => r#"<span class="muted">—</span>"#.to_string(),
    }
}

/// `YYYY-MM-DD` of a time (for date inputs).
pub fn date_of(ms: i64) -> String {
    format_ms(ms).chars().take(10).collect()
}

/// Text or a muted dash.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => esc(s),
        _ => r#"<span class="muted">—</span>"#.to_string(),
    }
}

/// A status badge.
pub fn badge(text: &str, kind: &str) -> String {
    format!(r#"<span class="badge badge-{}">{}</span>"#, E(kind), E(text))
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
        if i > 0 && (s.len() - i) % 3 == 0 {
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

/// A horizontal bar of `used` out of `limit` (SVG: no inline styles under the CSP).
pub fn meter(used: i64, limit: i64, label: &str) -> String {
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
    format!(
        r#"<div class="meter"><svg class="meter-bar {class}" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label="{l}"><title>{l}</title><rect class="meter-track" x="0" y="0" width="100" height="8" rx="4"/><rect class="meter-fill" x="0" y="0" width="{w:.2}" height="8" rx="4"/></svg><span class="meter-label">{l}</span></div>"#,
        l = E(label),
        w = frac * 100.0,
    )
}

/// Paging links under a list, keeping the other query parameters.
pub fn pager(base: &str, params: &[(&str, String)], page: u32, per_page: u32, total: usize) -> String {
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
    let prev = if page > 1 {
        format!(
            r#"<a class="btn btn-small" rel="prev" href="{}">‹ Previous</a>"#,
            E(&link(page - 1))
        )
    } else {
        r#"<span class="btn btn-small disabled">‹ Previous</span>"#.to_string()
    };
    let next = if page < pages {
        format!(
            r#"<a class="btn btn-small" rel="next" href="{}">Next ›</a>"#,
            E(&link(page + 1))
        )
    } else {
        r#"<span class="btn btn-small disabled">Next ›</span>"#.to_string()
    };
    format!(
        r#"<nav class="pager" aria-label="Pages"><span class="muted">{first}–{last} of {total} · page {page} of {pages}</span>{prev}{next}</nav>"#
    )
}

/// A `<select>` with the given options (value, label), `current` selected.
pub fn select(name: &str, id: &str, options: &[(&str, &str)], current: &str) -> String {
    let mut out = format!(r#"<select name="{}" id="{}">"#, E(name), E(id));
    for (v, l) in options {
        let sel = if *v == current { " selected" } else { "" };
        let _ = write!(out, r#"<option value="{}"{sel}>{}</option>"#, E(v), E(l));
    }
    out.push_str("</select>");
    out
}

/// A labelled text input.
pub fn field(label: &str, name: &str, value: &str, kind: &str, extra: &str, help: &str) -> String {
    let id = format!("f-{}", name.replace('.', "-"));
    let help = if help.is_empty() {
        String::new()
    } else {
        format!(r#"<small class="help">{}</small>"#, E(help))
    };
    format!(
        r#"<label class="field" for="{id}"><span>{label}</span><input type="{kind}" id="{id}" name="{name}" value="{value}"{extra}>{help}</label>"#,
        id = E(&id),
        label = E(label),
        kind = E(kind),
        name = E(name),
        value = E(value),
    )
}

/// The page's list filter bar: a search box plus extra controls.
pub fn filter_bar(action: &str, q: &str, placeholder: &str, extra: &str) -> String {
    format!(
        r#"<form class="filters" method="get" action="{action}" role="search"><input type="search" name="q" value="{q}" placeholder="{ph}" aria-label="Search">{extra}<button class="btn" type="submit">Filter</button></form>"#,
        action = E(action),
        q = E(q),
        ph = E(placeholder),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(esc("plain é"), "plain é");
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
}
