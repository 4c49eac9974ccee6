//! Test-only: a small PowerShell lexer, enough to check the structure of a generated script
//! where no PowerShell is installed: brackets balanced outside strings and comments, every
//! string, here-string and block comment closed. It knows `'...'` (with `''`), `"..."` (with
//! `` ` `` escapes, `""` and nested `$( ... )`), here-strings `@' '@` and `@" "@`, `#` line
//! comments and `<# #>` block comments.

/// What [`scan`] found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// The script with comments and string contents blanked (line ends kept), so code can be
    /// searched without matching text inside strings.
    pub code: String,
    /// The raw bodies of the expandable strings (`"..."` and `@"..."@`).
    pub expandable: Vec<String>,
}

enum Frame {
    /// Script code; `sub` for the code of a `$( ... )` inside an expandable string, which its
    /// first unmatched `)` ends. `open` holds the open brackets and their lines.
    Code { sub: bool, open: Vec<(char, usize)> },
    /// `"..."` opened at `line`, body from `start`.
    Dq { start: usize, line: usize },
    /// `@"..."@` opened at `line`, body from `start`.
    HereDq { start: usize, line: usize },
}

impl Frame {
    /// The code of a `$( ... )` just opened inside an expandable string.
    fn subexpression() -> Frame {
        Frame::Code {
            sub: true,
            open: Vec::new(),
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    scan: Scan,
}

impl Lexer {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    /// Consumes one character, copied to [`Scan::code`] if `keep`, else blanked.
    fn take(&mut self, keep: bool) {
        let Some(c) = self.peek(0) else { return };
        if c == '\n' {
            self.line += 1;
            self.scan.code.push('\n');
        } else {
            self.scan.code.push(if keep { c } else { ' ' });
        }
        self.i += 1;
    }

    fn take_n(&mut self, n: usize, keep: bool) {
        for _ in 0..n {
            self.take(keep);
        }
    }

    fn at_line_start(&self) -> bool {
        self.i == 0 || self.chars[self.i - 1] == '\n'
    }

    /// Whether a `#` here starts a comment (it does at the start of a token).
    fn at_token_start(&self) -> bool {
        self.i == 0 || {
            let p = self.chars[self.i - 1];
            p.is_whitespace() || ";(){}|&,=".contains(p)
        }
    }

    fn body(&self, start: usize) -> String {
        self.chars[start..self.i].iter().collect()
    }
}

/// Lexes `src`; the error names the line of the problem.
pub(super) fn scan(src: &str) -> Result<Scan, String> {
    let mut lx = Lexer {
        chars: src.chars().collect(),
        i: 0,
        line: 1,
        scan: Scan::default(),
    };
    let mut stack = vec![Frame::Code {
        sub: false,
        open: Vec::new(),
    }];
    while let Some(c) = lx.peek(0) {
        let mut push = None;
        let mut pop = false;
        match stack.last_mut() {
            None => return Err("lexer stack underflow".to_owned()),
            Some(Frame::Code { sub, open }) => {
                if c == '<' && lx.peek(1) == Some('#') {
                    let line = lx.line;
                    lx.take_n(2, false);
                    loop {
                        match (lx.peek(0), lx.peek(1)) {
                            (Some('#'), Some('>')) => {
                                lx.take_n(2, false);
                                break;
                            }
                            (Some(_), _) => lx.take(false),
                            (None, _) => {
                                return Err(format!("line {line}: unterminated <# comment"))
                            }
                        }
                    }
                } else if c == '#' && lx.at_token_start() {
                    while lx.peek(0).is_some_and(|c| c != '\n') {
                        lx.take(false);
                    }
                } else if c == '@' && matches!(lx.peek(1), Some('\'' | '"')) {
                    let line = lx.line;
                    let quote = lx.peek(1);
                    lx.take_n(2, true);
                    while let Some(h) = lx.peek(0) {
                        match h {
                            '\n' => break,
                            ' ' | '\t' | '\r' => lx.take(true),
                            _ => {
                                return Err(format!("line {line}: text after a here-string header"))
                            }
                        }
                    }
                    if lx.peek(0).is_none() {
                        return Err(format!("line {line}: unterminated here-string"));
                    }
                    lx.take(true);
                    if quote == Some('"') {
                        push = Some(Frame::HereDq { start: lx.i, line });
                    } else {
                        loop {
                            if lx.at_line_start()
                                && lx.peek(0) == Some('\'')
                                && lx.peek(1) == Some('@')
                            {
                                lx.take_n(2, true);
                                break;
                            }
                            if lx.peek(0).is_none() {
                                return Err(format!("line {line}: unterminated here-string"));
                            }
                            lx.take(false);
                        }
                    }
                } else if c == '\'' {
                    let line = lx.line;
                    lx.take(true);
                    loop {
                        match (lx.peek(0), lx.peek(1)) {
                            (Some('\''), Some('\'')) => lx.take_n(2, false),
                            (Some('\''), _) => {
                                lx.take(true);
                                break;
                            }
                            (Some(_), _) => lx.take(false),
                            (None, _) => {
                                return Err(format!("line {line}: unterminated '...' string"))
                            }
                        }
                    }
                } else if c == '"' {
                    let line = lx.line;
                    lx.take(true);
                    push = Some(Frame::Dq { start: lx.i, line });
                } else if c == '`' {
                    lx.take_n(2, true);
                } else if "({[".contains(c) {
                    open.push((c, lx.line));
                    lx.take(true);
                } else if ")}]".contains(c) {
                    match open.pop() {
                        Some((o, _)) if closer(o) == c => lx.take(true),
                        Some((o, l)) => {
                            return Err(format!("line {}: {c} closes the {o} of line {l}", lx.line))
                        }
                        None if *sub && c == ')' => {
                            lx.take(true);
                            pop = true;
                        }
                        None => return Err(format!("line {}: unmatched {c}", lx.line)),
                    }
                } else {
                    lx.take(true);
                }
            }
            Some(Frame::Dq { start, .. }) => match (c, lx.peek(1)) {
                ('`', _) => lx.take_n(2, false),
                ('"', Some('"')) => lx.take_n(2, false),
                ('"', _) => {
                    let body = lx.body(*start);
                    lx.scan.expandable.push(body);
                    lx.take(true);
                    pop = true;
                }
                ('$', Some('(')) => {
                    lx.take_n(2, true);
                    push = Some(Frame::subexpression());
                }
                _ => lx.take(false),
            },
            Some(Frame::HereDq { start, .. }) => match (c, lx.peek(1)) {
                ('"', Some('@')) if lx.at_line_start() => {
                    let body = lx.body(*start);
                    lx.scan.expandable.push(body);
                    lx.take_n(2, true);
                    pop = true;
                }
                ('`', _) => lx.take_n(2, false),
                ('$', Some('(')) => {
                    lx.take_n(2, true);
                    push = Some(Frame::subexpression());
                }
                _ => lx.take(false),
            },
        }
        if pop {
            stack.pop();
        }
        if let Some(frame) = push {
            stack.push(frame);
        }
    }

    match stack.pop() {
        Some(Frame::Code { sub: false, open }) if stack.is_empty() => match open.last() {
            None => Ok(lx.scan),
            Some((o, l)) => Err(format!("line {l}: {o} is never closed")),
        },
        Some(Frame::Dq { line, .. }) => Err(format!("line {line}: unterminated \"...\" string")),
        Some(Frame::HereDq { line, .. }) => {
            Err(format!("line {line}: unterminated @\"...\"@ string"))
        }
        _ => Err("end of script inside $( ... )".to_owned()),
    }
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '{' => '}',
        _ => ']',
    }
}

/// `$name` references in `text`: (byte offset after the name, the name).
fn variables(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            if end > start {
                out.push((end, &text[start..end]));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// `$name:` where `name` is no scope or drive the scripts mean: in PowerShell that is a
/// scope- or drive-qualified variable, a classic slip in `"$Name: text"`.
pub(super) fn bad_variable_colons(scan: &Scan) -> Vec<String> {
    const QUALIFIERS: &[&str] = &["env", "script", "global", "local", "private", "using"];
    std::iter::once(scan.code.as_str())
        .chain(scan.expandable.iter().map(String::as_str))
        .flat_map(|text| {
            variables(text)
                .into_iter()
                .filter(|&(end, name)| {
                    text.as_bytes().get(end) == Some(&b':')
                        && !QUALIFIERS.iter().any(|q| q.eq_ignore_ascii_case(name))
                })
                .map(|(_, name)| format!("${name}:"))
        })
        .collect()
}

/// Assignments to (and `foreach` loops over) PowerShell's automatic variables, such as
/// `$input`, `$pid` or `$host`, which silently misbehave.
pub(super) fn automatic_variable_writes(scan: &Scan) -> Vec<String> {
    const AUTOMATIC: &[&str] = &[
        "_",
        "args",
        "error",
        "false",
        "foreach",
        "home",
        "host",
        "input",
        "lastexitcode",
        "matches",
        "myinvocation",
        "null",
        "pid",
        "psboundparameters",
        "pscmdlet",
        "psitem",
        "psscriptroot",
        "pwd",
        "shellid",
        "this",
        "true",
    ];
    let code = &scan.code;
    variables(code)
        .into_iter()
        .filter(|&(_, name)| AUTOMATIC.iter().any(|a| a.eq_ignore_ascii_case(name)))
        .filter(|&(end, name)| {
            let after = code[end..].trim_start_matches([' ', '\t']);
            let assigned = match after.as_bytes() {
                [b'=', ..] => true,
                [op, b'=', ..] => b"+-*/%".contains(op),
                _ => false,
            };
            let before = code[..end - name.len() - 1].trim_end();
            let loop_var = before.ends_with('(')
                && before[..before.len() - 1]
                    .trim_end()
                    .to_ascii_lowercase()
                    .ends_with("foreach")
                && after.to_ascii_lowercase().starts_with("in ");
            assigned || loop_var
        })
        .map(|(_, name)| format!("${name}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_balanced_code_with_brackets_in_strings_and_comments() {
        for src in [
            "function f { param([string]$a) \"x{ $($a.Length) }\" }\n",
            "# {{{ ((( \n$a = 1\n",
            "<# } ) ]\n  more #>\n$b = @{ A = 1 }\n",
            "$s = @'\n} ) \" '\n'@\n",
            "$s = @\"\n$( \"(\" ) { \n\"@\n",
            "$t = 'it''s {'\n",
            "$u = \"say \"\"hi{\"\" `\" ) \"\n",
            "$v = \"$( \"$( ')' )\" )\"\n",
            "Write-Host a#b\n",
            "$w = `\n  1\n",
        ] {
            let scan = scan(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
            assert_eq!(scan.code.lines().count(), src.lines().count(), "{src:?}");
        }
    }

    #[test]
    fn refuses_broken_structure() {
        for (src, want) in [
            ("{ (\n", "line 1: ( is never closed"),
            ("$a = 1 )\n", "line 1: unmatched )"),
            ("{\n]\n", "line 2: ] closes the { of line 1"),
            ("$a = \"abc\n", "line 1: unterminated \"...\" string"),
            ("$a = 'abc\n", "line 1: unterminated '...' string"),
            ("<# open\n", "line 1: unterminated <# comment"),
            ("$a = @'x\n'@\n", "line 1: text after a here-string header"),
            ("$a = @'\nx\n", "line 1: unterminated here-string"),
            ("$a = @\"\nx\n", "line 1: unterminated @\"...\"@ string"),
            ("\"$( 1", "end of script inside $( ... )"),
            ("\"$( \"1", "line 1: unterminated \"...\" string"),
        ] {
            assert_eq!(scan(src).map(|_| ()), Err(want.to_owned()), "{src:?}");
        }
    }

    #[test]
    fn blanks_comments_and_strings_and_keeps_expandable_bodies() {
        let scan = scan("$a = 'x' # note\n$b = \"v $a\"\n").expect("scans");
        assert_eq!(scan.code, "$a = ' '       \n$b = \"    \"\n");
        assert_eq!(scan.expandable, ["v $a"]);
    }

    #[test]
    fn finds_variable_colon_slips() {
        let s =
            scan("Write-Host \"$Name: x $env:TEMP $script:N\"\n$y = $Other:x\n").expect("scans");
        assert_eq!(bad_variable_colons(&s), ["$Other:", "$Name:"]);
        let s = scan("Write-Host '$Name: x'\n").expect("scans");
        assert!(
            bad_variable_colons(&s).is_empty(),
            "single quotes do not expand"
        );
    }

    #[test]
    fn finds_writes_to_automatic_variables() {
        let s = scan("$input = 1\n$PID += 2\nforeach ($host in $list) { }\n$x = $input\nif ($pid -eq 1) {}\n")
            .expect("scans");
        assert_eq!(automatic_variable_writes(&s), ["$input", "$PID", "$host"]);
    }
}
