//! A small writer of HCL (Terraform's native syntax): bodies of attributes, blocks and comments, rendered
//! with two-space indents and the `=` of neighbouring attributes aligned as `terraform fmt` does. It owns
//! the escaping of quoted strings and the check of identifiers; it knows nothing of Terraform resources.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A quoted string, escaped on output.
    Str(String),
    Bool(bool),
    Number(u64),
    /// A reference written as is (`var.token`, `data.x.y.secret_string`, `aws_x.name`).
    Raw(String),
    /// A list of quoted strings.
    StrList(Vec<String>),
    /// An object of quoted keys and quoted string values (tags).
    StrMap(BTreeMap<String, String>),
    /// A list of references (`ignore_changes = [auth_token]`).
    RawList(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Attr(String, Expr),
    Block(Block),
    Comment(String),
    Blank,
}

/// A block: its type, its labels (quoted on output) and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    kind: String,
    labels: Vec<String>,
    body: Body,
}

impl Block {
    pub fn new(kind: &str, labels: &[&str], body: Body) -> Block {
        Block {
            kind: kind.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            body,
        }
    }
}

/// The inside of a block, or a whole file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body(Vec<Item>);

impl Body {
    pub fn new() -> Body {
        Body::default()
    }
    pub fn attr(mut self, key: &str, value: Expr) -> Body {
        self.0.push(Item::Attr(key.to_string(), value));
        self
    }
    pub fn str(self, key: &str, value: &str) -> Body {
        self.attr(key, Expr::Str(value.to_string()))
    }
    pub fn block(mut self, block: Block) -> Body {
        self.0.push(Item::Block(block));
        self
    }
    /// A `#` comment line; a multi-line text becomes one comment line per line.
    pub fn comment(mut self, text: &str) -> Body {
        for line in text.lines() {
            self.0.push(Item::Comment(line.to_string()));
        }
        self
    }
    pub fn blank(mut self) -> Body {
        self.0.push(Item::Blank);
        self
    }

    /// The body as HCL text at the top level (a file).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let items = &self.0;
        let mut i = 0;
        while i < items.len() {
            match &items[i] {
                Item::Attr(..) => {
                    // A run of attributes on consecutive lines shares one column for `=`.
                    let end = items[i..]
                        .iter()
                        .position(|it| !matches!(it, Item::Attr(..)))
                        .map_or(items.len(), |n| i + n);
                    let width = items[i..end]
                        .iter()
                        .map(|it| match it {
                            Item::Attr(k, _) => k.len(),
                            _ => 0,
                        })
                        .max()
                        .unwrap_or(0);
                    for it in &items[i..end] {
                        if let Item::Attr(key, value) = it {
                            let _ = write!(out, "{pad}{key:<width$} = ");
                            write_expr(out, value, depth);
                            out.push('\n');
                        }
                    }
                    i = end;
                    continue;
                }
                Item::Block(b) => {
                    out.push_str(&pad);
                    out.push_str(&b.kind);
                    for label in &b.labels {
                        out.push(' ');
                        out.push_str(&quote(label));
                    }
                    out.push_str(" {\n");
                    b.body.write(out, depth + 1);
                    out.push_str(&pad);
                    out.push_str("}\n");
                }
                Item::Comment(text) if text.is_empty() => {
                    out.push_str(&pad);
                    out.push_str("#\n");
                }
                Item::Comment(text) => {
                    let _ = writeln!(out, "{pad}# {text}");
                }
                Item::Blank => out.push('\n'),
            }
            i += 1;
        }
    }
}

fn write_expr(out: &mut String, value: &Expr, depth: usize) {
    match value {
        Expr::Str(s) => out.push_str(&quote(s)),
        Expr::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Expr::Number(n) => out.push_str(&n.to_string()),
        Expr::Raw(r) => out.push_str(r),
        Expr::StrList(items) => {
            let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
            let _ = write!(out, "[{}]", quoted.join(", "));
        }
        Expr::RawList(items) => {
            let _ = write!(out, "[{}]", items.join(", "));
        }
        Expr::StrMap(map) if map.is_empty() => out.push_str("{}"),
        Expr::StrMap(map) => {
            let pad = "  ".repeat(depth + 1);
            let keys: Vec<String> = map.keys().map(|k| quote(k)).collect();
            let width = keys.iter().map(String::len).max().unwrap_or(0);
            out.push_str("{\n");
            for (key, value) in keys.iter().zip(map.values()) {
                let _ = writeln!(out, "{pad}{key:<width$} = {}", quote(value));
            }
            out.push_str(&"  ".repeat(depth));
            out.push('}');
        }
    }
}

/// `s` as an HCL quoted string: backslash and double quote escaped, control characters as escapes, and
/// the template sequences `${` and `%{` doubled (`$${`, `%%{`) so Terraform reads them literally instead
/// of interpolating. `\b`, `\f` and `\/` are not HCL escapes: such characters are written as `\uNNNN`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `name` is an HCL identifier (a resource, variable or data source name): a letter or `_`,
/// then letters, digits, `_` and `-`.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A Terraform-style name for `id` (a group id): lowercase, every character that is not a letter or a
/// digit an `_`, and an `_` in front when it would not start with a letter.
pub fn identifier_for(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_escape_quotes_backslashes_controls_and_templates() {
        assert_eq!(quote("plain"), r#""plain""#);
        assert_eq!(quote(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(quote(r"C:\dir\"), r#""C:\\dir\\""#);
        assert_eq!(quote("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(quote("${var.x} and %{ if }"), r#""$${var.x} and %%{ if }""#);
        // A lone `$` or `%` is literal already; `$$` before `{` doubles only the last one.
        assert_eq!(quote("100% $5 $${x}"), r#""100% $5 $$${x}""#);
        assert_eq!(quote("bell\u{7}\u{8}"), r#""bell\u0007\u0008""#);
        assert_eq!(quote("ünïcode ✓"), "\"ünïcode ✓\"");
    }

    /// What an HCL parser reads back is the string written, whatever it holds.
    #[test]
    fn quoted_strings_read_back_as_written() {
        use hcl::eval::Evaluate;
        for s in [
            "",
            r#"quote " backslash \ end\"#,
            "${var.secret} %{ for x in y }${x}%{ endfor }",
            "$${already} $$ %% $ % { }",
            "line\nbreak\r\ttab\u{0}\u{8}\u{c}\u{1b}",
            "ünïcode ✓ \u{2028}",
        ] {
            let text = format!("x = {}\n", quote(s));
            let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let expr = body.attributes().next().unwrap().expr();
            let read = expr.evaluate(&hcl::eval::Context::new());
            assert_eq!(read, Ok(hcl::Value::from(s)), "{text}");
        }
    }

    #[test]
    fn identifiers_follow_hcl_rules() {
        assert!(is_identifier("orders_enc"));
        assert!(is_identifier("orders-enc"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a.b"));
        assert!(!is_identifier("a b"));
        assert_eq!(identifier_for("orders-enc"), "orders_enc");
        assert_eq!(identifier_for("Orders.Enc"), "orders_enc");
        assert_eq!(identifier_for("9lives"), "_9lives");
        assert!(is_identifier(&identifier_for("-x-")));
    }

    #[test]
    fn bodies_align_neighbouring_attributes_and_indent_blocks() {
        let body = Body::new()
            .block(Block::new(
                "resource",
                &["aws_x", "y"],
                Body::new()
                    .str("id", "a")
                    .attr("long_name", Expr::Bool(true))
                    .blank()
                    .attr(
                        "tags",
                        Expr::StrMap(BTreeMap::from([("k:1".into(), "v".into())])),
                    )
                    .block(Block::new(
                        "lifecycle",
                        &[],
                        Body::new()
                            .comment("why")
                            .attr("ignore_changes", Expr::RawList(vec!["a".into()])),
                    )),
            ))
            .comment("end");
        assert_eq!(
            body.render(),
            "resource \"aws_x\" \"y\" {\n  id        = \"a\"\n  long_name = true\n\n  tags = {\n    \"k:1\" = \"v\"\n  }\n  lifecycle {\n    # why\n    ignore_changes = [a]\n  }\n}\n# end\n"
        );
    }
}
