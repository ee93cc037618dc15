//! Where each field of a YAML document is: dotted field paths (`target.auth_token.file`,
//! `steps[3].alias`) mapped to 1-based lines, built by walking the parser's events. The same walk
//! finds what a plan's shape forbids before serde sees it (a key given twice, a second document,
//! nesting past [`MAX_DEPTH`]), so those are said in the plan's terms, not the YAML library's.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{ErrorKind, Event, Parser};

/// The deepest nesting of collections a plan may have. A plan's deepest collections are 3 levels down
/// (the root mapping, `target`, `target.tags`; or `steps` and a step); anything far deeper is no plan,
/// and refusing it early bounds the walk and serde's recursion.
pub(crate) const MAX_DEPTH: usize = 16;

/// The most keys and values (scalars, aliases, collections) a plan may hold. A real plan holds well
/// under a hundred; a 10,000-step plan about 30,000, which is still walked so that every step's
/// problem is counted. The bound keeps the walk's memory and time small for any 1 MiB file.
pub(crate) const MAX_NODES: usize = 50_000;

/// A position as (1-based line, 1-based column).
pub(crate) type Pos = (usize, usize);

/// One node of the document, addressed by its dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Where the key naming this node starts (for mapping values), else where the node starts.
    pub key: Pos,
    /// Where the node's value starts.
    pub start: Pos,
    /// Where the node's value ends (exclusive).
    pub end: Pos,
    /// Whether the node is a mapping.
    pub is_map: bool,
    /// The text of a scalar node.
    pub scalar: Option<String>,
}

/// Field paths of a document and where they are.
#[derive(Debug, Default, Clone)]
pub(crate) struct Positions {
    entries: HashMap<String, Entry>,
    /// The collection being read when the parser met a syntax error.
    broken: Option<String>,
    /// What the plan's shape forbids, found during the walk, in document order.
    structure: Vec<Structural>,
}

/// A problem with the document's shape: the field it is at, its line and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Structural {
    pub field: String,
    pub line: usize,
    pub rule: String,
}

enum Frame {
    Mapping {
        path: String,
        key: Option<(String, Pos)>,
        expecting_key: bool,
        /// The keys given so far and the lines of each, to find one given twice.
        seen: HashMap<String, Vec<usize>>,
    },
    Sequence {
        path: String,
        index: usize,
    },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Frame {
    fn path(&self) -> &String {
        match self {
            Frame::Mapping { path, .. } | Frame::Sequence { path, .. } => path,
        }
    }
}

/// A collection opened under a field path: the path, its key's position, its start, whether a mapping.
type OpenCollection = (String, Pos, Pos, bool);

/// The walk's state: the frames of the collections being read and what was recorded so far.
#[derive(Default)]
struct Walk {
    out: Positions,
    stack: Vec<Frame>,
    /// Open collections with a field path (`None`: one without, e.g. a mapping key), closed on the
    /// matching end.
    open: Vec<Option<OpenCollection>>,
    /// Documents started so far, and the line where the second one starts.
    documents: usize,
    second_document: usize,
    /// Keys and values seen so far.
    nodes: usize,
}

impl Walk {
    fn more_documents(&mut self, complete: bool) {
        let count = if complete {
            self.documents.to_string()
        } else {
            format!("at least {}", self.documents)
        };
        self.out.structure.push(Structural {
            field: "(document)".into(),
            line: self.second_document,
            rule: format!(
                "a plan is one YAML document; this file has {count} (the second starts here, after `---`): keep one"
            ),
        });
    }

    /// Open a collection; `false` when it is nested too deep (recorded, and the walk should stop).
    fn open_collection(&mut self, is_map: bool, start: Pos) -> bool {
        if self.stack.len() >= MAX_DEPTH {
            self.too_deep(start);
            return false;
        }
        // A collection used as a mapping key has no field path.
        let as_key = matches!(
            self.stack.last(),
            Some(Frame::Mapping {
                expecting_key: true,
                ..
            })
        );
        let here = if as_key {
            None
        } else {
            value_path(&self.stack, start)
        };
        let path = here
            .as_ref()
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| "?".into());
        if let Some((p, key)) = &here {
            // Until the collection closes (it may never, on a syntax error) it runs to the end.
            let end = (usize::MAX, usize::MAX);
            let entry = Entry {
                key: *key,
                start,
                end,
                is_map,
                scalar: None,
            };
            self.out.entries.insert(p.clone(), entry);
        }
        self.open.push(here.map(|(p, k)| (p, k, start, is_map)));
        self.stack.push(if is_map {
            Frame::Mapping {
                path,
                key: None,
                expecting_key: true,
                seen: HashMap::new(),
            }
        } else {
            Frame::Sequence { path, index: 0 }
        });
        true
    }

    /// Record nesting past [`MAX_DEPTH`].
    fn too_deep(&mut self, start: Pos) {
        let rule = format!(
            "nesting deeper than {MAX_DEPTH} levels (line {} is deeper): a plan is at most {MAX_DEPTH} levels deep",
            start.0
        );
        self.refuse(rule, start);
    }

    /// Record a document past [`MAX_NODES`].
    fn too_many(&mut self, start: Pos) {
        let rule = format!(
            "the plan holds more than {} keys and values (line {} is past that): a plan holds a few dozen",
            super::file::thousands(MAX_NODES as u64),
            start.0
        );
        self.refuse(rule, start);
    }

    /// Record why the walk stops, at the field holding `start` (its second level or deeper, e.g.
    /// `target.tags`: the full path of something this far in says nothing more).
    fn refuse(&mut self, rule: String, start: Pos) {
        let named = |p: &&String| !p.is_empty() && !p.starts_with('?');
        let holder = self
            .stack
            .iter()
            .map(Frame::path)
            .find(|p| named(p) && p.contains(['.', '[']))
            .or_else(|| self.stack.iter().map(Frame::path).find(named))
            .cloned()
            .unwrap_or_else(|| "(document)".into());
        let line = self
            .out
            .entries
            .get(&holder)
            .map(|e| e.key.0)
            .unwrap_or(start.0);
        self.out.structure.push(Structural {
            field: holder,
            line,
            rule,
        });
    }

    fn close_collection(&mut self, start: Pos, end: Pos) {
        self.stack.pop();
        if let Some(Some((path, key, start, is_map))) = self.open.pop() {
            self.out.entries.insert(
                path,
                Entry {
                    key,
                    start,
                    end,
                    is_map,
                    scalar: None,
                },
            );
        }
        // A collection that was a mapping key: the mapping now expects that key's value.
        if let Some(Frame::Mapping {
            key, expecting_key, ..
        }) = self.stack.last_mut()
            && *expecting_key
        {
            *key = Some(("?".to_string(), start));
            *expecting_key = false;
            return;
        }
        advance(&mut self.stack);
    }
}

impl Positions {
    /// Walk `text`'s events. A syntax error stops the walk; what was seen so far is kept.
    pub(crate) fn of(text: &str) -> Positions {
        let mut w = Walk::default();
        let mut events = Parser::new_from_str(text);
        for item in events.by_ref() {
            let (event, span) = match item {
                Ok(item) => item,
                // The parser's own bound on nesting (it can be met while looking ahead, before the
                // walk sees the levels): the same rule as [`MAX_DEPTH`].
                Err(e) if matches!(e.kind(), ErrorKind::RecursionLimitExceeded) => {
                    w.too_deep((e.marker().line(), e.marker().col() + 1));
                    break;
                }
                Err(_) => {
                    w.out.broken = w.stack.last().map(Frame::path).cloned();
                    break;
                }
            };
            let start = (span.start.line(), span.start.col() + 1);
            let end = (span.end.line(), span.end.col() + 1);
            if matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            ) {
                w.nodes += 1;
                if w.nodes > MAX_NODES {
                    w.too_many(start);
                    break;
                }
            }
            match event {
                Event::DocumentStart(..) if w.documents > 0 => {
                    w.documents += 1;
                    w.second_document = start.0;
                    break;
                }
                Event::DocumentStart(..) => w.documents += 1,
                Event::Scalar(value, ..) => leaf(
                    &mut w.stack,
                    &mut w.out,
                    value.into_owned(),
                    true,
                    start,
                    end,
                ),
                // An alias names no field; as a key it stands for `*`.
                Event::Alias(_) => {
                    leaf(&mut w.stack, &mut w.out, "*".to_string(), false, start, end)
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    if !w.open_collection(is_map, start) {
                        break;
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => w.close_collection(start, end),
                _ => {}
            }
        }
        if w.documents > 1 {
            // Only count the rest: their content is not the plan's. A syntax error ends the count.
            let mut complete = true;
            for item in events {
                match item {
                    Ok((Event::DocumentStart(..), _)) => w.documents += 1,
                    Ok(_) => {}
                    Err(_) => {
                        complete = false;
                        break;
                    }
                }
            }
            w.more_documents(complete);
        }
        w.out
    }

    /// What the plan's shape forbids (a key given twice, a second document, nesting too deep).
    pub(crate) fn structure(&self) -> &[Structural] {
        &self.structure
    }

    /// The collection being read when the parser met a syntax error (`` for the root).
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.as_deref().filter(|p| *p != "?")
    }

    /// The entry at `path`, if the document has it.
    pub(crate) fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The direct children of the mapping at `path`, in document order.
    pub(crate) fn children<'a>(&'a self, path: &'a str) -> Vec<(&'a str, &'a Entry)> {
        let mut out: Vec<(&str, &Entry)> = self
            .entries
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(path)
                    .and_then(|r| r.strip_prefix('.'))
                    .is_some_and(|r| !r.contains(['.', '[']))
            })
            .map(|(p, e)| (p.as_str(), e))
            .collect();
        out.sort_by_key(|(_, e)| e.key);
        out
    }

    /// The deepest mapping that contains `pos` (its start included).
    pub(crate) fn mapping_at(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.is_map && e.start <= pos && pos < e.end)
            .max_by_key(|(p, e)| (e.start, p.len()))
            .map(|(p, _)| p.as_str())
    }

    /// The line of `path`; a missing field points at its nearest present parent.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(e.key.0);
            }
            p = parent(p)?;
        }
    }

    /// The deepest field whose key is at `pos` or whose value contains `pos`.
    pub(crate) fn path_at(&self, pos: Pos) -> Option<&str> {
        if let Some((p, _)) = self
            .entries
            .iter()
            .filter(|(p, e)| e.key == pos && !p.is_empty())
            .max_by_key(|(p, _)| p.len())
        {
            return Some(p);
        }
        self.entries
            .iter()
            .filter(|(_, e)| e.start <= pos && pos < e.end.max((e.start.0, e.start.1 + 1)))
            .max_by_key(|(p, e)| (e.start, p.len()))
            .map(|(p, _)| p.as_str())
    }
}

/// The parent of a dotted path: `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `` → none.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// A scalar or an alias: a mapping key, or a leaf value recorded under its path (with its text when
/// `is_scalar`).
fn leaf(
    stack: &mut [Frame],
    out: &mut Positions,
    text: String,
    is_scalar: bool,
    start: Pos,
    end: Pos,
) {
    if let Some(Frame::Mapping {
        path,
        key,
        expecting_key,
        seen,
    }) = stack.last_mut()
        && *expecting_key
    {
        // An alias (`*`) or merge (`<<`) key names no field of its own.
        if is_scalar && text != "<<" {
            let lines = seen.entry(text.clone()).or_default();
            lines.push(start.0);
            if lines.len() > 1 {
                out.structure.push(given_again(join(path, &text), lines));
            }
        }
        *key = Some((text, start));
        *expecting_key = false;
        return;
    }
    if let Some((path, key)) = value_path(stack, start) {
        let scalar = is_scalar.then_some(text);
        out.entries.insert(
            path,
            Entry {
                key,
                start,
                end,
                is_map: false,
                scalar,
            },
        );
    }
    advance(stack);
}

/// A key given more than once in one mapping, at the last of `lines`.
fn given_again(field: String, lines: &[usize]) -> Structural {
    let times = match lines.len() {
        2 => "twice".to_string(),
        n => format!("{n} times"),
    };
    let (last, rest) = lines.split_last().expect("two lines at least");
    let rest: Vec<String> = rest.iter().map(usize::to_string).collect();
    Structural {
        field,
        line: *last,
        rule: format!(
            "is given {times} (lines {} and {last}): a field appears once in its mapping; keep one",
            rest.join(", ")
        ),
    }
}

fn value_path(stack: &[Frame], start: Pos) -> Option<(String, Pos)> {
    match stack.last() {
        None => Some((String::new(), start)),
        Some(Frame::Mapping {
            path,
            key: Some((k, kpos)),
            ..
        }) => Some((join(path, k), *kpos)),
        Some(Frame::Mapping { key: None, .. }) => None,
        Some(Frame::Sequence { path, index }) => Some((format!("{path}[{index}]"), start)),
    }
}

fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Mapping {
            key, expecting_key, ..
        }) => {
            *key = None;
            *expecting_key = true;
        }
        Some(Frame::Sequence { index, .. }) => *index += 1,
        None => {}
    }
}
