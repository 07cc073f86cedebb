//! JSON as docker prints it: `docker inspect`'s array of the daemon's own
//! objects, re-indented with four spaces and the keys in the daemon's
//! order (Go's `json.Indent`).

/// The raw documents as one indented JSON array, as `docker inspect`
/// prints it (`[]` when there are none), with a final newline.
pub fn indented_array(docs: &[Vec<u8>]) -> String {
    let mut joined = Vec::new();
    joined.push(b'[');
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(doc.trim_ascii());
    }
    joined.push(b']');
    let mut out = indent(&joined, "    ");
    out.push('\n');
    out
}

/// Go's `json.Indent(dst, src, "", indent)` for valid JSON.
pub fn indent(src: &[u8], indent: &str) -> String {
    let text = String::from_utf8_lossy(src);
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut i = 0;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                out.push(c);
                i += 1;
                while i < chars.len() {
                    out.push(chars[i]);
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        out.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if chars[i] == '"' {
                        break;
                    }
                    i += 1;
                }
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_ascii_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&close) {
                    out.push(close);
                    i = j;
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_as_go_does_keeping_key_order() {
        let docs = vec![br#"{"Z":1,"A":{"b":[1,2],"e":{},"f":[]},"s":"a,{b}:\"c"}"#.to_vec()];
        assert_eq!(
            indented_array(&docs),
            "[\n    {\n        \"Z\": 1,\n        \"A\": {\n            \"b\": [\n                1,\n                2\n            ],\n            \"e\": {},\n            \"f\": []\n        },\n        \"s\": \"a,{b}:\\\"c\"\n    }\n]\n"
        );
        assert_eq!(indented_array(&[]), "[]\n");
    }
}
