//! The evidence pack as a document of headings, sentences, lists and tables, rendered once as Markdown
//! (`report.md`) and once as a self-contained, print-friendly HTML page (`report.html`): both say the same
//! thing because both come from the same blocks, and neither ever holds JSON.

/// One block of the document.
pub enum Block {
    Heading(String),
    Para(String),
    List(Vec<String>),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

pub struct Doc {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Doc {
    pub fn markdown(&self) -> String {
        let mut md = format!("# {}\n\n", self.title);
        for block in &self.blocks {
            match block {
                Block::Heading(h) => md.push_str(&format!("## {h}\n\n")),
                Block::Para(p) => md.push_str(&format!("{p}\n\n")),
                Block::List(items) => {
                    for item in items {
                        md.push_str(&format!("- {item}\n"));
                    }
                    md.push('\n');
                }
                Block::Table { head, rows } => {
                    let line = |cells: &[String]| {
                        let cells: Vec<String> =
                            cells.iter().map(|c| c.replace('|', "\\|")).collect();
                        format!("| {} |\n", cells.join(" | "))
                    };
                    md.push_str(&line(head));
                    md.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                    for row in rows {
                        md.push_str(&line(row));
                    }
                    md.push('\n');
                }
            }
        }
        md
    }

    /// One HTML page with its style inline: no script, no external asset, readable on paper.
    pub fn html(&self) -> String {
        let mut body = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(h) => body.push_str(&format!("<h2>{}</h2>\n", inline(h))),
                Block::Para(p) => body.push_str(&format!("<p>{}</p>\n", inline(p))),
                Block::List(items) => {
                    body.push_str("<ul>\n");
                    for item in items {
                        body.push_str(&format!("<li>{}</li>\n", inline(item)));
                    }
                    body.push_str("</ul>\n");
                }
                Block::Table { head, rows } => {
                    body.push_str("<table>\n<thead><tr>");
                    for h in head {
                        body.push_str(&format!("<th>{}</th>", inline(h)));
                    }
                    body.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        body.push_str("<tr>");
                        for cell in row {
                            body.push_str(&format!("<td>{}</td>", inline(cell)));
                        }
                        body.push_str("</tr>\n");
                    }
                    body.push_str("</tbody>\n</table>\n");
                }
            }
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n",
            title = inline(&self.title)
        )
    }
}

const STYLE: &str = "body { font: 11pt/1.45 -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #111; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; border-bottom: 2px solid #111; padding-bottom: .3rem; }
h2 { font-size: 1.15rem; margin-top: 1.6rem; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: 10pt; }
th, td { border: 1px solid #999; padding: .25rem .45rem; text-align: left; vertical-align: top; }
th { background: #eee; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 9.5pt; overflow-wrap: anywhere; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } tr { break-inside: avoid; } }
";

/// Escape for HTML, then turn Markdown's `code`, **bold** and [links](relative/path) (the only inline
/// marks the blocks use) into tags.
fn inline(text: &str) -> String {
    let escaped = links(
        &text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;"),
    );
    let mut out = String::new();
    let mut code = false;
    for (i, part) in escaped.split('`').enumerate() {
        if i > 0 {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        }
        out.push_str(part);
    }
    let mut bold = String::new();
    for (i, part) in out.split("**").enumerate() {
        if i > 0 {
            bold.push_str(if i % 2 == 1 { "<strong>" } else { "</strong>" });
        }
        bold.push_str(part);
    }
    bold
}

/// `[text](href)` as `<a href="href">text</a>` (an href has no space; anything else stays as written).
fn links(escaped: &str) -> String {
    let mut out = String::new();
    let mut rest = escaped;
    while let Some(open) = rest.find('[') {
        let Some((text, after)) = rest[open + 1..].split_once("](") else {
            break;
        };
        let Some((href, tail)) = after.split_once(')') else {
            break;
        };
        if text.contains('[') || href.is_empty() || href.contains(char::is_whitespace) {
            out.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            continue;
        }
        out.push_str(&rest[..open]);
        out.push_str(&format!("<a href=\"{href}\">{text}</a>"));
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_html_say_the_same_with_html_escaped() {
        let doc = Doc {
            title: "Report `a`".into(),
            blocks: vec![
                Block::Heading("Control".into()),
                Block::Para("**true** after, <script> stays text".into()),
                Block::Table {
                    head: vec!["x".into(), "y".into()],
                    rows: vec![vec!["a|b".into(), "`c`".into()]],
                },
            ],
        };
        let md = doc.markdown();
        assert!(md.contains("| a\\|b | `c` |"), "{md}");
        let html = doc.html();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("<strong>true</strong>"), "{html}");
        assert!(html.contains("<td><code>c</code></td>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("http"), "no external asset: {html}");
    }

    #[test]
    fn a_relative_link_becomes_an_anchor_and_brackets_alone_stay_text() {
        assert_eq!(
            inline("see [report.md](../state/a/report.md) and [1] step"),
            "see <a href=\"../state/a/report.md\">report.md</a> and [1] step"
        );
        assert_eq!(inline("[x](a b)"), "[x](a b)");
    }
}
