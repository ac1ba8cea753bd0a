//! Colour for rendered `.fm` diagnostics when the output is a terminal
//! (and `NO_COLOR` is unset): severities, locations and hints stand out.

use std::io::IsTerminal;

/// Whether to colour text written to stdout (`stdout == true`) or stderr.
pub fn enabled(stdout: bool) -> bool {
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    }
}

/// `text` with ANSI colours on diagnostic lines when `on`, else unchanged.
pub fn diagnostics(text: &str, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    const RED: &str = "\x1b[1;31m";
    const YELLOW: &str = "\x1b[1;33m";
    const BLUE: &str = "\x1b[1;34m";
    const CYAN: &str = "\x1b[36m";
    const RESET: &str = "\x1b[0m";
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let painted = if let Some(rest) = body.strip_prefix("error:") {
            format!("{RED}error:{RESET}\x1b[1m{rest}{RESET}")
        } else if let Some(rest) = body.strip_prefix("warning:") {
            format!("{YELLOW}warning:{RESET}\x1b[1m{rest}{RESET}")
        } else if body.trim_start().starts_with("-->") || body.trim_start().starts_with('|') {
            format!("{BLUE}{body}{RESET}")
        } else if body.trim_start().starts_with("= hint:") {
            format!("{CYAN}{body}{RESET}")
        } else {
            body.to_string()
        };
        out.push_str(&painted);
        out.push_str(newline);
    }
    out
}
