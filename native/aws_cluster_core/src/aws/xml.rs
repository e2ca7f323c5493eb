//! A strict reader for AWS Query-protocol responses: the whole body becomes a small tree,
//! or an error saying where it stopped being XML.
//!
//! Strict on purpose. A page that is cut off, has an unclosed or mismatched element, or
//! trailing garbage must never be taken for a complete answer: a partial page would make
//! live peers look gone (see `Listing`). Lenient XML readers skip tokenizer errors and stop
//! quietly at end of input, which is exactly how a truncated page gets accepted.

use std::borrow::Cow;
use xmlparser::{ElementEnd, Token, Tokenizer};

/// Deeper than any AWS answer (DescribeInstances nests about 8 levels). The tree's
/// drop and `find` recurse, so a hostile endpoint must not choose the depth.
pub const MAX_DEPTH: usize = 64;

/// One element: its local name (namespace prefix dropped), text and child elements.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Node<'a> {
    pub name: &'a str,
    text: String,
    pub children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child element called `name`.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Node<'a>> + 's {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The `<item>`/`<member>` children of the child `list`, the Query protocol's lists.
    pub fn list<'s>(&'s self, list: &str, entry: &'s str) -> impl Iterator<Item = &'s Node<'a>> {
        self.child(list).into_iter().flat_map(move |l| l.all(entry))
    }

    /// The element's text, unescaped and trimmed.
    pub fn text(&self) -> &str {
        self.text.trim()
    }

    /// The text of the child `name`, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.child(name).map(Node::text).filter(|t| !t.is_empty())
    }

    /// The first element called `name` anywhere below this one, depth first.
    pub fn find(&self, name: &str) -> Option<&Node<'a>> {
        self.children.iter().find_map(|c| {
            if c.name == name {
                Some(c)
            } else {
                c.find(name)
            }
        })
    }
}

/// Parses a whole document. Every element must be closed, in order; nothing but
/// whitespace, comments or processing instructions may follow the root.
pub fn parse(doc: &str) -> Result<Node<'_>, String> {
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    for token in Tokenizer::from(doc) {
        let token = token.map_err(|e| format!("not well-formed XML: {e}"))?;
        match token {
            Token::ElementStart { local, .. } => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                stack.push(Node {
                    name: local.as_str(),
                    ..Node::default()
                });
            }
            Token::ElementEnd { end, .. } => {
                let closed = match end {
                    ElementEnd::Open => continue,
                    ElementEnd::Empty => stack.pop(),
                    ElementEnd::Close(_, local) => {
                        let node = stack.pop();
                        match &node {
                            Some(n) if n.name == local.as_str() => node,
                            _ => return Err(format!("unexpected </{}>", local.as_str())),
                        }
                    }
                };
                let node = closed.ok_or("an end tag without a start tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Token::Text { text } => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&unescape(text.as_str())?);
                } else if !text.as_str().trim().is_empty() {
                    return Err("text outside the root element".into());
                }
            }
            Token::Cdata { text, .. } => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(text.as_str());
                }
            }
            _ => {}
        }
    }
    match (root, stack.last()) {
        (Some(root), None) => Ok(root),
        (_, Some(open)) => Err(format!("the document ends inside <{}>", open.name)),
        (None, None) => Err("no root element".into()),
    }
}

fn unescape(s: &str) -> Result<Cow<'_, str>, String> {
    if !s.contains('&') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or("an unterminated character reference")?;
        let entity = &rest[at + 1..at + end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("an unknown character reference &{entity};"))?
            }
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_lists_text_and_entities() {
        let doc = "<?xml version=\"1.0\"?>\n<R xmlns=\"x\"><list><item><k>a &amp; b</k></item>\
                   <item><k>&#x41;&#66;</k><e/></item></list><t> x </t></R>\n";
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "R");
        let keys: Vec<&str> = root
            .list("list", "item")
            .filter_map(|i| i.get("k"))
            .collect();
        assert_eq!(keys, ["a & b", "AB"]);
        assert_eq!(root.get("t"), Some("x"));
        assert!(root.find("e").is_some());
        assert_eq!(root.get("missing"), None);
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
        assert!(parse(&deep).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn every_cut_of_a_document_is_an_error() {
        let doc = "<R><list><item><k>v</k></item><item><k>w</k></item></list><id>1</id></R>";
        assert!(parse(doc).is_ok());
        for cut in 0..doc.len() {
            assert!(parse(&doc[..cut]).is_err(), "accepted a cut at {cut}");
        }
    }

    #[test]
    fn mismatched_trailing_and_bad_entities_are_errors() {
        for bad in [
            "<R><a></b></R>",
            "<R></R><S/>",
            "<R></R>junk",
            "<R>&bogus;</R>",
            "<R>&amp</R>",
            "junk<R/>",
            "",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
